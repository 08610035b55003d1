// The packing half of the large-M path for bfloat16 activations (cpu/panel_gemm.h):
// a format's decoder (the Dec of panel_gemm_avx2.h: v8(n, k) gives 8 dequantized
// weights) fills a panel of 128 columns x 256 inputs with bfloat16 weight pairs, and
// avx512bf16::panel_gemm (compiled with -mavx512bf16) multiplies it with every row of x.
// Each weight is decoded and rounded once per call (round half to even, as torch's
// float -> bfloat16 conversion); no float copy of the weight is made.
//
// For files compiled with -mavx2 -mfma -mf16c only; internal linkage (vec_avx2.h).
#pragma once
#if defined(LOWBIT_HAVE_AVX512_BF16)
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <new>

#include "cpu/avx2/vec_avx2.h"
#include "cpu/panel_gemm.h"

namespace lowbit::cpu::avx2 {
namespace {

constexpr int64_t kBf16PanelCols = 128, kBf16PanelK = 256;

// The functions that convert to bfloat16 are compiled for AVX512_BF16 as well (they run
// only where avx512bf16::panel_gemm does), for vcvtneps2bf16: one instruction for what
// takes eight in AVX2 (bf16_bits). The decoders, plain AVX2, inline into them.
#define LOWBIT_BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))

// Four (k, k + 1) bfloat16 pairs of one column, k .. k + 7, as the 32-bit lanes of a
// 128-bit vector; round half to even, NaN stays NaN (vcvtneps2bf16).
template <class Dec>
LOWBIT_BF16_TARGET inline __m128i column_pairs(const Dec& dec, int64_t n, int64_t k) {
  return (__m128i)_mm256_cvtneps_pbh(dec.v8(n, k));
}

// Columns [c0, c0 + ncols) x inputs [k0, k0 + kc) (kc % 8 == 0) -> panel, layout of
// cpu/panel_gemm.h; columns past ncols are zero. Eight columns x eight inputs at a
// time: a 4 x 8 transpose of pairs turns the columns' vectors into four 32-byte rows.
template <class Dec>
LOWBIT_BF16_TARGET void pack_panel_bf16(const Dec& dec, int64_t c0, int64_t ncols, int64_t k0, int64_t kc,
                                        uint32_t* panel) {
  const int64_t kpairs = kc / 2;
  const int64_t nstrips = (ncols + kPanelStripBf16 - 1) / kPanelStripBf16;
  for (int64_t st = 0; st < nstrips; ++st) {
    uint32_t* sp = panel + st * kpairs * kPanelStripBf16;
    for (int64_t c8 = 0; c8 < kPanelStripBf16; c8 += 8) {
      const int64_t n = st * kPanelStripBf16 + c8;  // panel-relative column
      const int64_t valid = std::clamp<int64_t>(ncols - n, 0, 8);
      for (int64_t k = 0; k < kc; k += 8) {
        __m128i r[8];
        for (int i = 0; i < 8; ++i) r[i] = i < valid ? column_pairs(dec, c0 + n + i, k0 + k) : _mm_setzero_si128();
        const __m256i a0 = _mm256_set_m128i(r[4], r[0]), a1 = _mm256_set_m128i(r[5], r[1]);
        const __m256i a2 = _mm256_set_m128i(r[6], r[2]), a3 = _mm256_set_m128i(r[7], r[3]);
        const __m256i t0 = _mm256_unpacklo_epi32(a0, a1), t1 = _mm256_unpackhi_epi32(a0, a1);
        const __m256i t2 = _mm256_unpacklo_epi32(a2, a3), t3 = _mm256_unpackhi_epi32(a2, a3);
        uint32_t* dst = sp + (k / 2) * kPanelStripBf16 + c8;
        _mm256_store_si256(reinterpret_cast<__m256i*>(dst), _mm256_unpacklo_epi64(t0, t2));
        _mm256_store_si256(reinterpret_cast<__m256i*>(dst + kPanelStripBf16), _mm256_unpackhi_epi64(t0, t2));
        _mm256_store_si256(reinterpret_cast<__m256i*>(dst + 2 * kPanelStripBf16), _mm256_unpacklo_epi64(t1, t3));
        _mm256_store_si256(reinterpret_cast<__m256i*>(dst + 3 * kPanelStripBf16), _mm256_unpackhi_epi64(t1, t3));
      }
    }
  }
}

// y[M, n0:n1] = x[M, K] @ W[n0:n1, :]^T (+ bias) with x bfloat16 (K % 8 == 0), y float32
// with row stride ldy. With col_scale, dec gives unscaled codes and W = codes * col_scale[n].
template <class Dec>
LOWBIT_BF16_TARGET void gemm_packed_bf16(const Dec& dec, const bf16_t* x, const float* bias, float* y, int64_t M, int64_t K, int64_t ldy,
                      int64_t n0, int64_t n1, const float* col_scale = nullptr) {
  auto* panel = static_cast<uint32_t*>(_mm_malloc(sizeof(uint32_t) * kBf16PanelCols * kBf16PanelK / 2, 64));
  if (panel == nullptr) throw std::bad_alloc();
  for (int64_t c0 = n0; c0 < n1; c0 += kBf16PanelCols) {
    const int64_t ncols = std::min(kBf16PanelCols, n1 - c0);
    for (int64_t k0 = 0; k0 < K; k0 += kBf16PanelK) {
      const int64_t kc = std::min(kBf16PanelK, K - k0);
      pack_panel_bf16(dec, c0, ncols, k0, kc, panel);
      const bool last = k0 + kc >= K;
      avx512bf16::panel_gemm(panel, ncols, kc, x + k0, K, M, y + c0, ldy, k0 == 0, bias ? bias + c0 : nullptr,
                             col_scale && last ? col_scale + c0 : nullptr);
    }
  }
  _mm_free(panel);
}

}  // namespace
}  // namespace lowbit::cpu::avx2
#endif  // LOWBIT_HAVE_AVX512_BF16
