// Large-M float GEMM shared by the float-activation linear kernels (fp8, Q8_0, Q4_0,
// int8 and 2/4-bit weights): the weights of 128 output columns x 256 inputs are decoded
// to float32 (scale applied) into a panel laid out [16-column strip][k][16], and a
// 6 x 16 outer-product microkernel (12 accumulators, x broadcast from memory) runs every
// row group over the panel. Each weight is decoded once per call; the panel (128 KB)
// stays in L2, the x rows of a group (6 KB) in L1. At M = 128 this runs within ~10% of
// the FMA peak, like a float32 BLAS, with no float copy of the weight.
//
// A decoder (Dec) gives dequantized weights: v8(n, k) the 8 weights n, k..k+7 (k % 8 == 0,
// k + 8 <= K), v1(n, k) one weight. Only for files compiled with -mavx2 -mfma -mf16c;
// everything here has internal linkage (see vec_avx2.h).
#pragma once
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <new>

namespace lowbit::cpu::avx2 {
namespace {

#define LOWBIT_PANEL_UNROLL _Pragma("GCC unroll 16")

// Below this many rows of x the per-row kernels of each format are faster.
constexpr int64_t kPackedMinM = 32;
constexpr int64_t kPanelCols = 128, kPanelK = 256, kStrip = 16, kMR = 6;

inline void transpose8(__m256 r[8]) {
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xee);
  const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xee);
  const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xee);
  const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xee);
  r[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
  r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
  r[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
  r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
  r[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
  r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
  r[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
  r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

// Decodes columns [c0, c0 + ncols) x k in [k0, k0 + kc) into panel[strip][k][16];
// columns past ncols are zero.
template <class Dec>
void pack_panel(const Dec& dec, int64_t c0, int64_t ncols, int64_t k0, int64_t kc, float* panel) {
  const int64_t nstrips = (ncols + kStrip - 1) / kStrip;
  const int64_t kc8 = kc / 8 * 8;
  for (int64_t st = 0; st < nstrips; ++st) {
    float* sp = panel + st * kc * kStrip;
    for (int half = 0; half < 2; ++half) {
      const int64_t cb = st * kStrip + half * 8;  // first column of these 8, panel-relative
      const int64_t valid = std::max<int64_t>(0, std::min<int64_t>(8, ncols - cb));
      for (int64_t k = 0; k < kc8; k += 8) {
        __m256 r[8];
        for (int i = 0; i < 8; ++i) r[i] = i < valid ? dec.v8(c0 + cb + i, k0 + k) : _mm256_setzero_ps();
        transpose8(r);
        for (int i = 0; i < 8; ++i) _mm256_storeu_ps(sp + (k + i) * kStrip + half * 8, r[i]);
      }
      for (int64_t k = kc8; k < kc; ++k)
        for (int i = 0; i < 8; ++i) sp[k * kStrip + half * 8 + i] = i < valid ? dec.v1(c0 + cb + i, k0 + k) : 0.f;
    }
  }
}

// y[MR rows, ncols <= 16] (+)= x[MR, kc] @ strip[kc, 16]; `first` starts from the
// bias (or 0) instead of y. noinline: inlined into a large caller (linear_int8_f32act),
// GCC spilled loop pointers to the stack inside the k loop, and the int8 panels ran 14%
// slower than the 4-bit ones on the same microkernel (one thread, M = 512, 2026-11-23).
template <int MR>
__attribute__((noinline)) void micro_6x16(const float* x, int64_t ldx, const float* strip, int64_t kc, float* y, int64_t ldy, int64_t ncols,
                bool first, const float* bias) {
  __m256 acc[MR][2];
  alignas(32) float tmp[kStrip];
  LOWBIT_PANEL_UNROLL
  for (int r = 0; r < MR; ++r) {
    const float* src = y + r * ldy;
    if (first) {
      for (int i = 0; i < kStrip; ++i) tmp[i] = (bias && i < ncols) ? bias[i] : 0.f;
      src = tmp;
    } else if (ncols < kStrip) {
      for (int i = 0; i < kStrip; ++i) tmp[i] = i < ncols ? y[r * ldy + i] : 0.f;
      src = tmp;
    }
    acc[r][0] = _mm256_loadu_ps(src);
    acc[r][1] = _mm256_loadu_ps(src + 8);
  }
  for (int64_t k = 0; k < kc; ++k) {
    const __m256 w0 = _mm256_load_ps(strip + k * kStrip), w1 = _mm256_load_ps(strip + k * kStrip + 8);
    LOWBIT_PANEL_UNROLL
    for (int r = 0; r < MR; ++r) {
      const __m256 xb = _mm256_broadcast_ss(x + r * ldx + k);
      acc[r][0] = _mm256_fmadd_ps(w0, xb, acc[r][0]);
      acc[r][1] = _mm256_fmadd_ps(w1, xb, acc[r][1]);
    }
  }
  LOWBIT_PANEL_UNROLL
  for (int r = 0; r < MR; ++r) {
    if (ncols == kStrip) {
      _mm256_storeu_ps(y + r * ldy, acc[r][0]);
      _mm256_storeu_ps(y + r * ldy + 8, acc[r][1]);
    } else {
      _mm256_store_ps(tmp, acc[r][0]);
      _mm256_store_ps(tmp + 8, acc[r][1]);
      for (int64_t i = 0; i < ncols; ++i) y[r * ldy + i] = tmp[i];
    }
  }
}

template <class Dec>
void gemm_packed(const Dec& dec, const float* x, const float* bias, float* y, int64_t M, int64_t K, int64_t N,
                 int64_t n0, int64_t n1) {
  float* panel = static_cast<float*>(_mm_malloc(sizeof(float) * kPanelCols * kPanelK, 64));
  if (panel == nullptr) throw std::bad_alloc();
  for (int64_t c0 = n0; c0 < n1; c0 += kPanelCols) {
    const int64_t ncols = std::min(kPanelCols, n1 - c0);
    const int64_t nstrips = (ncols + kStrip - 1) / kStrip;
    for (int64_t k0 = 0; k0 < K; k0 += kPanelK) {
      const int64_t kc = std::min(kPanelK, K - k0);
      pack_panel(dec, c0, ncols, k0, kc, panel);
      for (int64_t r0 = 0; r0 < M; r0 += kMR) {
        const int64_t mr = std::min(kMR, M - r0);
        for (int64_t st = 0; st < nstrips; ++st) {
          const int64_t cs = c0 + st * kStrip, nc = std::min(kStrip, n1 - cs);
          const float* xs = x + r0 * K + k0;
          const float* sp = panel + st * kc * kStrip;
          float* ys = y + r0 * N + cs;
          const float* bs = bias ? bias + cs : nullptr;
          const bool first = k0 == 0;
          switch (mr) {
            case 1: micro_6x16<1>(xs, K, sp, kc, ys, N, nc, first, bs); break;
            case 2: micro_6x16<2>(xs, K, sp, kc, ys, N, nc, first, bs); break;
            case 3: micro_6x16<3>(xs, K, sp, kc, ys, N, nc, first, bs); break;
            case 4: micro_6x16<4>(xs, K, sp, kc, ys, N, nc, first, bs); break;
            case 5: micro_6x16<5>(xs, K, sp, kc, ys, N, nc, first, bs); break;
            default: micro_6x16<6>(xs, K, sp, kc, ys, N, nc, first, bs); break;
          }
        }
      }
    }
  }
  _mm_free(panel);
}

}  // namespace
}  // namespace lowbit::cpu::avx2
