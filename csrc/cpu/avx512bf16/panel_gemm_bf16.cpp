// The bfloat16 microkernel of the large-M path for bfloat16 activations
// (cpu/panel_gemm.h): vdpbf16ps, 6 rows x 32 columns per call, 12 zmm accumulators.
// Compiled with -mavx512bf16 on top of the AVX-512 flags; run only when the CPU has
// AVX512_BF16 (cpu_has_avx512_bf16).
//
// vdpbf16ps adds the two products of a pair of bfloat16 values to a float32 lane;
// each product of two bfloat16 values is exact in float32, so the sum is a float32
// sum as in the float32 kernels. It flushes subnormal inputs and outputs to zero.
#include <immintrin.h>

#include <algorithm>

#include "cpu/panel_gemm.h"

namespace lowbit::cpu::avx512bf16 {
namespace {

constexpr int64_t kMR = 6;

// Masks of the valid columns of the two 16-column halves of a 32-column strip.
inline __mmask16 half_mask(int64_t ncols, int half) {
  const int64_t n = std::clamp<int64_t>(ncols - 16 * half, 0, 16);
  return static_cast<__mmask16>((1u << n) - 1u);
}

template <int MR>
void micro(const bf16_t* x, int64_t ldx, const uint32_t* strip, int64_t kpairs, float* y, int64_t ldy,
           int64_t ncols, bool first, const float* bias, const float* col_scale) {
  const __mmask16 m0 = half_mask(ncols, 0), m1 = half_mask(ncols, 1);
  __m512 acc[MR][2];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) {
    if (first && col_scale) {  // the bias comes after the scale
      acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    } else if (first) {
      acc[r][0] = bias ? _mm512_maskz_loadu_ps(m0, bias) : _mm512_setzero_ps();
      acc[r][1] = bias ? _mm512_maskz_loadu_ps(m1, bias + 16) : _mm512_setzero_ps();
    } else {
      acc[r][0] = _mm512_maskz_loadu_ps(m0, y + r * ldy);
      acc[r][1] = _mm512_maskz_loadu_ps(m1, y + r * ldy + 16);
    }
  }
  const uint32_t* xr[MR];
  for (int r = 0; r < MR; ++r) xr[r] = reinterpret_cast<const uint32_t*>(x + r * ldx);
  for (int64_t p = 0; p < kpairs; ++p) {
    const __m512bh w0 = (__m512bh)_mm512_load_si512(strip + p * kPanelStripBf16);
    const __m512bh w1 = (__m512bh)_mm512_load_si512(strip + p * kPanelStripBf16 + 16);
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      // x[r, 2p] and x[r, 2p + 1] as one 32-bit pair in every lane
      const __m512bh xb = (__m512bh)_mm512_set1_epi32(static_cast<int>(xr[r][p]));
      acc[r][0] = _mm512_dpbf16_ps(acc[r][0], xb, w0);
      acc[r][1] = _mm512_dpbf16_ps(acc[r][1], xb, w1);
    }
  }
  if (col_scale) {
    const __m512 s0 = _mm512_maskz_loadu_ps(m0, col_scale), s1 = _mm512_maskz_loadu_ps(m1, col_scale + 16);
    const __m512 b0 = bias ? _mm512_maskz_loadu_ps(m0, bias) : _mm512_setzero_ps();
    const __m512 b1 = bias ? _mm512_maskz_loadu_ps(m1, bias + 16) : _mm512_setzero_ps();
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      // sum * scale + bias in two roundings, as the float32 kernels (no fused multiply-add)
      acc[r][0] = _mm512_add_ps(_mm512_mul_ps(acc[r][0], s0), b0);
      acc[r][1] = _mm512_add_ps(_mm512_mul_ps(acc[r][1], s1), b1);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) {
    _mm512_mask_storeu_ps(y + r * ldy, m0, acc[r][0]);
    _mm512_mask_storeu_ps(y + r * ldy + 16, m1, acc[r][1]);
  }
}

}  // namespace

void panel_gemm(const uint32_t* panel, int64_t ncols, int64_t kc, const bf16_t* x, int64_t ldx, int64_t M, float* y,
                int64_t ldy, bool first, const float* bias, const float* col_scale) {
  const int64_t kpairs = kc / 2;
  const int64_t nstrips = (ncols + kPanelStripBf16 - 1) / kPanelStripBf16;
  for (int64_t r0 = 0; r0 < M; r0 += kMR) {
    const int64_t mr = std::min(kMR, M - r0);
    for (int64_t st = 0; st < nstrips; ++st) {
      const int64_t c = st * kPanelStripBf16, nc = std::min(kPanelStripBf16, ncols - c);
      const uint32_t* sp = panel + st * kpairs * kPanelStripBf16;
      const bf16_t* xs = x + r0 * ldx;
      float* ys = y + r0 * ldy + c;
      const float* bs = bias ? bias + c : nullptr;
      const float* cs = col_scale ? col_scale + c : nullptr;
      switch (mr) {
        case 1: micro<1>(xs, ldx, sp, kpairs, ys, ldy, nc, first, bs, cs); break;
        case 2: micro<2>(xs, ldx, sp, kpairs, ys, ldy, nc, first, bs, cs); break;
        case 3: micro<3>(xs, ldx, sp, kpairs, ys, ldy, nc, first, bs, cs); break;
        case 4: micro<4>(xs, ldx, sp, kpairs, ys, ldy, nc, first, bs, cs); break;
        case 5: micro<5>(xs, ldx, sp, kpairs, ys, ldy, nc, first, bs, cs); break;
        default: micro<6>(xs, ldx, sp, kpairs, ys, ldy, nc, first, bs, cs); break;
      }
    }
  }
}

}  // namespace lowbit::cpu::avx512bf16
