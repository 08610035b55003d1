// 2- and 4-bit weights x 16/32-bit activations for small M (linear_intx's exact path),
// with vdpbf16ps on weight codes turned into bfloat16 in registers.
//
// Decoding: 32 packed bytes (a unit: 64 elements of a row at 4 bits, 128 at 2 bits) are
// zero-extended to 32 words. Byte j holds the FIELDS = 8 / BITS elements FIELDS*j + f in
// its bits BITS*f and up (docs/formats.md); each field u goes into the top BITS mantissa
// bits of bfloat16 1.0 (0x3f80), which gives exactly 1 + u / 2^BITS:
//   4 bits: ((w << 3) & 0x78) | 0x3f80, ((w >> 1) & 0x78) | 0x3f80
//   2 bits: ((w << 5) & 0x60) | 0x3f80, (w << 3), (w << 1), (w >> 1), same mask
// two bitwise operations per field vector, no table and no conversion. vdpbf16ps sums
// neighbouring pairs, so x is stored per unit as FIELDS streams of 32 (stream f: the
// elements FIELDS*j + f), and field vector f meets its stream in one step.
//
// Each product is exact in float32, so per group g of row n, in float32,
//   y += 2^BITS * scale[g] * sum((1 + u / 2^BITS) * x) - (2^BITS + 2^(BITS-1) + zp[g]) * scale[g] * sum(x),
// which is the float32 path's sum of (u - 2^(BITS-1) - zp) * scale * x in another order
// (the offset is 24 + zp at 4 bits, 6 + zp at 2 bits). The second term is about 5x the
// result for zero-mean x and up to ~60x for all-positive x (GELU / ReLU outputs); float32
// rounding grows by that factor (1 + u / 16 rather than 128 + u keeps the factor 6x smaller).
//
// x is a sum of P bfloat16 terms (hi = bf16(x), then bf16 of what is left, ...): P = 1
// for bfloat16 x; 2 for float16 x (exact: 11 significant bits); 3 for float32 x (exact:
// 24 bits), or 2 / 1 when torch.set_float32_matmul_precision allows ("high" / "medium":
// 16 / 8 significant bits, as torch's own "two bfloat16" float32 matmul). Each weight
// vector meets every term; sum(x) is taken of the terms, so the two parts of the formula
// above stay consistent.
// Lane i of a vdpbf16ps accumulator sums stream positions 2i and 2i + 1, i.e. the
// elements [2 * FIELDS * i, 2 * FIELDS * (i + 1)) of the unit: the 16 lanes cover the unit
// in order. A group smaller than the unit (4 bits: 32; 2 bits: 32 or 64) is a run of
// lanes, and its scale is applied per unit as a vector of 2 or 4 values.
#include <immintrin.h>

#include <algorithm>

#include "cpu/gemm_intx.h"

namespace lowbit::cpu::avx512bf16 {
namespace {

constexpr int64_t kUnitBytes = 32;  // packed bytes per decode step
constexpr int64_t kRowBlockBytes = int64_t{192} << 10;  // weight rows kept in L2 while all x rows pass

constexpr int kMaxParts = 3;

template <int BITS>
struct Fmt {
  static constexpr int kFields = 8 / BITS;               // elements per byte = streams per unit
  static constexpr int64_t kUnit = kUnitBytes * kFields;  // elements per decode step
  static constexpr float kMul = static_cast<float>(1 << BITS);                           // 2^BITS
  static constexpr float kOff = static_cast<float>((1 << BITS) + (1 << (BITS - 1)));     // 24 / 6
};

struct Ws {
  const bf16_t* x[kMaxParts];  // term q of x, [M, x_stride], units as FIELDS streams of 32
  const float* xsum;           // [M, G]: per group sum of the terms
};

// Elements per unit (decode step) at run time: Fmt<bits>::kUnit.
int64_t unit_elems(int bits) { return kUnitBytes * (8 / bits); }

// Row stride of the x terms: K rounded up to the unit (a last unit that the row fills
// partly holds zeros in the rest).
int64_t x_stride(int64_t K, int bits) {
  const int64_t unit = unit_elems(bits);
  return (K + unit - 1) / unit * unit;
}
// Bytes of one [M, x_stride] bfloat16 term of x (a multiple of 64).
int64_t x_bytes(int64_t M, int64_t K, int bits) { return M * x_stride(K, bits) * 2; }

Ws workspace(const void* ws, int64_t M, int64_t K, int bits, int parts) {
  const char* p = static_cast<const char*>(ws);
  const int64_t xb = x_bytes(M, K, bits);
  Ws r{};
  for (int q = 0; q < parts; ++q) r.x[q] = reinterpret_cast<const bf16_t*>(p + q * xb);
  r.xsum = reinterpret_cast<const float*>(p + parts * xb);
  return r;
}

// See the file comment: one unit of a row as 32 words (load_unit), then field f of each
// as bfloat16 1 + u / 2^BITS (field). The tile makes fields two at a time, where they are
// used (all four of a 2-bit unit at once would add to the register pressure).
// A masked load: for the last unit of a row that fills it partly (a multiple of 32
// elements) it reads nothing beyond the row's bytes and gives u = 0 (weight 1) for the
// rest, which meets the zeros of x there.
inline __m512i load_unit(const uint8_t* p, __mmask32 bytes_mask) {
  return _mm512_cvtepu8_epi16(_mm256_maskz_loadu_epi8(bytes_mask, p));
}

template <int BITS>
inline __m512bh field(__m512i w, int f) {  // f: a constant once the caller's loop is unrolled
  constexpr int kTop = 7 - BITS;  // lowest of the BITS top mantissa bits
  const int shift = kTop - BITS * f;  // moves field f there
  const __m512i t = shift >= 0 ? _mm512_slli_epi16(w, shift) : _mm512_srli_epi16(w, -shift);
  const __m512i mant = _mm512_set1_epi16(static_cast<short>(((1 << BITS) - 1) << kTop));
  return (__m512bh)_mm512_ternarylogic_epi32(t, mant, _mm512_set1_epi16(0x3f80), 0xea);  // (t & mant) | 1.0
}

inline __m512bh load_bh(const bf16_t* p) { return (__m512bh)_mm512_loadu_si512(p); }

// -sum over groups of (2^BITS + 2^(BITS-1) + zero_point[g]) * scale[g] * sum(x of group g)
// for one weight row and one row of x: the constant part of the file comment's formula,
// vectorized over the groups here so that the kernel's loop only applies the scales.
inline float offset_term(float off, const float* srow, ZeroPoints zrow, const float* xsum, int64_t G) {
  __m512 acc = _mm512_setzero_ps();
  const __m512 voff = _mm512_set1_ps(off);
  int64_t g = 0;
  for (; g + 16 <= G; g += 16) {
    __m512 o = voff;
    if (zrow.f32) o = _mm512_add_ps(voff, _mm512_loadu_ps(zrow.f32 + g));
    else if (zrow.i8) o = _mm512_add_ps(voff, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(zrow.i8 + g)))));
    acc = _mm512_fmadd_ps(_mm512_mul_ps(o, _mm512_loadu_ps(srow + g)), _mm512_loadu_ps(xsum + g), acc);
  }
  float r = _mm512_reduce_add_ps(acc);
  for (; g < G; ++g) r += no_contract((off + zrow[g]) * srow[g] * xsum[g]);  // as intx_int8_finish
  return -r;
}

// The scales of the GPU groups of one unit (from group g) as a vector over the 16 lanes:
// GPU = 1: one value; 2: lanes 0-7 / 8-15; 4: four runs of 4 lanes. Groups past G (a
// last unit the row fills partly) get 0.
template <int GPU>
inline __m512 unit_scales(const float* srow, int64_t g, int64_t G) {
  if constexpr (GPU == 1) {
    return _mm512_set1_ps(srow[g]);
  } else {
    const int64_t valid = std::min<int64_t>(GPU, G - g);
    const __m128 s = _mm_maskz_loadu_ps(static_cast<__mmask8>((1 << valid) - 1), srow + g);
    const __m512i idx = GPU == 2 ? _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0)
                                 : _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0);
    return _mm512_permutexvar_ps(idx, _mm512_castps128_ps512(s));
  }
}

// MR rows of x (from m) x NR weight rows (from n), all of K. P: terms of x. GPU: groups
// per unit (1: group_size a multiple of the unit; 2 / 4: smaller groups).
template <int BITS, int MR, int NR, int P, int GPU>
void tile(const IntxWeights& w, const Ws& ws, int64_t m, int64_t n, const float* bias, float* y) {
  using F = Fmt<BITS>;
  // 4 bits: fields 0 and 1 into two accumulator sets (two chains per output); 2 bits: one
  // set, whose MR x NR outputs are enough independent chains, and the 8 registers saved
  // keep the 2-bit tiles (four field vectors per unit) from spilling
  constexpr int kChains = BITS == 4 ? 2 : 1;
  const int64_t K = w.K, G = K / w.group_size, row_bytes = K * BITS / 8, xs = x_stride(K, BITS);
  const int64_t span = GPU > 1 ? F::kUnit : w.group_size;  // elements between two applications of the scales
  const uint8_t* wrow[NR];
  const float* srow[NR];
  for (int j = 0; j < NR; ++j) {
    wrow[j] = w.packed + (n + j) * row_bytes;
    srow[j] = w.scale + (n + j) * G;
  }
  // The weight rows two tiles ahead into L2, a line at a time as the kernel moves along
  // K, by the first tile of rows of x (the one that streams the weights from memory; the
  // next ones find them in L2). Against torch's int4 kernel in the same runs, M = 1:
  // 1.05x with it, 0.80x without (4096 x 4096, three alternating runs each on a noisy machine).
  const bool prefetch = m == 0 && n + 3 * NR <= w.N;
  const uint8_t* pf = w.packed + (n + 2 * NR) * row_bytes;
  __m512 tot[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) tot[i][j] = _mm512_setzero_ps();
  for (int64_t k0 = 0, g = 0; k0 < K; k0 += span, g += GPU) {
    __m512 acc[kChains][MR][NR];
    for (int h = 0; h < kChains; ++h)
      for (int i = 0; i < MR; ++i)
        for (int j = 0; j < NR; ++j) acc[h][i][j] = _mm512_setzero_ps();
    const int64_t kend = std::min(K, k0 + span);
    for (int64_t k = k0; k < kend; k += F::kUnit) {
      const uint64_t kb = static_cast<uint64_t>(k) / F::kFields;  // byte offset in a row
      if (prefetch && (kb & 63) == 0)
        for (int j = 0; j < NR; ++j) _mm_prefetch(reinterpret_cast<const char*>(pf + j * row_bytes + kb), _MM_HINT_T1);
      // every byte of a full unit; the row's bytes of a partial last one (no branch per row)
      const __mmask32 bytes_mask =
          k + F::kUnit <= K ? ~__mmask32{0} : static_cast<__mmask32>((uint64_t{1} << ((K - k) / F::kFields)) - 1);
      // fully unrolled: a loop over j would index the accumulators at run time, in memory
#pragma GCC unroll 4
      for (int j = 0; j < NR; ++j) {
        const __m512i wv = load_unit(wrow[j] + kb, bytes_mask);
        // fields in pairs (0, 1), then (2, 3) at 2 bits: one vector per accumulator chain.
        // A plain loop: a lambda here (capturing acc) made GCC keep acc on the stack.
#pragma GCC unroll 2
        for (int f = 0; f < F::kFields; f += 2) {
          const __m512bh v0 = field<BITS>(wv, f), v1 = field<BITS>(wv, f + 1);
          for (int i = 0; i < MR; ++i)
            for (int q = 0; q < P; ++q) {
              const bf16_t* xq = ws.x[q] + (m + i) * xs + k + 32 * f;
              acc[0][i][j] = _mm512_dpbf16_ps(acc[0][i][j], v0, load_bh(xq));
              acc[kChains - 1][i][j] = _mm512_dpbf16_ps(acc[kChains - 1][i][j], v1, load_bh(xq + 32));
            }
        }
      }
    }
    for (int j = 0; j < NR; ++j) {
      const __m512 sv = unit_scales<GPU>(srow[j], g, G);
      for (int i = 0; i < MR; ++i) {
        const __m512 a = kChains == 2 ? _mm512_add_ps(acc[0][i][j], acc[kChains - 1][i][j]) : acc[0][i][j];
        tot[i][j] = _mm512_fmadd_ps(a, sv, tot[i][j]);
      }
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j)
      y[(m + i) * w.N + n + j] = F::kMul * _mm512_reduce_add_ps(tot[i][j]) +
                                 offset_term(F::kOff, srow[j], w.zero_point + (n + j) * G, ws.xsum + (m + i) * G, G) +
                                 (bias ? bias[n + j] : 0.f);
}

// All M rows for NR weight rows from n: tiles of up to MR rows of x, so each weight is
// decoded once per MR rows.
template <int BITS, int MR, int NR, int P, int GPU>
void rows(const IntxWeights& w, const Ws& ws, int64_t M, int64_t n, const float* bias, float* y) {
  int64_t m = 0;
  for (; m + MR <= M; m += MR) tile<BITS, MR, NR, P, GPU>(w, ws, m, n, bias, y);
  switch (M - m) {
    case 3: if constexpr (MR > 3) tile<BITS, 3, NR, P, GPU>(w, ws, m, n, bias, y); break;
    case 2: if constexpr (MR > 2) tile<BITS, 2, NR, P, GPU>(w, ws, m, n, bias, y); break;
    case 1: if constexpr (MR > 1) tile<BITS, 1, NR, P, GPU>(w, ws, m, n, bias, y); break;
    default: break;
  }
}

// Tiles of 2 rows of x x 4 weight rows (M <= 2, or x in 2-3 terms), else 4 x 2: 8 zmm
// accumulators per chain and 8 totals either way, within the 32 registers. With 2-3
// terms the 4 x 2 tile ran at half the speed of the 2 x 4 one (23 against 42 GMAC/s,
// 4-bit 4096 x 4096 hot in L3, 2026-11-23): its loop holds more than the registers.
template <int BITS, int P, int GPU>
void compute(const IntxWeights& w, const Ws& ws, int64_t M, const float* bias, float* y, int64_t n0, int64_t n1) {
  const int64_t block = std::max<int64_t>(4, kRowBlockBytes / std::max<int64_t>(1, w.K * BITS / 8) / 4 * 4);
  const bool two_row_tiles = M <= 2 || P > 1;
  for (int64_t b0 = n0; b0 < n1; b0 += block) {
    const int64_t b1 = std::min(n1, b0 + block);
    int64_t n = b0;
    if (two_row_tiles)
      for (; n + 4 <= b1; n += 4) rows<BITS, 2, 4, P, GPU>(w, ws, M, n, bias, y);
    else
      for (; n + 2 <= b1; n += 2) rows<BITS, 4, 2, P, GPU>(w, ws, M, n, bias, y);
    for (; n < b1; ++n) {
      if (two_row_tiles) rows<BITS, 2, 1, P, GPU>(w, ws, M, n, bias, y);
      else rows<BITS, 4, 1, P, GPU>(w, ws, M, n, bias, y);
    }
  }
}

template <int BITS, int P>
void compute_groups(const IntxWeights& w, const Ws& ws, int64_t M, const float* bias, float* y, int64_t n0,
                    int64_t n1) {
  // groups per unit: 4 only at 2 bits with groups of 32 (intx_bf16_supported: groups >= 32)
  const int64_t gpu = w.group_size < Fmt<BITS>::kUnit ? Fmt<BITS>::kUnit / w.group_size : 1;
  if constexpr (BITS == 2)
    if (gpu == 4) return compute<BITS, P, 4>(w, ws, M, bias, y, n0, n1);
  if (gpu == 2) return compute<BITS, P, 2>(w, ws, M, bias, y, n0, n1);
  return compute<BITS, P, 1>(w, ws, M, bias, y, n0, n1);
}

template <int BITS>
void compute_bits(const IntxWeights& w, const Ws& ws, int64_t M, int parts, const float* bias, float* y, int64_t n0,
                  int64_t n1) {
  switch (parts) {
    case 1: return compute_groups<BITS, 1>(w, ws, M, bias, y, n0, n1);
    case 2: return compute_groups<BITS, 2>(w, ws, M, bias, y, n0, n1);
    default: return compute_groups<BITS, 3>(w, ws, M, bias, y, n0, n1);
  }
}

// 16 elements of x as float32.
inline __m512 load16(const float* p) { return _mm512_loadu_ps(p); }
inline __m512 load16(const half_t* p) { return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))); }
inline __m512 load16(const bf16_t* p) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))), 16));
}

}  // namespace

bool intx_bf16_supported(const IntxWeights& w) {
  if (w.bits != 4 && w.bits != 2) return false;
  const int64_t unit = unit_elems(w.bits);
  return w.group_size >= 32 && (w.group_size % unit == 0 || unit % w.group_size == 0);
}

size_t intx_bf16_workspace_bytes(const IntxWeights& w, int64_t M, int parts) {
  return static_cast<size_t>(parts * x_bytes(M, w.K, w.bits) + M * (w.K / w.group_size) * 4);
}

template <typename T>
void intx_prepare_bf16(const IntxWeights& w, const T* x, int64_t M, int parts, void* ws_out, int64_t m0,
                       int64_t m1) {
  const int64_t K = w.K, G = K / w.group_size, xs = x_stride(K, w.bits);
  const int fields = 8 / w.bits;
  const int64_t unit = unit_elems(w.bits);
  const Ws ws = workspace(ws_out, M, K, w.bits, parts);
  auto* xsum = const_cast<float*>(ws.xsum);
  // vpermw indices: the even elements of 64 (two vectors of 32), then the odd ones
  alignas(64) uint16_t perm[32];
  for (int i = 0; i < 32; ++i) perm[i] = static_cast<uint16_t>(2 * i);
  const __m512i even = _mm512_load_si512(perm), odd = _mm512_add_epi16(even, _mm512_set1_epi16(1));
  for (int64_t m = m0; m < m1; ++m) {
    __m512 s = _mm512_setzero_ps();  // sum of the terms over the group so far
    for (int64_t k = 0; k < K; k += unit) {
      __m512i t[kMaxParts][4];  // term q of elements k + 32 h .. + 31, natural order
      for (int h = 0; h < fields; ++h) {
        if (k + 32 * h >= K) {  // the empty part of a last unit
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
        bf16_t* out = const_cast<bf16_t*>(ws.x[q]) + m * xs + k;
        if (fields == 2) {  // streams: even, odd elements of the 64
          _mm512_storeu_si512(out, _mm512_permutex2var_epi16(t[q][0], even, t[q][1]));
          _mm512_storeu_si512(out + 32, _mm512_permutex2var_epi16(t[q][0], odd, t[q][1]));
        } else {  // elements 4j + f: the even / odd split applied twice
          const __m512i e0 = _mm512_permutex2var_epi16(t[q][0], even, t[q][1]);  // 0, 2, .. 62
          const __m512i o0 = _mm512_permutex2var_epi16(t[q][0], odd, t[q][1]);   // 1, 3, .. 63
          const __m512i e1 = _mm512_permutex2var_epi16(t[q][2], even, t[q][3]);  // 64, 66, .. 126
          const __m512i o1 = _mm512_permutex2var_epi16(t[q][2], odd, t[q][3]);   // 65, 67, .. 127
          _mm512_storeu_si512(out, _mm512_permutex2var_epi16(e0, even, e1));       // 0, 4, .. 124
          _mm512_storeu_si512(out + 32, _mm512_permutex2var_epi16(o0, even, o1));  // 1, 5, .. 125
          _mm512_storeu_si512(out + 64, _mm512_permutex2var_epi16(e0, odd, e1));   // 2, 6, .. 126
          _mm512_storeu_si512(out + 96, _mm512_permutex2var_epi16(o0, odd, o1));   // 3, 7, .. 127
        }
      }
    }
  }
}

void intx_compute_bf16(const IntxWeights& w, const void* ws_in, int64_t M, int parts, const float* bias, float* y,
                       int64_t n0, int64_t n1) {
  const Ws ws = workspace(ws_in, M, w.K, w.bits, parts);
  if (w.bits == 4) return compute_bits<4>(w, ws, M, parts, bias, y, n0, n1);
  return compute_bits<2>(w, ws, M, parts, bias, y, n0, n1);
}

template void intx_prepare_bf16<float>(const IntxWeights&, const float*, int64_t, int, void*, int64_t, int64_t);
template void intx_prepare_bf16<half_t>(const IntxWeights&, const half_t*, int64_t, int, void*, int64_t, int64_t);
template void intx_prepare_bf16<bf16_t>(const IntxWeights&, const bf16_t*, int64_t, int, void*, int64_t, int64_t);

}  // namespace lowbit::cpu::avx512bf16
