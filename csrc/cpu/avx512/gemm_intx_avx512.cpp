// AVX-512 VNNI kernel of the int8-activation path of linear_intx for 4-bit weights and
// M > 1 (docs/kernels.md, "2- and 4-bit weights").
//
// It reads the canonical packed rows and the AVX2 path's activation workspace
// (avx2::intx_prepare_int8: x codes permuted per 64 elements as [even | odd], per-block
// scales expanded to one float per 8 elements, per-group sums for the zero-point term).
// A 128-element chunk is 64 packed bytes: their low nibbles are the even elements, their
// high nibbles the odd ones; two 64-byte loads of x and two 128-bit-lane shuffles give the
// matching even / odd x codes. Two vpdpbusd (unsigned nibble x signed code) then leave in
// int32 lane l the dot product of elements [8l, 8l + 8) of the chunk, which share one x
// block (32 elements) and one weight group (group_size % 128 == 0): the lane is converted,
// scaled by the group's scale and fma'd with the lane's block scale into a float
// accumulator.
//
// Tiles of 4 rows of x x 4 weight rows (16 zmm accumulators; 32 registers in all), so each
// x chunk loaded serves 4 weight rows: the AVX2 kernel (16 registers) takes one weight row
// per pass and re-reads all of x from L2 for every weight row once K * 1.5 bytes x 4 rows
// exceed the L1 (K = 11008: 66 KB per weight row).
#include <immintrin.h>

#include <algorithm>
#include <cstdint>

#include "cpu/gemm_intx.h"
#include "cpu/tile_dispatch.h"

namespace lowbit::cpu::avx512 {
namespace {

constexpr int64_t kChunk = 128;  // elements per zmm step (64 packed bytes)
constexpr int kTileM = 4, kTileN = 4;

// out[i][j] = sum over k of the scaled chunk dot products of x row i and weight row j.
template <int MR, int NR>
inline void tile(const uint8_t* w, int64_t row_bytes, const float* scale, int64_t G, int64_t g, const int8_t* q,
                 const float* lane_dx, int64_t K, float (*out)[kTileN]) {
  const __m512i nib = _mm512_set1_epi8(0x0f);
  __m512 acc[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) acc[i][j] = _mm512_setzero_ps();
  for (int64_t k = 0; k < K; k += kChunk) {
    __m512i lo[NR], hi[NR];
    for (int j = 0; j < NR; ++j) {
      const __m512i v = _mm512_loadu_si512(w + j * row_bytes + k / 2);
      lo[j] = _mm512_and_si512(v, nib);
      hi[j] = _mm512_and_si512(_mm512_srli_epi16(v, 4), nib);
    }
    const int64_t gi = k / g;
    for (int i = 0; i < MR; ++i) {
      const __m512i a = _mm512_loadu_si512(q + i * K + k), b = _mm512_loadu_si512(q + i * K + k + 64);
      const __m512i xe = _mm512_shuffle_i64x2(a, b, _MM_SHUFFLE(1, 0, 1, 0));  // even elements of the chunk
      const __m512i xo = _mm512_shuffle_i64x2(a, b, _MM_SHUFFLE(3, 2, 3, 2));  // odd elements
      const __m512 ls = _mm512_loadu_ps(lane_dx + i * (K / 8) + k / 8);
      for (int j = 0; j < NR; ++j) {
        const __m512i d = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), lo[j], xe), hi[j], xo);
        const __m512 f = _mm512_mul_ps(_mm512_cvtepi32_ps(d), _mm512_set1_ps(scale[j * G + gi]));
        acc[i][j] = _mm512_fmadd_ps(f, ls, acc[i][j]);
      }
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) out[i][j] = _mm512_reduce_add_ps(acc[i][j]);
}

}  // namespace

bool intx_int8_supported(const IntxWeights& w) {
  return w.bits == 4 && w.K % kChunk == 0 && w.group_size % kChunk == 0 && avx2::intx_int8_supported(w);
}

void intx_compute_int8(const IntxWeights& w, const void* ws, int64_t M, const float* bias, float* y, int64_t n0,
                       int64_t n1) {
  const int64_t K = w.K, G = K / w.group_size, row_bytes = K / 2;
  const IntxInt8Ws s = intx_int8_ws(const_cast<void*>(ws), M, K, G);
  // Blocks of weight rows of about 256 KB stay in L2 while every group of 4 rows of x passes.
  const int64_t nb = std::max<int64_t>(kTileN, (int64_t{256} << 10) / row_bytes / kTileN * kTileN);
  for (int64_t b0 = n0; b0 < n1; b0 += nb) {
    const int64_t b1 = std::min(n1, b0 + nb);
    for (int64_t m = 0; m < M; m += kTileM) {
      const int mr = static_cast<int>(std::min<int64_t>(kTileM, M - m));
      for (int64_t n = b0; n < b1; n += kTileN) {
        const int nr = static_cast<int>(std::min<int64_t>(kTileN, b1 - n));
        float out[kTileM][kTileN];
        const uint8_t* wp = w.packed + n * row_bytes;
        const float* sp = w.scale + n * G;
        const int8_t* qp = s.q + m * K;
        const float* lp = s.lane_dx + m * (K / 8);
        dispatch_tile<kTileM, kTileN>(mr, nr, [&](auto mr_c, auto nr_c) {
          tile<decltype(mr_c)::value, decltype(nr_c)::value>(wp, row_bytes, sp, G, w.group_size, qp, lp, K, out);
        });
        for (int i = 0; i < mr; ++i)
          for (int j = 0; j < nr; ++j)
            y[(m + i) * w.N + n + j] = intx_int8_finish(w, s.xsum + (m + i) * G, n + j, out[i][j], bias);
      }
    }
  }
}

}  // namespace lowbit::cpu::avx512
