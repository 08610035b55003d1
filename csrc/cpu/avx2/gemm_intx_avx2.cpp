// AVX2/FMA kernels of linear_intx (docs/kernels.md, "2- and 4-bit weights").
//
// Both paths read the canonical packed rows as they are and instead permute x once
// per call, so that the inner loop needs no byte shuffles:
// - float path: 8 packed bytes are widened to 8 int32 lanes (vpmovzxbd); field f of
//   lane i (bits [f*bits, (f+1)*bits)) is element NV*i + f of the unit of 8*NV
//   elements (NV = 8 / bits), so x is stored per unit as xp[f*8 + i] = x[NV*i + f].
// - int8 path: 32 packed bytes hold a chunk of 32*NV elements; field f of byte j is
//   element NV*j + f, so the int8 x codes are stored per chunk as q[f*32 + j].
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "cpu/avx2/panel_gemm_avx2.h"
#include "cpu/avx2/panel_gemm_bf16.h"
#include "cpu/avx2/vec_avx2.h"
#include "cpu/gemm_intx.h"

namespace lowbit::cpu::avx2 {
namespace {

// Runs fn(b0, b1) over [n0, n1) in blocks of weight rows of about 128 KB, so that every
// tile of rows of x after the first reads the block from L2 instead of memory.
template <class Fn>
inline void for_l2_blocks(int64_t row_bytes, int64_t n0, int64_t n1, Fn fn) {
  const int64_t nb = std::max<int64_t>(4, (int64_t{128} << 10) / std::max<int64_t>(1, row_bytes));
  for (int64_t b = n0; b < n1; b += nb) fn(b, std::min(n1, b + nb));
}

// ---------------------------------------------------------------- float path ----

// MR rows of x against one weight row over k in [k0, k1) (multiples of the unit):
// w = u * scale - (2^(bits-1) + zp) * scale per element (one FMA), then MR FMAs.
// U independent accumulator sets hide the FMA latency when MR is small.
template <int BITS, int MR, int U>
inline void f32_tile(const uint8_t* wrow, const float* srow, ZeroPoints zrow, int64_t g, const float* xp,
                     int64_t ldx, int64_t k0, int64_t k1, float* out) {
  constexpr int NV = 8 / BITS;
  constexpr int64_t UE = 8 * NV;
  constexpr float OFF = static_cast<float>(1 << (BITS - 1));
  const __m256i mask = _mm256_set1_epi32((1 << BITS) - 1);
  __m256 acc[U][MR];
  for (int u = 0; u < U; ++u)
    for (int r = 0; r < MR; ++r) acc[u][r] = _mm256_setzero_ps();
  int64_t k = k0;
  while (k < k1) {
    const int64_t gi = k / g;
    const int64_t kend = std::min(k1, (gi + 1) * g);
    const float s = srow[gi];
    const float zp = zrow[gi];
    const __m256 vs = _mm256_set1_ps(s), vc = _mm256_set1_ps(-(OFF + zp) * s);
    auto unit = [&](int64_t kk, int u) {
      const __m256i d = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(wrow + kk / NV)));
      for (int f = 0; f < NV; ++f) {
        __m256i q = f == 0 ? d : _mm256_srli_epi32(d, BITS * f);
        if (f != NV - 1) q = _mm256_and_si256(q, mask);
        const __m256 wv = _mm256_fmadd_ps(_mm256_cvtepi32_ps(q), vs, vc);
        for (int r = 0; r < MR; ++r)
          acc[u][r] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(xp + r * ldx + kk + 8 * f), acc[u][r]);
      }
    };
    for (; k + U * UE <= kend; k += U * UE)
      for (int u = 0; u < U; ++u) unit(k + u * UE, u);
    for (; k < kend; k += UE) unit(k, 0);
  }
  for (int r = 0; r < MR; ++r) {
    __m256 t = acc[0][r];
    for (int u = 1; u < U; ++u) t = _mm256_add_ps(t, acc[u][r]);
    out[r] = hsum8(t);
  }
}

// M = 1: sum_k u * x per group in float (u the stored field, no per-element dequantizing
// FMA), then y = sum_g s_g * dot_g - sum_g s_g * (2^(bits-1) + zp_g) * xsum_g, with xsum_g
// the group's sum of x from the prepare step. Two fewer vector ops per 16 weights than
// f32_tile; the rounding differs from dequantize-then-dot only in order.
template <int BITS>
inline float f32_gemv_gs(const uint8_t* wrow, const float* srow, ZeroPoints zrow, int64_t g, const float* xp,
                         const float* xs, int64_t K) {
  constexpr int NV = 8 / BITS;
  constexpr int64_t UE = 8 * NV;
  constexpr int U = 4;
  constexpr float OFF = static_cast<float>(1 << (BITS - 1));
  const __m256i mask = _mm256_set1_epi32((1 << BITS) - 1);
  __m256 acc = _mm256_setzero_ps();
  float corr = 0.f;
  for (int64_t k = 0, gi = 0; k < K; ++gi) {
    const int64_t kend = k + g;
    __m256 accg[U];
    for (int u = 0; u < U; ++u) accg[u] = _mm256_setzero_ps();
    auto unit = [&](int64_t kk, int u) {
      const __m256i d = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(wrow + kk / NV)));
      for (int f = 0; f < NV; ++f) {
        __m256i q = f == 0 ? d : _mm256_srli_epi32(d, BITS * f);
        if (f != NV - 1) q = _mm256_and_si256(q, mask);
        accg[u] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(q), _mm256_loadu_ps(xp + kk + 8 * f), accg[u]);
      }
    };
    for (; k + U * UE <= kend; k += U * UE)
      for (int u = 0; u < U; ++u) unit(k + u * UE, u);
    for (; k < kend; k += UE) unit(k, 0);
    const float s = srow[gi];
    acc = _mm256_fmadd_ps(_mm256_add_ps(_mm256_add_ps(accg[0], accg[1]), _mm256_add_ps(accg[2], accg[3])),
                          _mm256_set1_ps(s), acc);
    corr += no_contract(s * (OFF + zrow[gi]) * xs[gi]);  // as intx_int8_finish
  }
  return hsum8(acc) - corr;
}

// Rows [m, m + MR) of y for channels [n0, n1), each over the whole K (the caller walks
// the channels in L2-sized blocks, so the rows of x stay in L2 across weight rows).
template <int BITS, int MR>
void f32_rows(const IntxWeights& w, const float* xp, int64_t m, const float* bias, float* y, int64_t n0,
              int64_t n1) {
  constexpr int U = MR == 1 ? 4 : (MR <= 3 ? 2 : 1);
  const int64_t K = w.K, G = K / w.group_size, row_bytes = K * BITS / 8;
  for (int64_t n = n0; n < n1; ++n) {
    float out[MR];
    f32_tile<BITS, MR, U>(w.packed + n * row_bytes, w.scale + n * G, w.zero_point + n * G,
                          w.group_size, xp + m * K, K, 0, K, out);
    for (int r = 0; r < MR; ++r) y[(m + r) * w.N + n] = bias ? out[r] + bias[n] : out[r];
  }
}

template <int BITS>
void f32_all(const IntxWeights& w, const float* xp, int64_t M, const float* bias, float* y, int64_t n0, int64_t n1) {
  if (M == 1) {
    const int64_t K = w.K, G = K / w.group_size, row_bytes = K * BITS / 8;
    for (int64_t n = n0; n < n1; ++n) {
      const float v = f32_gemv_gs<BITS>(w.packed + n * row_bytes, w.scale + n * G,
                                        w.zero_point + n * G, w.group_size, xp, xp + K, K);
      y[n] = bias ? v + bias[n] : v;
    }
    return;
  }
  for_l2_blocks(w.K * BITS / 8, n0, n1, [&](int64_t b0, int64_t b1) {
    int64_t m = 0;
    for (; m + 8 <= M; m += 8) f32_rows<BITS, 8>(w, xp, m, bias, y, b0, b1);
    switch (M - m) {
      case 1: f32_rows<BITS, 1>(w, xp, m, bias, y, b0, b1); break;
      case 2: f32_rows<BITS, 2>(w, xp, m, bias, y, b0, b1); break;
      case 3: f32_rows<BITS, 3>(w, xp, m, bias, y, b0, b1); break;
      case 4: f32_rows<BITS, 4>(w, xp, m, bias, y, b0, b1); break;
      case 5: f32_rows<BITS, 5>(w, xp, m, bias, y, b0, b1); break;
      case 6: f32_rows<BITS, 6>(w, xp, m, bias, y, b0, b1); break;
      case 7: f32_rows<BITS, 7>(w, xp, m, bias, y, b0, b1); break;
      default: break;
    }
  });
}

// ----------------------------------------------------------------- int8 path ----


// MR rows of int8 x against one weight row over k in [k0, k1) (multiples of the chunk
// CH = 32 * NV). Per chunk and row: NV maddubs (unsigned stored fields x signed x codes),
// summed in int16 (at most NV * 2 * (2^bits - 1) * 127 <= 7620), madd to 8 int32 lanes,
// lane l covering elements [l*CH/8, (l+1)*CH/8) of the chunk, i.e. one x block's part.
// UNIFORM: the group size is a multiple of CH, so one scale covers the chunk.
template <int BITS, int MR, bool UNIFORM>
inline void i8_tile(const uint8_t* wrow, const float* srow, int64_t g, const int8_t* xq, const float* lane_dx,
                    int64_t K, int64_t k0, int64_t k1, float* out) {
  constexpr int NV = 8 / BITS;
  constexpr int64_t CH = 32 * NV;
  const __m256i mask = _mm256_set1_epi8(static_cast<char>((1 << BITS) - 1));
  const __m256i ones = _mm256_set1_epi16(1);
  const int64_t ldl = K / 8;
  __m256 acc[MR];
  for (int r = 0; r < MR; ++r) acc[r] = _mm256_setzero_ps();
  auto chunk = [&](int64_t k, __m256 (&f)[MR]) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wrow + k / NV));
    __m256i s16[MR];
    for (int fi = 0; fi < NV; ++fi) {
      const __m256i qf = _mm256_and_si256(fi == 0 ? v : _mm256_srli_epi16(v, BITS * fi), mask);
      for (int r = 0; r < MR; ++r) {
        const __m256i p = _mm256_maddubs_epi16(
            qf, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + r * K + k + 32 * fi)));
        s16[r] = fi == 0 ? p : _mm256_add_epi16(s16[r], p);
      }
    }
    for (int r = 0; r < MR; ++r) f[r] = _mm256_cvtepi32_ps(_mm256_madd_epi16(s16[r], ones));
  };
  int64_t k = k0;
  if (UNIFORM && MR >= 3) {
    // one scale per chunk: x's lane scales times the group's scale (no per-group
    // accumulators, which would not fit the 16 ymm registers next to MR x 3 others)
    while (k < k1) {
      const int64_t gi = k / g;
      const int64_t kend = std::min(k1, (gi + 1) * g);
      const __m256 vs = _mm256_set1_ps(srow[gi]);
      for (; k < kend; k += CH) {
        __m256 f[MR];
        chunk(k, f);
        for (int r = 0; r < MR; ++r)
          acc[r] = _mm256_fmadd_ps(f[r], _mm256_mul_ps(_mm256_loadu_ps(lane_dx + r * ldl + k / 8), vs), acc[r]);
      }
    }
  } else if (UNIFORM) {
    while (k < k1) {
      const int64_t gi = k / g;
      const int64_t kend = std::min(k1, (gi + 1) * g);
      __m256 accg[MR];
      for (int r = 0; r < MR; ++r) accg[r] = _mm256_setzero_ps();
      for (; k < kend; k += CH) {
        __m256 f[MR];
        chunk(k, f);
        for (int r = 0; r < MR; ++r) accg[r] = _mm256_fmadd_ps(f[r], _mm256_loadu_ps(lane_dx + r * ldl + k / 8), accg[r]);
      }
      const __m256 vs = _mm256_set1_ps(srow[gi]);
      for (int r = 0; r < MR; ++r) acc[r] = _mm256_fmadd_ps(accg[r], vs, acc[r]);
    }
  } else {
    for (; k < k1; k += CH) {
      constexpr int64_t LE = CH / 8;  // elements per lane
      // two groups per chunk (2-bit, group 64): lanes 0-3 and 4-7, two broadcasts
      const __m256 svec = CH == 2 * g ? _mm256_setr_m128(_mm_set1_ps(srow[k / g]), _mm_set1_ps(srow[k / g + 1])) : _mm256_setr_ps(srow[(k + 0 * LE) / g], srow[(k + 1 * LE) / g], srow[(k + 2 * LE) / g],
                                         srow[(k + 3 * LE) / g], srow[(k + 4 * LE) / g], srow[(k + 5 * LE) / g],
                                         srow[(k + 6 * LE) / g], srow[(k + 7 * LE) / g]);
      __m256 f[MR];
      chunk(k, f);
      for (int r = 0; r < MR; ++r)
        acc[r] = _mm256_fmadd_ps(f[r], _mm256_mul_ps(_mm256_loadu_ps(lane_dx + r * ldl + k / 8), svec), acc[r]);
    }
  }
  for (int r = 0; r < MR; ++r) out[r] = hsum8(acc[r]);
}

// M = 1, one scale per chunk (UNIFORM): four weight rows at once against the one row of
// x (x codes and lane scales re-read from L1 per row; per-group accumulators as i8_tile).
// Four independent weight streams keep more memory reads in flight than one.
template <int BITS>
inline void i8_gemv4(const uint8_t* w0, int64_t row_bytes, const float* s0, int64_t G, int64_t g, const int8_t* xq,
                     const float* lane_dx, int64_t K, float* out) {
  constexpr int NV = 8 / BITS;
  constexpr int64_t CH = 32 * NV;
  const __m256i mask = _mm256_set1_epi8(static_cast<char>((1 << BITS) - 1));
  const __m256i ones = _mm256_set1_epi16(1);
  __m256 acc[4];
  for (int j = 0; j < 4; ++j) acc[j] = _mm256_setzero_ps();
  int64_t k = 0;
  while (k < K) {
    const int64_t gi = k / g;
    const int64_t kend = std::min(K, (gi + 1) * g);
    __m256 accg[4];
    for (int j = 0; j < 4; ++j) accg[j] = _mm256_setzero_ps();
    for (; k < kend; k += CH) {
      if (((k / NV) & 63) == 0)  // the rows of the tile after next, into L2, at the rate they are used
        for (int j = 0; j < 4; ++j)
          _mm_prefetch(reinterpret_cast<const char*>(w0 + (8 + j) * row_bytes + k / NV), _MM_HINT_T1);
      for (int j = 0; j < 4; ++j) {
        const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w0 + j * row_bytes + k / NV));
        __m256i s16 = _mm256_setzero_si256();
        for (int fi = 0; fi < NV; ++fi) {
          const __m256i qf = _mm256_and_si256(fi == 0 ? v : _mm256_srli_epi16(v, BITS * fi), mask);
          const __m256i p =
              _mm256_maddubs_epi16(qf, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + k + 32 * fi)));
          s16 = fi == 0 ? p : _mm256_add_epi16(s16, p);
        }
        const __m256 f = _mm256_cvtepi32_ps(_mm256_madd_epi16(s16, ones));
        accg[j] = _mm256_fmadd_ps(f, _mm256_loadu_ps(lane_dx + k / 8), accg[j]);
      }
    }
    for (int j = 0; j < 4; ++j) acc[j] = _mm256_fmadd_ps(accg[j], _mm256_set1_ps(s0[j * G + gi]), acc[j]);
  }
  for (int j = 0; j < 4; ++j) out[j] = hsum8(acc[j]);
}

template <int BITS, int MR, bool UNIFORM>
void i8_rows(const IntxWeights& w, const IntxInt8Ws& s, int64_t m, const float* bias, float* y, int64_t n0,
             int64_t n1) {
  const int64_t K = w.K, G = K / w.group_size, row_bytes = K * BITS / 8;
  float out4[4];
  for (int64_t n = n0; n < n1; ++n) {
    const float* srow = w.scale + n * G;
    float out[MR];
    if (MR == 1 && UNIFORM) {
      // four rows per i8_gemv4 call; rows n + 1 .. n + 3 take their sums from out4
      const int64_t j = (n - n0) % 4;
      if (j == 0 && n + 4 <= n1)
        i8_gemv4<BITS>(w.packed + n * row_bytes, row_bytes, srow, G, w.group_size, s.q + m * K,
                       s.lane_dx + m * (K / 8), K, out4);
      if (n - j + 4 <= n1) out[0] = out4[j];
      else i8_tile<BITS, MR, UNIFORM>(w.packed + n * row_bytes, srow, w.group_size, s.q + m * K,
                                      s.lane_dx + m * (K / 8), K, 0, K, out);
    } else {
      i8_tile<BITS, MR, UNIFORM>(w.packed + n * row_bytes, srow, w.group_size, s.q + m * K, s.lane_dx + m * (K / 8),
                                 K, 0, K, out);
    }
    for (int r = 0; r < MR; ++r) y[(m + r) * w.N + n] = intx_int8_finish(w, s.xsum + (m + r) * G, n, out[r], bias);
  }
}

template <int BITS, bool UNIFORM>
void i8_all(const IntxWeights& w, const IntxInt8Ws& s, int64_t M, const float* bias, float* y, int64_t n0,
            int64_t n1) {
  for_l2_blocks(w.K * BITS / 8, n0, n1, [&](int64_t b0, int64_t b1) {
    int64_t m = 0;
    for (; m + 4 <= M; m += 4) i8_rows<BITS, 4, UNIFORM>(w, s, m, bias, y, b0, b1);
    switch (M - m) {
      case 1: i8_rows<BITS, 1, UNIFORM>(w, s, m, bias, y, b0, b1); break;
      case 2: i8_rows<BITS, 2, UNIFORM>(w, s, m, bias, y, b0, b1); break;
      case 3: i8_rows<BITS, 3, UNIFORM>(w, s, m, bias, y, b0, b1); break;
      default: break;
    }
  });
}

// ------------------------------------------------------------ large M path ----

// Decoder of the canonical packed rows for the float panels of panel_gemm_avx2.h:
// w = u * scale - (2^(bits-1) + zp) * scale, the same FMA as the per-row float path.
// 8 consecutive elements share one group (group_size % 8 == 0) and live in 4 bytes
// (4-bit) or 2 bytes (2-bit): bytes are spread to the lanes that hold their fields,
// then shifted right per lane by the field's bit offset.
template <int BITS>
struct IntxDec {
  const IntxWeights& w;
  int64_t row_bytes, G;
  float scale(int64_t n, int64_t k) const { return w.scale[n * G + k / w.group_size]; }
  float zp(int64_t n, int64_t k) const { return w.zero_point[n * G + k / w.group_size]; }
  float v1(int64_t n, int64_t k) const {
    constexpr int NV = 8 / BITS;
    const int u = (w.packed[n * row_bytes + k / NV] >> (BITS * (k % NV))) & ((1 << BITS) - 1);
    const float s = scale(n, k);
    return std::fma(static_cast<float>(u), s, -(static_cast<float>(1 << (BITS - 1)) + zp(n, k)) * s);
  }
  __m256 v8(int64_t n, int64_t k) const {
    constexpr int NV = 8 / BITS;
    const uint8_t* p = w.packed + n * row_bytes + k / NV;
    int32_t word = 0;
    std::memcpy(&word, p, 8 / NV);  // 4 or 2 bytes, no read past the row
    const __m128i spread = BITS == 4 ? _mm_setr_epi8(0, 0, 1, 1, 2, 2, 3, 3, -1, -1, -1, -1, -1, -1, -1, -1)
                                     : _mm_setr_epi8(0, 0, 0, 0, 1, 1, 1, 1, -1, -1, -1, -1, -1, -1, -1, -1);
    const __m256i bytes = _mm256_cvtepu8_epi32(_mm_shuffle_epi8(_mm_cvtsi32_si128(word), spread));
    const __m256i shifts = BITS == 4 ? _mm256_setr_epi32(0, 4, 0, 4, 0, 4, 0, 4) : _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6);
    const __m256i u = _mm256_and_si256(_mm256_srlv_epi32(bytes, shifts), _mm256_set1_epi32((1 << BITS) - 1));
    const float s = scale(n, k);
    const float c = -(static_cast<float>(1 << (BITS - 1)) + zp(n, k)) * s;
    return _mm256_fmadd_ps(_mm256_cvtepi32_ps(u), _mm256_set1_ps(s), _mm256_set1_ps(c));
  }
};

}  // namespace

void intx_compute_packed(const IntxWeights& w, const float* x, int64_t M, const float* bias, float* y, int64_t n0,
                         int64_t n1) {
  const int64_t row_bytes = w.K * w.bits / 8, G = w.K / w.group_size;
  if (w.bits == 4) gemm_packed(IntxDec<4>{w, row_bytes, G}, x, bias, y, M, w.K, w.N, n0, n1);
  else gemm_packed(IntxDec<2>{w, row_bytes, G}, x, bias, y, M, w.K, w.N, n0, n1);
}

#if defined(LOWBIT_HAVE_AVX512_BF16)
void intx_compute_packed_bf16(const IntxWeights& w, const bf16_t* x, int64_t M, const float* bias, float* y,
                              int64_t n0, int64_t n1) {
  const int64_t row_bytes = w.K * w.bits / 8, G = w.K / w.group_size;
  if (w.bits == 4) gemm_packed_bf16(IntxDec<4>{w, row_bytes, G}, x, bias, y, M, w.K, w.N, n0, n1);
  else gemm_packed_bf16(IntxDec<2>{w, row_bytes, G}, x, bias, y, M, w.K, w.N, n0, n1);
}
#endif

bool intx_f32_supported(const IntxWeights& w) {
  if (w.bits != 2 && w.bits != 4) return false;
  const int64_t unit = 8 * (8 / w.bits);
  return w.group_size % unit == 0;
}

bool intx_int8_supported(const IntxWeights& w) {
  if (w.bits != 2 && w.bits != 4) return false;
  const int64_t chunk = 32 * (8 / w.bits);
  return w.K % chunk == 0 && w.group_size % kIntxActBlock == 0;
}

template <typename T>
void intx_prepare_f32(const IntxWeights& w, const T* x, int64_t M, float* xp, int64_t m0, int64_t m1) {
  const int64_t K = w.K, G = K / w.group_size;
  const int NV = 8 / w.bits;
  const int64_t UE = 8 * NV;
  float* xsum = xp + M * K;  // [M, G]: sum of x over each group (the M = 1 kernel's zero-point term)
  for (int64_t m = m0; m < m1; ++m) {
    const T* xr = x + m * K;
    float* dst = xp + m * K;
    for (int64_t u = 0; u < K; u += UE)
      for (int f = 0; f < NV; ++f)
        for (int i = 0; i < 8; ++i) dst[u + f * 8 + i] = to_float(xr[u + NV * i + f]);
    for (int64_t gi = 0; gi < G; ++gi) {
      float t = 0.f;
      for (int64_t k = gi * w.group_size; k < (gi + 1) * w.group_size; ++k) t += dst[k];
      xsum[m * G + gi] = t;
    }
  }
}

template <typename T>
void intx_prepare_int8(const IntxWeights& w, const T* x, int64_t M, void* ws, int64_t m0, int64_t m1) {
  const int64_t K = w.K, G = K / w.group_size, nb = K / kIntxActBlock, bpg = w.group_size / kIntxActBlock;
  const int NV = 8 / w.bits;
  const int64_t CH = 32 * NV, LE = CH / 8;
  IntxInt8Ws s = intx_int8_ws(ws, M, K, G);
  float buf[kIntxActBlock];
  int8_t qb[256];
  std::vector<float> bsum(static_cast<size_t>(nb));
  for (int64_t m = m0; m < m1; ++m) {
    const T* xr = x + m * K;
    int8_t* qr = s.q + m * K;
    float* dx = s.dx + m * nb;
    for (int64_t c = 0; c < K; c += CH) {
      for (int64_t b = 0; b < CH / kIntxActBlock; ++b) {
        for (int64_t i = 0; i < kIntxActBlock; ++i) buf[i] = to_float(xr[c + b * kIntxActBlock + i]);
        dx[(c / kIntxActBlock) + b] = quantize_act_block(buf, qb + b * kIntxActBlock);
        int32_t qs = 0;
        for (int64_t i = 0; i < kIntxActBlock; ++i) qs += qb[b * kIntxActBlock + i];
        bsum[(c / kIntxActBlock) + b] = static_cast<float>(qs);
      }
      for (int f = 0; f < NV; ++f)
        for (int j = 0; j < 32; ++j) qr[c + f * 32 + j] = qb[NV * j + f];
      for (int l = 0; l < 8; ++l) s.lane_dx[m * (K / 8) + c / 8 + l] = dx[(c + l * LE) / kIntxActBlock];
    }
    for (int64_t gi = 0; gi < G; ++gi) {
      float acc = 0.f;
      for (int64_t b = gi * bpg; b < (gi + 1) * bpg; ++b) acc += dx[b] * bsum[b];
      s.xsum[m * G + gi] = acc;
    }
  }
}

void intx_compute_f32(const IntxWeights& w, const float* xp, int64_t M, const float* bias, float* y, int64_t n0,
                      int64_t n1) {
  if (w.bits == 4) f32_all<4>(w, xp, M, bias, y, n0, n1);
  else f32_all<2>(w, xp, M, bias, y, n0, n1);
}

void intx_compute_int8(const IntxWeights& w, const void* ws, int64_t M, const float* bias, float* y, int64_t n0,
                       int64_t n1) {
  const IntxInt8Ws s = intx_int8_ws(const_cast<void*>(ws), M, w.K, w.K / w.group_size);
  const int64_t chunk = 32 * (8 / w.bits);
  const bool uniform = w.group_size % chunk == 0;
  if (w.bits == 4) {
    if (uniform) i8_all<4, true>(w, s, M, bias, y, n0, n1);
    else i8_all<4, false>(w, s, M, bias, y, n0, n1);
  } else {
    if (uniform) i8_all<2, true>(w, s, M, bias, y, n0, n1);
    else i8_all<2, false>(w, s, M, bias, y, n0, n1);
  }
}

template void intx_prepare_f32<float>(const IntxWeights&, const float*, int64_t, float*, int64_t, int64_t);
template void intx_prepare_f32<half_t>(const IntxWeights&, const half_t*, int64_t, float*, int64_t, int64_t);
template void intx_prepare_f32<bf16_t>(const IntxWeights&, const bf16_t*, int64_t, float*, int64_t, int64_t);
template void intx_prepare_int8<float>(const IntxWeights&, const float*, int64_t, void*, int64_t, int64_t);
template void intx_prepare_int8<half_t>(const IntxWeights&, const half_t*, int64_t, void*, int64_t, int64_t);
template void intx_prepare_int8<bf16_t>(const IntxWeights&, const bf16_t*, int64_t, void*, int64_t, int64_t);

}  // namespace lowbit::cpu::avx2
