// 4-bit weights x bfloat16 activations for 1 <= M < 64 (linear_intx's exact path):
// vdpbf16ps on weight codes turned into bfloat16 in registers, 32 weights per instruction.
//
// A packed byte holds elements 2i (low nibble) and 2i + 1 (high nibble) of a row, so 16
// bytes zero-extended to the 16 dword lanes of a zmm hold the pairs that vdpbf16ps
// multiplies with (x[2i], x[2i + 1]) of 32 consecutive bfloat16 inputs. Each nibble u
// goes into the mantissa of bfloat16 0x4300 (128.0), which gives exactly 128 + u: three
// bitwise operations, no table and no conversion. Each product is exact in float32, so
// per group g of row n, in float32,
//   y += scale[g] * sum((128 + u) * x) - (136 + zero_point[g]) * scale[g] * sum(x),
// which is the float32 path's sum of (u - 8 - zp) * scale * x in another order. The two
// terms are up to ~300x the group's result for all-positive x (GELU / ReLU outputs), so
// that float32 rounding reaches ~2e-5 of it there: 100x below the bfloat16 rounding of y.
// sum(x) per group and row comes from the workspace (intx4_prepare_bf16).
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "cpu/gemm_intx.h"

namespace lowbit::cpu::avx512bf16 {
namespace {

constexpr int64_t kChunk = 32;        // weights per vdpbf16ps
constexpr int64_t kRowBlockBytes = int64_t{192} << 10;  // weight rows kept in L2 while all x rows pass

struct Ws {
  const bf16_t* x;    // [M, K] as given
  const float* xsum;  // [M, G]
};

// Bytes of the x copy at the start of the workspace; the sums follow, 64-byte aligned.
int64_t x_bytes(int64_t M, int64_t K) { return (M * K * 2 + 63) / 64 * 64; }

Ws workspace(const void* ws, int64_t M, int64_t K) {
  return {static_cast<const bf16_t*>(ws), reinterpret_cast<const float*>(static_cast<const char*>(ws) + x_bytes(M, K))};
}

// 16 packed bytes -> the bfloat16 pairs (128 + u[2i], 128 + u[2i + 1]): bfloat16 0x43xx
// with mantissa bits xx = u is exactly 128 + u (exponent 2^7, 7 mantissa bits), so the
// nibbles only need to be moved into the mantissas: no table, no conversion.
inline __m512bh decode32(const uint8_t* p) {
  const __m512i b = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  // (b | b << 12) & 0x000f000f puts the low nibble in bits 0-3 and the high one in 16-19
  const __m512i u = _mm512_ternarylogic_epi32(b, _mm512_slli_epi32(b, 12), _mm512_set1_epi32(0x000f000f), 0xa8);
  return (__m512bh)_mm512_or_si512(u, _mm512_set1_epi32(0x43004300));
}

// MR rows of x (from m) x NR weight rows (from n), all of K.
template <int MR, int NR>
void tile(const IntxWeights& w, const Ws& ws, int64_t m, int64_t n, const float* bias, float* y) {
  const int64_t K = w.K, G = K / w.group_size, row_bytes = K / 2;
  __m512 tot[MR][NR];
  float corr[MR][NR] = {};
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) tot[i][j] = _mm512_setzero_ps();
  for (int64_t g = 0; g < G; ++g) {
    __m512 acc[MR][NR];
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NR; ++j) acc[i][j] = _mm512_setzero_ps();
    const int64_t k0 = g * w.group_size;
    // The weight rows two tiles ahead into L2 (a line per 128 weights): with one or two
    // rows of x the kernel streams the weights from memory. Against torch's int4 kernel
    // in the same runs, M = 1: 1.05x with it, 0.80x without (4096 x 4096, three
    // alternating runs each on a noisy machine).
    if (MR <= 2)
      for (int j = 0; j < NR; ++j)
        if (n + 2 * NR + j < w.N)
          for (int64_t b = k0 / 2; b < (k0 + w.group_size) / 2; b += 64)
            _mm_prefetch(reinterpret_cast<const char*>(w.packed + (n + 2 * NR + j) * row_bytes + b), _MM_HINT_T1);
    for (int64_t k = k0; k < k0 + w.group_size; k += kChunk) {
      __m512bh xv[MR];
      for (int i = 0; i < MR; ++i) xv[i] = (__m512bh)_mm512_loadu_si512(ws.x + (m + i) * K + k);
      for (int j = 0; j < NR; ++j) {
        const __m512bh wv = decode32(w.packed + (n + j) * row_bytes + k / 2);
        for (int i = 0; i < MR; ++i) acc[i][j] = _mm512_dpbf16_ps(acc[i][j], wv, xv[i]);
      }
    }
    for (int j = 0; j < NR; ++j) {
      const float s = w.scale[(n + j) * G + g];
      // (u - 8 - zp) * s = (128 + u) * s - (136 + zp) * s
      const float c = -(136.f + (w.zero_point ? w.zero_point[(n + j) * G + g] : 0.f)) * s;
      const __m512 sv = _mm512_set1_ps(s);
      for (int i = 0; i < MR; ++i) {
        tot[i][j] = _mm512_fmadd_ps(acc[i][j], sv, tot[i][j]);
        corr[i][j] += c * ws.xsum[(m + i) * G + g];
      }
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j)
      y[(m + i) * w.N + n + j] = _mm512_reduce_add_ps(tot[i][j]) + corr[i][j] + (bias ? bias[n + j] : 0.f);
}

// All M rows for NR weight rows from n: tiles of up to MR rows of x, so each weight is
// decoded once per MR rows.
template <int MR, int NR>
void rows(const IntxWeights& w, const Ws& ws, int64_t M, int64_t n, const float* bias, float* y) {
  int64_t m = 0;
  for (; m + MR <= M; m += MR) tile<MR, NR>(w, ws, m, n, bias, y);
  switch (M - m) {
    case 3: if constexpr (MR > 3) tile<3, NR>(w, ws, m, n, bias, y); break;
    case 2: if constexpr (MR > 2) tile<2, NR>(w, ws, m, n, bias, y); break;
    case 1: if constexpr (MR > 1) tile<1, NR>(w, ws, m, n, bias, y); break;
    default: break;
  }
}

// Up to 2 rows of x: 4 weight rows per tile; more: 4 rows of x x 2 weight rows (16 zmm
// accumulators either way, within the 32 registers).
template <int NR>
void weight_rows(const IntxWeights& w, const Ws& ws, int64_t M, int64_t n, const float* bias, float* y) {
  if (M <= 2) rows<2, NR>(w, ws, M, n, bias, y);
  else rows<4, NR>(w, ws, M, n, bias, y);
}

}  // namespace

bool intx4_bf16_supported(const IntxWeights& w) {
  return w.bits == 4 && w.K % kChunk == 0 && w.group_size % kChunk == 0;
}

size_t intx4_bf16_workspace_bytes(const IntxWeights& w, int64_t M) {
  return static_cast<size_t>(x_bytes(M, w.K) + M * (w.K / w.group_size) * 4);
}

void intx4_prepare_bf16(const IntxWeights& w, const bf16_t* x, int64_t M, void* ws_out, int64_t m0, int64_t m1) {
  const int64_t K = w.K, G = K / w.group_size;
  auto* xc = static_cast<bf16_t*>(ws_out);
  auto* xsum = const_cast<float*>(workspace(ws_out, M, K).xsum);
  std::memcpy(xc + m0 * K, x + m0 * K, static_cast<size_t>((m1 - m0) * K) * sizeof(bf16_t));
  for (int64_t m = m0; m < m1; ++m)
    for (int64_t g = 0; g < G; ++g) {
      __m512 s = _mm512_setzero_ps();
      for (int64_t k = g * w.group_size; k < (g + 1) * w.group_size; k += 16) {
        const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + m * K + k));
        s = _mm512_add_ps(s, _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)));
      }
      xsum[m * G + g] = _mm512_reduce_add_ps(s);
    }
}

void intx4_compute_bf16(const IntxWeights& w, const void* ws_in, int64_t M, const float* bias, float* y, int64_t n0,
                        int64_t n1) {
  const Ws ws = workspace(ws_in, M, w.K);
  const int64_t block = std::max<int64_t>(4, kRowBlockBytes / std::max<int64_t>(1, w.K / 2) / 4 * 4);
  for (int64_t b0 = n0; b0 < n1; b0 += block) {
    const int64_t b1 = std::min(n1, b0 + block);
    int64_t n = b0;
    if (M <= 2)
      for (; n + 4 <= b1; n += 4) weight_rows<4>(w, ws, M, n, bias, y);
    else
      for (; n + 2 <= b1; n += 2) weight_rows<2>(w, ws, M, n, bias, y);
    for (; n < b1; ++n) weight_rows<1>(w, ws, M, n, bias, y);
  }
}

}  // namespace lowbit::cpu::avx512bf16
