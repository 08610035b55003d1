// AVX2/FMA int8-weight linear kernels (see cpu/gemm_int8.h for the math).
//
// float activations (W8A16), canonical [N, K] layout throughout:
//   M = 1:  gemv_f32act, 4 weight rows x 2 K steps of 8 in flight (vpmovsxbd, vcvtdq2ps, FMA),
//           software prefetch of the rows 2 tiles ahead into L2; memory-bound.
//   M >= 32: weights decoded into float panels + 6x16 FMA microkernel (panel_gemm_avx2.h).
//   M > 1:  "dot-product" tiles of 4 rows of x x 2 weight rows, 8 vector accumulators along
//           K reduced once at the end; weights widened once per tile and reused for 4 rows.
// int8 activations (W8A8), sign trick maddubs(|w|, sign(x, w)) + madd(ones):
//   M = 1:        gemv_int8act on the canonical rows.
//   1 < M < 24:   tile_int8act, 4 x 2 dot-product tiles on the canonical rows.
//   M >= 24:      panel_kernel, a register-blocked GEMM microkernel (4 rows of x x 16
//                 channels, int32 accumulators per channel, 4-byte broadcasts of x) on a
//                 panel of 16 channels packed per call into an L2-resident buffer with |w|
//                 precomputed; the packing (one pass over the weights) is amortised over M.
// The drivers walk [n0, n1) in blocks that stay in L2 while all rows of x pass over them.
#include <immintrin.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <memory>
#include <new>

#include "cpu/avx2/panel_gemm_avx2.h"
#include "cpu/avx2/panel_gemm_bf16.h"
#include "cpu/avx2/vec_avx2.h"
#include "cpu/gemm_int8.h"
#include "cpu/no_contract.h"
#include "cpu/panel_gemm.h"

namespace lowbit::cpu::avx2 {
namespace {

inline __m256 load_w8_f32(const int8_t* p) {
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
}

// ---- float activations ------------------------------------------------------

// out[i][j] = sum_k w[j * K + k] * x[i * ldx + k], for MR rows of x and NR weight rows.
template <int MR, int NR>
inline void tile_f32act(const float* x, int64_t ldx, const int8_t* w, int64_t K, float (*out)[4]) {
  __m256 acc[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) acc[i][j] = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 8 <= K; k += 8) {
    __m256 wv[NR];
    for (int j = 0; j < NR; ++j) wv[j] = load_w8_f32(w + j * K + k);
    for (int i = 0; i < MR; ++i) {
      const __m256 xv = _mm256_loadu_ps(x + i * ldx + k);
      for (int j = 0; j < NR; ++j) acc[i][j] = _mm256_fmadd_ps(wv[j], xv, acc[i][j]);
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) {
      float s = hsum8(acc[i][j]);
      for (int64_t t = k; t < K; ++t) s += static_cast<float>(w[j * K + t]) * x[i * ldx + t];
      out[i][j] = s;
    }
}

// Software prefetch in the M = 1 kernels: the rows of the tile after next (2 * NR rows
// ahead) into L2 (prefetcht1), one line per 64 bytes read, so several rows stream from
// memory at once. 4096 x 4096: 0.63-0.68 ms, against ~0.80 ms prefetching 4 KB ahead and
// 0.65 ms without prefetch.

// One row of x, NR weight rows, two K steps in flight (2 * NR independent FMA chains).
template <int NR>
inline void gemv_f32act(const float* x, const int8_t* w, int64_t K, float* out) {
  __m256 a0[NR], a1[NR];
  for (int j = 0; j < NR; ++j) a0[j] = a1[j] = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 16 <= K; k += 16) {
    const __m256 x0 = _mm256_loadu_ps(x + k), x1 = _mm256_loadu_ps(x + k + 8);
    if ((k & 63) == 0)  // one prefetch per cache line read, 2 * NR rows ahead
      for (int j = 0; j < NR; ++j) _mm_prefetch(reinterpret_cast<const char*>(w + (j + 2 * NR) * K + k), _MM_HINT_T1);
    for (int j = 0; j < NR; ++j) {
      a0[j] = _mm256_fmadd_ps(load_w8_f32(w + j * K + k), x0, a0[j]);
      a1[j] = _mm256_fmadd_ps(load_w8_f32(w + j * K + k + 8), x1, a1[j]);
    }
  }
  if (k + 8 <= K) {
    const __m256 x0 = _mm256_loadu_ps(x + k);
    for (int j = 0; j < NR; ++j) a0[j] = _mm256_fmadd_ps(load_w8_f32(w + j * K + k), x0, a0[j]);
    k += 8;
  }
  for (int j = 0; j < NR; ++j) {
    float s = hsum8(_mm256_add_ps(a0[j], a1[j]));
    for (int64_t t = k; t < K; ++t) s += static_cast<float>(w[j * K + t]) * x[t];
    out[j] = s;
  }
}

// ---- int8 activations -------------------------------------------------------
// int8 x int8 with the sign trick: maddubs(|w|, sign(x, w)) multiplies the unsigned |w|
// (0..128) by x carrying w's sign (|x| <= 127, so negation is safe); a pair of such
// products is at most 2 * 128 * 127 = 32512 and never saturates int16. madd with ones
// widens the pairs to int32.

inline __m256i dot32(__m256i w, __m256i aw, __m256i x, __m256i ones) {
  return _mm256_madd_epi16(_mm256_maddubs_epi16(aw, _mm256_sign_epi8(x, w)), ones);
}

// One row of x (int8, zero-padded to a multiple of 32), NR canonical weight rows.
template <int NR>
inline void gemv_int8act(const int8_t* xq, const int8_t* w, int64_t K, int32_t* out) {
  const __m256i ones = _mm256_set1_epi16(1);
  __m256i acc[NR];
  for (int j = 0; j < NR; ++j) acc[j] = _mm256_setzero_si256();
  int64_t k = 0;
  for (; k + 32 <= K; k += 32) {
    const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + k));
    if ((k & 63) == 0)
      for (int j = 0; j < NR; ++j) _mm_prefetch(reinterpret_cast<const char*>(w + (j + 2 * NR) * K + k), _MM_HINT_T1);
    for (int j = 0; j < NR; ++j) {
      const __m256i wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + j * K + k));
      acc[j] = _mm256_add_epi32(acc[j], dot32(wv, _mm256_abs_epi8(wv), xv, ones));
    }
  }
  for (int j = 0; j < NR; ++j) {
    int32_t s = hsum8_epi32(acc[j]);
    for (int64_t t = k; t < K; ++t) s += static_cast<int32_t>(w[j * K + t]) * xq[t];
    out[j] = s;
  }
}

// MR rows of x times NR canonical weight rows (2 <= M below kPackMinM): sums over K of
// every pair, without packing (packing costs a pass over the weights that few rows of x
// cannot amortise).
template <int MR, int NR>
inline void tile_int8act(const int8_t* xq, int64_t ldq, const int8_t* w, int64_t K, int32_t (*out)[2]) {
  const __m256i ones = _mm256_set1_epi16(1);
  __m256i acc[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) acc[i][j] = _mm256_setzero_si256();
  int64_t k = 0;
  for (; k + 32 <= K; k += 32) {
    __m256i wv[NR], aw[NR];
    for (int j = 0; j < NR; ++j) {
      wv[j] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + j * K + k));
      aw[j] = _mm256_abs_epi8(wv[j]);
    }
    for (int i = 0; i < MR; ++i) {
      const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + i * ldq + k));
      for (int j = 0; j < NR; ++j) acc[i][j] = _mm256_add_epi32(acc[i][j], dot32(wv[j], aw[j], xv, ones));
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) {
      int32_t s = hsum8_epi32(acc[i][j]);
      for (int64_t t = k; t < K; ++t) s += static_cast<int32_t>(w[j * K + t]) * xq[i * ldq + t];
      out[i][j] = s;
    }
}

// Packed weight panel for the M > 1 microkernel, made per task from the canonical rows:
// 16 output channels x K, cut into quads of 4 consecutive k (the last one zero-padded).
// For quad q the panel holds 128 bytes: |w| of channels 0-7, w of channels 0-7, |w| of
// channels 8-15, w of channels 8-15, each 32 bytes ordered (channel, k in quad), so one
// 4-byte broadcast of x meets every channel's 4 weights. Missing channels are zeros.
constexpr int kPanelN = 16;
// Rows of x from which packing panels pays off (measured on Zen 3).
constexpr int64_t kPackMinM = 24;
// Rows of x per microkernel call.
constexpr int kPanelM = 4;

// 8 x 8 transpose of 4-byte elements: r[i] holds quads 0..7 of row i on input and
// the 4-byte groups of rows 0..7 for quad i on output.
inline void transpose8x8_epi32(__m256i* r) {
  const __m256i t0 = _mm256_unpacklo_epi32(r[0], r[1]), t1 = _mm256_unpackhi_epi32(r[0], r[1]);
  const __m256i t2 = _mm256_unpacklo_epi32(r[2], r[3]), t3 = _mm256_unpackhi_epi32(r[2], r[3]);
  const __m256i t4 = _mm256_unpacklo_epi32(r[4], r[5]), t5 = _mm256_unpackhi_epi32(r[4], r[5]);
  const __m256i t6 = _mm256_unpacklo_epi32(r[6], r[7]), t7 = _mm256_unpackhi_epi32(r[6], r[7]);
  const __m256i u0 = _mm256_unpacklo_epi64(t0, t2), u1 = _mm256_unpackhi_epi64(t0, t2);
  const __m256i u2 = _mm256_unpacklo_epi64(t1, t3), u3 = _mm256_unpackhi_epi64(t1, t3);
  const __m256i u4 = _mm256_unpacklo_epi64(t4, t6), u5 = _mm256_unpackhi_epi64(t4, t6);
  const __m256i u6 = _mm256_unpacklo_epi64(t5, t7), u7 = _mm256_unpackhi_epi64(t5, t7);
  r[0] = _mm256_permute2x128_si256(u0, u4, 0x20), r[4] = _mm256_permute2x128_si256(u0, u4, 0x31);
  r[1] = _mm256_permute2x128_si256(u1, u5, 0x20), r[5] = _mm256_permute2x128_si256(u1, u5, 0x31);
  r[2] = _mm256_permute2x128_si256(u2, u6, 0x20), r[6] = _mm256_permute2x128_si256(u2, u6, 0x31);
  r[3] = _mm256_permute2x128_si256(u3, u7, 0x20), r[7] = _mm256_permute2x128_si256(u3, u7, 0x31);
}

inline void pack_panel(const int8_t* codes, int64_t K, int64_t rows, int8_t* panel) {
  const int64_t quads = (K + 3) / 4;
  int64_t q0 = 0;
  if (rows == kPanelN) {  // whole panels: 32 k of 8 rows at a time, transposed in registers
    for (; (q0 + 8) * 4 <= K; q0 += 8) {
      for (int h = 0; h < 2; ++h) {
        __m256i r[8];
        for (int i = 0; i < 8; ++i)
          r[i] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(codes + (8 * h + i) * K + q0 * 4));
        transpose8x8_epi32(r);
        for (int i = 0; i < 8; ++i) {
          int8_t* dst = panel + (q0 + i) * 128 + h * 64;
          _mm256_store_si256(reinterpret_cast<__m256i*>(dst), _mm256_abs_epi8(r[i]));
          _mm256_store_si256(reinterpret_cast<__m256i*>(dst + 32), r[i]);
        }
      }
    }
  }
  for (int64_t q = q0; q < quads; ++q) {
    int8_t* dst = panel + q * 128;
    const int64_t k0 = q * 4;
    for (int n = 0; n < kPanelN; ++n) {
      int8_t* d = dst + (n / 8) * 64 + 32 + (n % 8) * 4;
      for (int t = 0; t < 4; ++t) d[t] = (n < rows && k0 + t < K) ? codes[n * K + k0 + t] : 0;
    }
    for (int h = 0; h < 2; ++h) {
      const __m256i wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(dst + h * 64 + 32));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + h * 64), _mm256_abs_epi8(wv));
    }
  }
}

// acc[i][h] (8 int32: channels 8h..8h+7) += row i of x . panel, for MR rows of x.
template <int MR>
inline void panel_kernel(const int8_t* xq, int64_t ldq, const int8_t* panel, int64_t quads, __m256i (*acc)[2]) {
  const __m256i ones = _mm256_set1_epi16(1);
  __m256i a[MR][2];
  for (int i = 0; i < MR; ++i) a[i][0] = a[i][1] = _mm256_setzero_si256();
  for (int64_t q = 0; q < quads; ++q) {
    const int8_t* p = panel + q * 128;
    const __m256i aw0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(p));
    const __m256i w0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(p + 32));
    const __m256i aw1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(p + 64));
    const __m256i w1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(p + 96));
    for (int i = 0; i < MR; ++i) {
      int32_t xi;
      __builtin_memcpy(&xi, xq + i * ldq + q * 4, 4);
      const __m256i xb = _mm256_set1_epi32(xi);
      a[i][0] = _mm256_add_epi32(a[i][0], dot32(w0, aw0, xb, ones));
      a[i][1] = _mm256_add_epi32(a[i][1], dot32(w1, aw1, xb, ones));
    }
  }
  for (int i = 0; i < MR; ++i) acc[i][0] = a[i][0], acc[i][1] = a[i][1];
}

// ---- drivers ----------------------------------------------------------------

// Weight rows per L2 block: 48 rows of K = 4096 are 192 KB.
inline int64_t rows_per_block(int64_t K) {
  const int64_t r = (int64_t{192} << 10) / (K > 0 ? K : 1);
  return r < 12 ? 12 : (r > 96 ? 96 : r / 12 * 12);
}

// Runs Tile<MR, NR>(m, n, sums) over [0, M) x [n0, n1) with MR = 4 / NR = 2 tiles and
// smaller tiles at the edges, and Gemv<4>/Gemv<1> when M == 1; Emit(m, n, sum) writes.
template <class Acc, class TileFn, class GemvFn, class Emit>
inline void drive(int64_t M, int64_t K, int64_t n0, int64_t n1, TileFn tile, GemvFn gemv, Emit emit) {
  const int64_t nb = rows_per_block(K);
  for (int64_t b0 = n0; b0 < n1; b0 += nb) {
    const int64_t b1 = b0 + nb < n1 ? b0 + nb : n1;
    if (M == 1) {
      int64_t n = b0;
      for (; n + 4 <= b1; n += 4) {
        Acc s[4];
        gemv(n, 4, s);
        for (int j = 0; j < 4; ++j) emit(0, n + j, s[j]);
      }
      for (; n < b1; ++n) {
        Acc s[4];
        gemv(n, 1, s);
        emit(0, n, s[0]);
      }
      continue;
    }
    for (int64_t m = 0; m < M; m += 4) {
      const int mr = static_cast<int>(M - m < 4 ? M - m : 4);
      for (int64_t n = b0; n < b1; n += 2) {
        const int nr = static_cast<int>(b1 - n < 2 ? b1 - n : 2);
        Acc s[4][4];
        tile(m, n, mr, nr, s);
        for (int i = 0; i < mr; ++i)
          for (int j = 0; j < nr; ++j) emit(m + i, n + j, s[i][j]);
      }
    }
  }
}


// Decoder for the large-M float panels (panel_gemm_avx2.h): code * scale[n].
struct Int8Dec {
  const int8_t* codes;
  const float* scale;
  int64_t K;
  float v1(int64_t n, int64_t k) const { return static_cast<float>(codes[n * K + k]) * scale[n]; }
  __m256 v8(int64_t n, int64_t k) const { return _mm256_mul_ps(load_w8_f32(codes + n * K + k), _mm256_set1_ps(scale[n])); }
};

// The codes alone, for the bfloat16 panels (exact in bfloat16; the scale comes after the sum).
struct Int8CodeDec {
  const int8_t* codes;
  int64_t K;
  __m256 v8(int64_t n, int64_t k) const { return load_w8_f32(codes + n * K + k); }
};

}  // namespace

void quantize_rows_int8(const float* x, int64_t M, int64_t K, int8_t* xq, int64_t ldq, float* sx) {
  const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  for (int64_t m = 0; m < M; ++m) {
    const float* xr = x + m * K;
    int8_t* qr = xq + m * ldq;
    // max over bit patterns of |x|: integer order is float order there, NaN sorts above inf.
    __m256i vmax = _mm256_setzero_si256();
    int64_t k = 0;
    for (; k + 8 <= K; k += 8)
      vmax = _mm256_max_epu32(vmax, _mm256_castps_si256(_mm256_and_ps(_mm256_loadu_ps(xr + k), absmask)));
    alignas(32) uint32_t lanes[8];
    _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), vmax);
    uint32_t mb = 0;
    for (int j = 0; j < 8; ++j) mb = lanes[j] > mb ? lanes[j] : mb;
    for (; k < K; ++k) {
      uint32_t u;
      __builtin_memcpy(&u, xr + k, 4);
      u &= 0x7fffffffu;
      mb = u > mb ? u : mb;
    }
    float amax;
    __builtin_memcpy(&amax, &mb, 4);
    const float s = mb < 0x7f800000u ? amax / 127.f : std::numeric_limits<float>::quiet_NaN();
    sx[m] = s;
    if (!(s > 0.f)) {
      for (int64_t t = 0; t < ldq; ++t) qr[t] = 0;
      continue;
    }
    const __m256 vs = _mm256_set1_ps(s), hi = _mm256_set1_ps(127.f), lo = _mm256_set1_ps(-127.f);
    auto q8 = [&](const float* p) {
      const __m256 r = _mm256_round_ps(_mm256_div_ps(_mm256_loadu_ps(p), vs), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      return _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(r, lo), hi));
    };
    k = 0;
    for (; k + 32 <= K; k += 32) {
      const __m256i p = pack32_epi8(q8(xr + k), q8(xr + k + 8), q8(xr + k + 16), q8(xr + k + 24));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(qr + k), p);
    }
    for (; k < K; ++k) {
      float q = std::nearbyint(xr[k] / s);
      q = q > 127.f ? 127.f : (q < -127.f ? -127.f : q);
      qr[k] = static_cast<int8_t>(q);
    }
    for (; k < ldq; ++k) qr[k] = 0;
  }
}

#if defined(LOWBIT_HAVE_AVX512_BF16)
void linear_int8_bf16act(const bf16_t* x, int64_t M, int64_t K, const int8_t* codes, const float* scale,
                         const float* bias, float* y, int64_t ldy, int64_t n0, int64_t n1) {
  gemm_packed_bf16(Int8CodeDec{codes, K}, x, bias, y, M, K, ldy, n0, n1, scale);
}
#endif

void linear_int8_f32act(const float* x, int64_t M, int64_t K, const int8_t* codes, const float* scale,
                        const float* bias, float* y, int64_t ldy, int64_t n0, int64_t n1) {
  if (packed_gemm_applies(M, K)) return gemm_packed(Int8Dec{codes, scale, K}, x, bias, y, M, K, ldy, n0, n1);
  auto tile = [&](int64_t m, int64_t n, int mr, int nr, float (*s)[4]) {
    const float* xm = x + m * K;
    const int8_t* w = codes + n * K;
#define LOWBIT_TILE(MR_, NR_) \
  if (mr == MR_ && nr == NR_) return tile_f32act<MR_, NR_>(xm, K, w, K, s);
    LOWBIT_TILE(4, 2) LOWBIT_TILE(4, 1) LOWBIT_TILE(3, 2) LOWBIT_TILE(3, 1)
    LOWBIT_TILE(2, 2) LOWBIT_TILE(2, 1) LOWBIT_TILE(1, 2) LOWBIT_TILE(1, 1)
#undef LOWBIT_TILE
  };
  auto gemv = [&](int64_t n, int nr, float* s) {
    if (nr == 4) gemv_f32act<4>(x, codes + n * K, K, s);
    else gemv_f32act<1>(x, codes + n * K, K, s);
  };
  auto emit = [&](int64_t m, int64_t n, float s) {
    float v = s * scale[n];
    if (bias) v = no_contract(v) + bias[n];
    y[m * ldy + n] = v;
  };
  drive<float>(M, K, n0, n1, tile, gemv, emit);
}

void linear_int8_int8act(const int8_t* xq, int64_t ldq, const float* sx, int64_t M, int64_t K,
                         const int8_t* codes, const float* scale, const float* bias, float* y, int64_t ldy,
                         int64_t n0, int64_t n1) {
  if (M == 1) {
    auto emit = [&](int64_t n, int32_t s) {
      float v = no_contract(static_cast<float>(s) * sx[0]) * scale[n];
      if (bias) v = no_contract(v) + bias[n];
      y[n] = v;
    };
    int64_t n = n0;
    for (; n + 4 <= n1; n += 4) {
      int32_t s[4];
      gemv_int8act<4>(xq, codes + n * K, K, s);
      for (int j = 0; j < 4; ++j) emit(n + j, s[j]);
    }
    for (; n < n1; ++n) {
      int32_t s[1];
      gemv_int8act<1>(xq, codes + n * K, K, s);
      emit(n, s[0]);
    }
    return;
  }
  if (M < kPackMinM) {
    auto emit = [&](int64_t m, int64_t n, int32_t s) {
      float v = no_contract(static_cast<float>(s) * sx[m]) * scale[n];
      if (bias) v = no_contract(v) + bias[n];
      y[m * ldy + n] = v;
    };
    // Blocks of weight rows that stay in L2 while every group of 4 rows of x passes.
    const int64_t nb = rows_per_block(K);
    for (int64_t b0 = n0; b0 < n1; b0 += nb) {
      const int64_t b1 = b0 + nb < n1 ? b0 + nb : n1;
      for (int64_t m = 0; m < M; m += 4) {
        const int mr = static_cast<int>(M - m < 4 ? M - m : 4);
        for (int64_t n = b0; n < b1; n += 2) {
          const int nr = static_cast<int>(b1 - n < 2 ? b1 - n : 2);
          int32_t s[4][2];
          const int8_t* xm = xq + m * ldq;
          const int8_t* w = codes + n * K;
#define LOWBIT_TILE(MR_, NR_) \
  if (mr == MR_ && nr == NR_) tile_int8act<MR_, NR_>(xm, ldq, w, K, s);
          LOWBIT_TILE(4, 2) LOWBIT_TILE(4, 1) LOWBIT_TILE(3, 2) LOWBIT_TILE(3, 1)
          LOWBIT_TILE(2, 2) LOWBIT_TILE(2, 1) LOWBIT_TILE(1, 2) LOWBIT_TILE(1, 1)
#undef LOWBIT_TILE
          for (int i = 0; i < mr; ++i)
            for (int j = 0; j < nr; ++j) emit(m + i, n + j, s[i][j]);
        }
      }
    }
    return;
  }
  const int64_t quads = (K + 3) / 4;
  // 64-byte aligned for the aligned panel loads. (It was `new (std::align_val_t(64))` freed by
  // unique_ptr's plain `delete[]`: undefined behaviour, reported by AddressSanitizer as a
  // new-delete-type-mismatch.) aligned_alloc wants a size that is a multiple of the alignment.
  const size_t bytes = (static_cast<size_t>(quads) * 128 + 63) / 64 * 64;
  std::unique_ptr<int8_t, void (*)(void*)> buf(static_cast<int8_t*>(std::aligned_alloc(64, bytes)), std::free);
  if (!buf) throw std::bad_alloc();
  int8_t* panel = buf.get();
  for (int64_t nb = n0; nb < n1; nb += kPanelN) {
    const int rows = static_cast<int>(n1 - nb < kPanelN ? n1 - nb : kPanelN);
    pack_panel(codes + nb * K, K, rows, panel);
    alignas(32) float sc[kPanelN] = {}, bs[kPanelN] = {};
    for (int j = 0; j < rows; ++j) sc[j] = scale[nb + j], bs[j] = bias ? bias[nb + j] : 0.f;
    for (int64_t m = 0; m < M; m += kPanelM) {
      const int mr = static_cast<int>(M - m < kPanelM ? M - m : kPanelM);
      __m256i acc[kPanelM][2];
      const int8_t* xm = xq + m * ldq;
      switch (mr) {
        case 4: panel_kernel<4>(xm, ldq, panel, quads, acc); break;
        case 3: panel_kernel<3>(xm, ldq, panel, quads, acc); break;
        case 2: panel_kernel<2>(xm, ldq, panel, quads, acc); break;
        default: panel_kernel<1>(xm, ldq, panel, quads, acc); break;
      }
      for (int i = 0; i < mr; ++i) {
        const __m256 vsx = _mm256_set1_ps(sx[m + i]);
        alignas(32) float out[kPanelN];
        for (int h = 0; h < 2; ++h) {
          __m256 v = _mm256_mul_ps(_mm256_cvtepi32_ps(acc[i][h]), vsx);
          __asm__("" : "+x"(v));
          v = _mm256_mul_ps(v, _mm256_load_ps(sc + 8 * h));
          if (bias) {
            __asm__("" : "+x"(v));
            v = _mm256_add_ps(v, _mm256_load_ps(bs + 8 * h));
          }
          _mm256_store_ps(out + 8 * h, v);
        }
        float* yr = y + (m + i) * ldy + nb;
        for (int j = 0; j < rows; ++j) yr[j] = out[j];
      }
    }
  }
}

}  // namespace lowbit::cpu::avx2
