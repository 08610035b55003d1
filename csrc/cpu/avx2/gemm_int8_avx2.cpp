// AVX2/FMA int8-weight linear kernels (see cpu/gemm_int8.h for the math).
//
// Both paths use a "dot-product" tile on the canonical [N, K] layout: MR rows of x
// times NR weight rows, MR * NR vector accumulators along K, reduced horizontally
// once at the end. Each weight vector is widened once per K step and reused for the
// MR rows of x, so weights are read once per tile from L1/L2; the driver walks the
// N range in blocks that stay in L2 while every block of MR rows of x passes over it.
//   f32act:  8 int8 -> 8 float (vpmovsxbd + vcvtdq2ps), FMA with x.
//   int8act: 16 int8 -> 16 int16 (vpmovsxbw), vpmaddwd with the int16 activations
//            (exact: |w * x| <= 128 * 127, pairs summed in int32), vpaddd.
#include <immintrin.h>

#include <cmath>
#include <cstdint>
#include <limits>

#include "cpu/gemm_int8.h"

namespace lowbit::cpu::avx2 {
namespace {

// Keeps the compiler from fusing the multiply and the add of the epilogue into
// one FMA, so that the int8act path rounds exactly like the portable one.
inline float no_contract(float v) {
  __asm__("" : "+x"(v));
  return v;
}

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline int32_t hsum(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
  return _mm_cvtsi128_si32(s);
}

inline __m256 load_w8_f32(const int8_t* p) {
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
}
inline __m256i load_w16_i16(const int8_t* p) {
  return _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
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
      float s = hsum(acc[i][j]);
      for (int64_t t = k; t < K; ++t) s += static_cast<float>(w[j * K + t]) * x[i * ldx + t];
      out[i][j] = s;
    }
}

// One row of x, NR weight rows, two K steps in flight (2 * NR independent FMA chains).
template <int NR>
inline void gemv_f32act(const float* x, const int8_t* w, int64_t K, float* out) {
  __m256 a0[NR], a1[NR];
  for (int j = 0; j < NR; ++j) a0[j] = a1[j] = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 16 <= K; k += 16) {
    const __m256 x0 = _mm256_loadu_ps(x + k), x1 = _mm256_loadu_ps(x + k + 8);
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
    float s = hsum(_mm256_add_ps(a0[j], a1[j]));
    for (int64_t t = k; t < K; ++t) s += static_cast<float>(w[j * K + t]) * x[t];
    out[j] = s;
  }
}

// ---- int8 activations -------------------------------------------------------

template <int MR, int NR>
inline void tile_int8act(const int16_t* xq, int64_t ldq, const int8_t* w, int64_t K, int32_t (*out)[4]) {
  __m256i acc[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) acc[i][j] = _mm256_setzero_si256();
  int64_t k = 0;
  for (; k + 16 <= K; k += 16) {
    __m256i wv[NR];
    for (int j = 0; j < NR; ++j) wv[j] = load_w16_i16(w + j * K + k);
    for (int i = 0; i < MR; ++i) {
      const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + i * ldq + k));
      for (int j = 0; j < NR; ++j) acc[i][j] = _mm256_add_epi32(acc[i][j], _mm256_madd_epi16(wv[j], xv));
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) {
      int32_t s = hsum(acc[i][j]);
      for (int64_t t = k; t < K; ++t) s += static_cast<int32_t>(w[j * K + t]) * xq[i * ldq + t];
      out[i][j] = s;
    }
}

template <int NR>
inline void gemv_int8act(const int16_t* xq, const int8_t* w, int64_t K, int32_t* out) {
  __m256i a0[NR], a1[NR];
  for (int j = 0; j < NR; ++j) a0[j] = a1[j] = _mm256_setzero_si256();
  int64_t k = 0;
  for (; k + 32 <= K; k += 32) {
    const __m256i x0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + k));
    const __m256i x1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + k + 16));
    for (int j = 0; j < NR; ++j) {
      a0[j] = _mm256_add_epi32(a0[j], _mm256_madd_epi16(load_w16_i16(w + j * K + k), x0));
      a1[j] = _mm256_add_epi32(a1[j], _mm256_madd_epi16(load_w16_i16(w + j * K + k + 16), x1));
    }
  }
  if (k + 16 <= K) {
    const __m256i x0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + k));
    for (int j = 0; j < NR; ++j) a0[j] = _mm256_add_epi32(a0[j], _mm256_madd_epi16(load_w16_i16(w + j * K + k), x0));
    k += 16;
  }
  for (int j = 0; j < NR; ++j) {
    int32_t s = hsum(_mm256_add_epi32(a0[j], a1[j]));
    for (int64_t t = k; t < K; ++t) s += static_cast<int32_t>(w[j * K + t]) * xq[t];
    out[j] = s;
  }
}

// ---- drivers ----------------------------------------------------------------

// Weight rows per L2 block: 48 rows of K = 4096 are 192 KB.
inline int64_t rows_per_block(int64_t K) {
  const int64_t r = (int64_t{192} << 10) / (K > 0 ? K : 1);
  return r < 12 ? 12 : (r > 96 ? 96 : r / 12 * 12);
}

// Runs Tile<MR, NR>(m, n, sums) over [0, M) x [n0, n1) with MR = 4 / NR = 3 tiles and
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
      for (int64_t n = b0; n < b1; n += 3) {
        const int nr = static_cast<int>(b1 - n < 3 ? b1 - n : 3);
        Acc s[4][4];
        tile(m, n, mr, nr, s);
        for (int i = 0; i < mr; ++i)
          for (int j = 0; j < nr; ++j) emit(m + i, n + j, s[i][j]);
      }
    }
  }
}


}  // namespace

void quantize_rows_int8(const float* x, int64_t M, int64_t K, int16_t* xq, int64_t ldq, float* sx) {
  const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  for (int64_t m = 0; m < M; ++m) {
    const float* xr = x + m * K;
    int16_t* qr = xq + m * ldq;
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
    k = 0;
    for (; k + 16 <= K; k += 16) {
      __m256 a = _mm256_round_ps(_mm256_div_ps(_mm256_loadu_ps(xr + k), vs), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      __m256 b = _mm256_round_ps(_mm256_div_ps(_mm256_loadu_ps(xr + k + 8), vs), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      a = _mm256_min_ps(_mm256_max_ps(a, lo), hi);
      b = _mm256_min_ps(_mm256_max_ps(b, lo), hi);
      // packs works within 128-bit lanes: [a0..3 b0..3 | a4..7 b4..7] -> fix the order.
      __m256i p = _mm256_packs_epi32(_mm256_cvtps_epi32(a), _mm256_cvtps_epi32(b));
      p = _mm256_permute4x64_epi64(p, 0xd8);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(qr + k), p);
    }
    for (; k < K; ++k) {
      float q = std::nearbyint(xr[k] / s);
      q = q > 127.f ? 127.f : (q < -127.f ? -127.f : q);
      qr[k] = static_cast<int16_t>(q);
    }
    for (; k < ldq; ++k) qr[k] = 0;
  }
}

void linear_int8_f32act(const float* x, int64_t M, int64_t K, const int8_t* codes, const float* scale,
                        const float* bias, float* y, int64_t ldy, int64_t n0, int64_t n1) {
  auto tile = [&](int64_t m, int64_t n, int mr, int nr, float (*s)[4]) {
    const float* xm = x + m * K;
    const int8_t* w = codes + n * K;
#define LOWBIT_TILE(MR_, NR_) \
  if (mr == MR_ && nr == NR_) return tile_f32act<MR_, NR_>(xm, K, w, K, s);
    LOWBIT_TILE(4, 3) LOWBIT_TILE(4, 2) LOWBIT_TILE(4, 1)
    LOWBIT_TILE(3, 3) LOWBIT_TILE(3, 2) LOWBIT_TILE(3, 1)
    LOWBIT_TILE(2, 3) LOWBIT_TILE(2, 2) LOWBIT_TILE(2, 1)
    LOWBIT_TILE(1, 3) LOWBIT_TILE(1, 2) LOWBIT_TILE(1, 1)
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

void linear_int8_int8act(const int16_t* xq, int64_t ldq, const float* sx, int64_t M, int64_t K,
                         const int8_t* codes, const float* scale, const float* bias, float* y, int64_t ldy,
                         int64_t n0, int64_t n1) {
  auto tile = [&](int64_t m, int64_t n, int mr, int nr, int32_t (*s)[4]) {
    const int16_t* xm = xq + m * ldq;
    const int8_t* w = codes + n * K;
#define LOWBIT_TILE(MR_, NR_) \
  if (mr == MR_ && nr == NR_) return tile_int8act<MR_, NR_>(xm, ldq, w, K, s);
    LOWBIT_TILE(4, 3) LOWBIT_TILE(4, 2) LOWBIT_TILE(4, 1)
    LOWBIT_TILE(3, 3) LOWBIT_TILE(3, 2) LOWBIT_TILE(3, 1)
    LOWBIT_TILE(2, 3) LOWBIT_TILE(2, 2) LOWBIT_TILE(2, 1)
    LOWBIT_TILE(1, 3) LOWBIT_TILE(1, 2) LOWBIT_TILE(1, 1)
#undef LOWBIT_TILE
  };
  auto gemv = [&](int64_t n, int nr, int32_t* s) {
    if (nr == 4) gemv_int8act<4>(xq, codes + n * K, K, s);
    else gemv_int8act<1>(xq, codes + n * K, K, s);
  };
  auto emit = [&](int64_t m, int64_t n, int32_t s) {
    float v = no_contract(static_cast<float>(s) * sx[m]) * scale[n];
    if (bias) v = no_contract(v) + bias[n];
    y[m * ldy + n] = v;
  };
  drive<int32_t>(M, K, n0, n1, tile, gemv, emit);
}

}  // namespace lowbit::cpu::avx2
