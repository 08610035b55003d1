// 4-bit weights x 16/32-bit activations for small M (linear_intx's exact path), with
// vdpbf16ps on weight codes turned into bfloat16 in registers.
//
// Decoding: 32 packed bytes (64 elements of a row) are zero-extended to 32 words. A
// byte holds element 2j (low nibble) and 2j + 1 (high nibble); each nibble u goes into
// the top four mantissa bits of bfloat16 1.0 (0x3f80), which gives exactly 1 + u / 16:
//   LO = ((w << 3) & 0x78) | 0x3f80   (elements 2j, j = 0..31)
//   HI = ((w >> 1) & 0x78) | 0x3f80   (elements 2j + 1)
// four bitwise operations for 64 weights, no table and no conversion. vdpbf16ps sums
// neighbouring pairs, so x is stored per unit of 64 elements as its 32 even elements,
// then its 32 odd ones (the workspace), and LO / HI meet their inputs in one step each.
//
// Each product is exact in float32, so per group g of row n, in float32,
//   y += 16 * scale[g] * sum((1 + u / 16) * x) - (24 + zero_point[g]) * scale[g] * sum(x),
// which is the float32 path's sum of (u - 8 - zp) * scale * x in another order. The
// second term is about 5x the result for zero-mean x and up to ~60x for all-positive x
// (GELU / ReLU outputs); float32 rounding grows by that factor (1 + u / 16 rather than
// 128 + u keeps the factor 6x smaller).
//
// x is a sum of P bfloat16 terms (hi = bf16(x), then bf16 of what is left, ...): P = 1
// for bfloat16 x; 2 for float16 x (exact: 11 significant bits); 3 for float32 x (exact:
// 24 bits), or 2 / 1 when torch.set_float32_matmul_precision allows ("high" / "medium":
// 16 / 8 significant bits, as torch's own "two bfloat16" float32 matmul). Each weight
// vector meets every term; sum(x) is taken of the terms, so the two parts of the formula
// above stay consistent.
// Group size 32: a unit of 64 elements spans two groups, which sit in lanes 0-7 and 8-15
// of the accumulators, and the scales are applied per unit as a two-valued vector.
#include <immintrin.h>

#include <algorithm>

#include "cpu/gemm_intx.h"

namespace lowbit::cpu::avx512bf16 {
namespace {

constexpr int64_t kUnit = 64;  // elements per decode step (32 packed bytes)
constexpr int64_t kRowBlockBytes = int64_t{192} << 10;  // weight rows kept in L2 while all x rows pass

constexpr int kMaxParts = 3;

struct Ws {
  const bf16_t* x[kMaxParts];  // term q of x, [M, x_stride(K)], units of 64 as 32 even then 32 odd elements
  const float* xsum;           // [M, G]: per group sum of the terms
};

// Row stride of the x terms: K rounded up to the unit (K % 64 == 32 with groups of 32:
// the last unit is half filled, its other half zeros).
int64_t x_stride(int64_t K) { return (K + kUnit - 1) / kUnit * kUnit; }
// Bytes of one [M, x_stride(K)] bfloat16 term of x (a multiple of 64).
int64_t x_bytes(int64_t M, int64_t K) { return M * x_stride(K) * 2; }

Ws workspace(const void* ws, int64_t M, int64_t K, int parts) {
  const char* p = static_cast<const char*>(ws);
  const int64_t xb = x_bytes(M, K);
  Ws r{};
  for (int q = 0; q < parts; ++q) r.x[q] = reinterpret_cast<const bf16_t*>(p + q * xb);
  r.xsum = reinterpret_cast<const float*>(p + parts * xb);
  return r;
}

// See the file comment: 64 elements of a row -> (LO, HI) bfloat16 vectors of 1 + u / 16.
// half: only the first 16 bytes are the row's (the last unit of a row with K % 64 == 32);
// the masked load reads nothing beyond them and gives u = 0 (weight 1) for the rest,
// which meets the zeros of x there.
inline void decode64(const uint8_t* p, bool half, __m512bh& lo, __m512bh& hi) {
  const __m256i b = half ? _mm256_maskz_loadu_epi8(0xffff, p) : _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  const __m512i w = _mm512_cvtepu8_epi16(b);
  const __m512i mant = _mm512_set1_epi16(0x0078), one = _mm512_set1_epi16(0x3f80);
  // ternlog 0xea: (a & b) | c
  lo = (__m512bh)_mm512_ternarylogic_epi32(_mm512_slli_epi16(w, 3), mant, one, 0xea);
  hi = (__m512bh)_mm512_ternarylogic_epi32(_mm512_srli_epi16(w, 1), mant, one, 0xea);
}

inline __m512bh load_bh(const bf16_t* p) { return (__m512bh)_mm512_loadu_si512(p); }

// -sum over groups of (24 + zero_point[g]) * scale[g] * sum(x of group g) for one weight
// row and one row of x: the constant part of the file comment's formula, vectorized over
// the groups here so that the kernel's loop only applies the scales.
inline float offset_term(const float* srow, ZeroPoints zrow, const float* xsum, int64_t G) {
  __m512 acc = _mm512_setzero_ps();
  const __m512 c24 = _mm512_set1_ps(24.f);
  int64_t g = 0;
  for (; g + 16 <= G; g += 16) {
    __m512 off = c24;
    if (zrow.f32) off = _mm512_add_ps(c24, _mm512_loadu_ps(zrow.f32 + g));
    else if (zrow.i8) off = _mm512_add_ps(c24, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(zrow.i8 + g)))));
    acc = _mm512_fmadd_ps(_mm512_mul_ps(off, _mm512_loadu_ps(srow + g)), _mm512_loadu_ps(xsum + g), acc);
  }
  float r = _mm512_reduce_add_ps(acc);
  for (; g < G; ++g) r += no_contract((24.f + zrow[g]) * srow[g] * xsum[g]);  // as intx_int8_finish
  return -r;
}

// MR rows of x (from m) x NR weight rows (from n), all of K. P: terms of x.
// G32: group size 32, two groups per unit; else group_size % 64 == 0. The LO and HI
// products go to separate accumulators: twice the independent vdpbf16ps chains.
template <int MR, int NR, int P, bool G32>
void tile(const IntxWeights& w, const Ws& ws, int64_t m, int64_t n, const float* bias, float* y) {
  const int64_t K = w.K, G = K / w.group_size, row_bytes = K / 2, xs = x_stride(K);
  const int64_t span = G32 ? kUnit : w.group_size;  // elements between two applications of the scales
  const uint8_t* wrow[NR];
  const float* srow[NR];
  for (int j = 0; j < NR; ++j) {
    wrow[j] = w.packed + (n + j) * row_bytes;
    srow[j] = w.scale + (n + j) * G;
  }
  // The weight rows two tiles ahead into L2, a line (128 weights) at a time as the
  // kernel moves along K, by the first tile of rows of x (the one that streams the
  // weights from memory; the next ones find them in L2). Against torch's int4 kernel in
  // the same runs, M = 1: 1.05x with it, 0.80x without (4096 x 4096, three alternating
  // runs each on a noisy machine).
  const bool prefetch = m == 0 && n + 3 * NR <= w.N;
  const uint8_t* pf = w.packed + (n + 2 * NR) * row_bytes;
  __m512 tot[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) tot[i][j] = _mm512_setzero_ps();
  for (int64_t k0 = 0, g = 0; k0 < K; k0 += span, g += G32 ? 2 : 1) {
    __m512 acc[2][MR][NR];
    for (int h = 0; h < 2; ++h)
      for (int i = 0; i < MR; ++i)
        for (int j = 0; j < NR; ++j) acc[h][i][j] = _mm512_setzero_ps();
    for (int64_t k = k0; k < k0 + span; k += kUnit) {
      if (prefetch && (k & 127) == 0)
        for (int j = 0; j < NR; ++j) _mm_prefetch(reinterpret_cast<const char*>(pf + j * row_bytes + k / 2), _MM_HINT_T1);
      for (int j = 0; j < NR; ++j) {
        __m512bh lo, hi;
        decode64(wrow[j] + k / 2, G32 && k + kUnit > K, lo, hi);
        for (int i = 0; i < MR; ++i)
          for (int q = 0; q < P; ++q) {
            const bf16_t* xq = ws.x[q] + (m + i) * xs + k;
            acc[0][i][j] = _mm512_dpbf16_ps(acc[0][i][j], lo, load_bh(xq));
            acc[1][i][j] = _mm512_dpbf16_ps(acc[1][i][j], hi, load_bh(xq + 32));
          }
      }
    }
    for (int j = 0; j < NR; ++j) {
      __m512 sv = _mm512_set1_ps(srow[j][g]);
      if constexpr (G32)  // lanes 8-15: elements 32-63 (none in a half unit)
        sv = _mm512_mask_mov_ps(sv, 0xff00, _mm512_set1_ps(g + 1 < G ? srow[j][g + 1] : 0.f));
      for (int i = 0; i < MR; ++i) tot[i][j] = _mm512_fmadd_ps(_mm512_add_ps(acc[0][i][j], acc[1][i][j]), sv, tot[i][j]);
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j)
      y[(m + i) * w.N + n + j] =
          16.f * _mm512_reduce_add_ps(tot[i][j]) +
          offset_term(srow[j], w.zero_point + (n + j) * G, ws.xsum + (m + i) * G, G) +
          (bias ? bias[n + j] : 0.f);
}

// All M rows for NR weight rows from n: tiles of up to MR rows of x, so each weight is
// decoded once per MR rows.
template <int MR, int NR, int P, bool G32>
void rows(const IntxWeights& w, const Ws& ws, int64_t M, int64_t n, const float* bias, float* y) {
  int64_t m = 0;
  for (; m + MR <= M; m += MR) tile<MR, NR, P, G32>(w, ws, m, n, bias, y);
  switch (M - m) {
    case 3: if constexpr (MR > 3) tile<3, NR, P, G32>(w, ws, m, n, bias, y); break;
    case 2: if constexpr (MR > 2) tile<2, NR, P, G32>(w, ws, m, n, bias, y); break;
    case 1: if constexpr (MR > 1) tile<1, NR, P, G32>(w, ws, m, n, bias, y); break;
    default: break;
  }
}

// Tiles of 2 rows of x x 4 weight rows (M <= 2, or x in 2-3 terms), else 4 x 2: 8 zmm
// accumulators per half (LO / HI) and 8 totals either way, within the 32 registers. With
// 2-3 terms the 4 x 2 tile ran at half the speed of the 2 x 4 one (23 against 42 GMAC/s,
// 4096 x 4096 hot in L3, 2026-11-23): its loop holds more than the registers.
template <int P, bool G32>
void compute(const IntxWeights& w, const Ws& ws, int64_t M, const float* bias, float* y, int64_t n0, int64_t n1) {
  const int64_t block = std::max<int64_t>(4, kRowBlockBytes / std::max<int64_t>(1, w.K / 2) / 4 * 4);
  const bool two_row_tiles = M <= 2 || P > 1;
  for (int64_t b0 = n0; b0 < n1; b0 += block) {
    const int64_t b1 = std::min(n1, b0 + block);
    int64_t n = b0;
    if (two_row_tiles)
      for (; n + 4 <= b1; n += 4) rows<2, 4, P, G32>(w, ws, M, n, bias, y);
    else
      for (; n + 2 <= b1; n += 2) rows<4, 2, P, G32>(w, ws, M, n, bias, y);
    for (; n < b1; ++n) {
      if (two_row_tiles) rows<2, 1, P, G32>(w, ws, M, n, bias, y);
      else rows<4, 1, P, G32>(w, ws, M, n, bias, y);
    }
  }
}

// 16 elements of x as float32.
inline __m512 load16(const float* p) { return _mm512_loadu_ps(p); }
inline __m512 load16(const half_t* p) { return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))); }
inline __m512 load16(const bf16_t* p) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))), 16));
}

}  // namespace

bool intx4_bf16_supported(const IntxWeights& w) {
  return w.bits == 4 && (w.group_size == 32 || w.group_size % kUnit == 0);
}

size_t intx4_bf16_workspace_bytes(const IntxWeights& w, int64_t M, int parts) {
  return static_cast<size_t>(parts * x_bytes(M, w.K) + M * (w.K / w.group_size) * 4);
}

template <typename T>
void intx4_prepare_bf16(const IntxWeights& w, const T* x, int64_t M, int parts, void* ws_out, int64_t m0,
                        int64_t m1) {
  const int64_t K = w.K, G = K / w.group_size;
  const Ws ws = workspace(ws_out, M, K, parts);
  auto* xsum = const_cast<float*>(ws.xsum);
  // vpermw indices: the even elements of 64 (two vectors of 32) first, then the odd ones
  alignas(64) uint16_t perm[32];
  for (int i = 0; i < 32; ++i) perm[i] = static_cast<uint16_t>(2 * i);
  const __m512i even = _mm512_load_si512(perm), odd = _mm512_add_epi16(even, _mm512_set1_epi16(1));
  for (int64_t m = m0; m < m1; ++m) {
    __m512 s = _mm512_setzero_ps();  // sum of the terms over the group so far
    for (int64_t k = 0; k < K; k += kUnit) {
      __m512i t[kMaxParts][2];  // term q of elements k + 32 h .. + 31, natural order
      for (int h = 0; h < 2; ++h) {
        if (k + 32 * h >= K) {  // the empty half of a last unit
          for (int q = 0; q < parts; ++q) t[q][h] = _mm512_setzero_si512();
          continue;
        }
        __m512 a = load16(x + m * K + k + 32 * h), b = load16(x + m * K + k + 32 * h + 16);
        for (int q = 0; q < parts; ++q) {
          const __m512i v = (__m512i)_mm512_cvtne2ps_pbh(b, a);  // a in the low half
          t[q][h] = v;
          const __m512 fa = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_castsi512_si256(v)), 16));
          const __m512 fb = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(v, 1)), 16));
          s = _mm512_add_ps(s, _mm512_add_ps(fa, fb));
          a = _mm512_sub_ps(a, fa);  // exact: what the next term holds
          b = _mm512_sub_ps(b, fb);
        }
        const int64_t end = k + 32 * h + 32;  // groups are multiples of 32 elements
        if (end % w.group_size == 0) {
          xsum[m * G + end / w.group_size - 1] = _mm512_reduce_add_ps(s);
          s = _mm512_setzero_ps();
        }
      }
      for (int q = 0; q < parts; ++q) {
        bf16_t* out = const_cast<bf16_t*>(ws.x[q]) + m * x_stride(K) + k;
        _mm512_storeu_si512(out, _mm512_permutex2var_epi16(t[q][0], even, t[q][1]));
        _mm512_storeu_si512(out + 32, _mm512_permutex2var_epi16(t[q][0], odd, t[q][1]));
      }
    }
  }
}

void intx4_compute_bf16(const IntxWeights& w, const void* ws_in, int64_t M, int parts, const float* bias, float* y,
                        int64_t n0, int64_t n1) {
  const Ws ws = workspace(ws_in, M, w.K, parts);
  const bool g32 = w.group_size == 32;
  switch (parts * 2 + g32) {
    case 2: return compute<1, false>(w, ws, M, bias, y, n0, n1);
    case 3: return compute<1, true>(w, ws, M, bias, y, n0, n1);
    case 4: return compute<2, false>(w, ws, M, bias, y, n0, n1);
    case 5: return compute<2, true>(w, ws, M, bias, y, n0, n1);
    case 6: return compute<3, false>(w, ws, M, bias, y, n0, n1);
    default: return compute<3, true>(w, ws, M, bias, y, n0, n1);
  }
}

template void intx4_prepare_bf16<float>(const IntxWeights&, const float*, int64_t, int, void*, int64_t, int64_t);
template void intx4_prepare_bf16<half_t>(const IntxWeights&, const half_t*, int64_t, int, void*, int64_t, int64_t);
template void intx4_prepare_bf16<bf16_t>(const IntxWeights&, const bf16_t*, int64_t, int, void*, int64_t, int64_t);

}  // namespace lowbit::cpu::avx512bf16
