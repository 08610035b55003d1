// AVX-512 VNNI kernels of the W8A8 path of linear_int8 (cpu/gemm_int8.h has the math).
//
// vpdpbusd multiplies 4 unsigned bytes by 4 signed bytes and adds the 4 products to an
// int32 lane, in one instruction and without the int16 saturation of AVX2's maddubs
// (which is why the AVX2 kernels need the sign trick, 4 instructions per 32 products).
// The weights are made the unsigned operand by flipping their sign bit, u = w + 128:
//   sum_k u[k] * xq[k] = sum_k w[k] * xq[k] + 128 * sum_k xq[k],
// so each output subtracts 128 * (row sum of xq). vpdpbusd adds modulo 2^32 and the true
// sum fits in int32 (K <= kInt8ActMaxK), so the difference is exact: the int32 result,
// and with the same float epilogue the output bits, equal the AVX2 and portable kernels'.
//
//   M = 1:   gemv, 4 weight rows x 64 k per step, prefetch 8 rows ahead (memory-bound).
//   M > 1:   4 x 4 tiles of (rows of x) x (weight rows) on the canonical [N, K] layout:
//            per 64 k, 4 loads + 4 sign flips of weights and 4 loads of x feed 16 vpdpbusd;
//            blocks of weight rows stay in L2 while all rows of x pass over them.
// K tails are read with byte-masked loads (masked weight bytes become 0x80, i.e. u = 128,
// against masked x bytes 0: no contribution).
#include <immintrin.h>

#include <cstdint>

#include "cpu/gemm_int8.h"
#include "cpu/no_contract.h"
#include "cpu/tile_dispatch.h"

namespace lowbit::cpu::avx512 {
namespace {

inline __m512i flip(__m512i w) { return _mm512_xor_si512(w, _mm512_set1_epi8(static_cast<char>(0x80))); }

inline __mmask64 tail_mask(int64_t n) { return n >= 64 ? ~__mmask64{0} : (__mmask64{1} << n) - 1; }

// sum_k xq[k] over one padded row (ldq is a multiple of 32, padding is zero).
inline int32_t row_sum(const int8_t* xq, int64_t ldq) {
  const __m512i ones = _mm512_set1_epi8(1);
  __m512i acc = _mm512_setzero_si512();
  for (int64_t k = 0; k < ldq; k += 64)
    acc = _mm512_dpbusd_epi32(acc, ones, _mm512_maskz_loadu_epi8(tail_mask(ldq - k), xq + k));
  return _mm512_reduce_add_epi32(acc);
}

// One row of x, NR weight rows: out[j] = sum_k (w[j, k] + 128) * xq[k].
template <int NR>
inline void gemv(const int8_t* xq, const int8_t* w, int64_t K, int32_t* out) {
  __m512i acc[NR];
  for (int j = 0; j < NR; ++j) acc[j] = _mm512_setzero_si512();
  int64_t k = 0;
  for (; k + 64 <= K; k += 64) {
    const __m512i xv = _mm512_loadu_si512(xq + k);
    for (int j = 0; j < NR; ++j) {
      // one line per 64 bytes read, 2 * NR rows ahead (as the AVX2 gemv)
      _mm_prefetch(reinterpret_cast<const char*>(w + (j + 2 * NR) * K + k), _MM_HINT_T1);
      acc[j] = _mm512_dpbusd_epi32(acc[j], flip(_mm512_loadu_si512(w + j * K + k)), xv);
    }
  }
  if (k < K) {
    const __mmask64 m = tail_mask(K - k);
    const __m512i xv = _mm512_maskz_loadu_epi8(m, xq + k);
    for (int j = 0; j < NR; ++j)
      acc[j] = _mm512_dpbusd_epi32(acc[j], flip(_mm512_maskz_loadu_epi8(m, w + j * K + k)), xv);
  }
  for (int j = 0; j < NR; ++j) out[j] = _mm512_reduce_add_epi32(acc[j]);
}

// MR rows of x (stride ldq) x NR weight rows: out[i][j] = sum_k (w[j, k] + 128) * xq[i, k].
template <int MR, int NR>
inline void tile(const int8_t* xq, int64_t ldq, const int8_t* w, int64_t K, int32_t (*out)[4]) {
  __m512i acc[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) acc[i][j] = _mm512_setzero_si512();
  int64_t k = 0;
  for (; k + 64 <= K; k += 64) {
    __m512i wv[NR];
    for (int j = 0; j < NR; ++j) wv[j] = flip(_mm512_loadu_si512(w + j * K + k));
    for (int i = 0; i < MR; ++i) {
      const __m512i xv = _mm512_loadu_si512(xq + i * ldq + k);
      for (int j = 0; j < NR; ++j) acc[i][j] = _mm512_dpbusd_epi32(acc[i][j], wv[j], xv);
    }
  }
  if (k < K) {
    const __mmask64 m = tail_mask(K - k);
    __m512i wv[NR];
    for (int j = 0; j < NR; ++j) wv[j] = flip(_mm512_maskz_loadu_epi8(m, w + j * K + k));
    for (int i = 0; i < MR; ++i) {
      const __m512i xv = _mm512_maskz_loadu_epi8(m, xq + i * ldq + k);
      for (int j = 0; j < NR; ++j) acc[i][j] = _mm512_dpbusd_epi32(acc[i][j], wv[j], xv);
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) out[i][j] = _mm512_reduce_add_epi32(acc[i][j]);
}

// Weight rows per L2 block: 64 rows of K = 4096 are 256 KB (Zen 4 has 1 MB of L2 per core).
inline int64_t rows_per_block(int64_t K) {
  const int64_t r = (int64_t{256} << 10) / (K > 0 ? K : 1);
  return r < 8 ? 8 : (r > 128 ? 128 : r / 4 * 4);
}

constexpr int kTileM = 4, kTileN = 4;
// Rows of x per chunk of row sums kept on the stack.
constexpr int64_t kSumChunk = 256;

}  // namespace

void linear_int8_int8act(const int8_t* xq, int64_t ldq, const float* sx, int64_t M, int64_t K,
                         const int8_t* codes, const float* scale, const float* bias, float* y, int64_t ldy,
                         int64_t n0, int64_t n1) {
  // y = (float(acc - 128 * rowsum) * sx[m]) * scale[n] + bias[n], left to right
  auto emit = [&](int64_t m, int64_t n, int32_t acc, int32_t bias128) {
    // acc - bias128 wraps back into range: do it in uint32 (signed overflow is undefined)
    const int32_t s = static_cast<int32_t>(static_cast<uint32_t>(acc) - static_cast<uint32_t>(bias128));
    float v = no_contract(static_cast<float>(s) * sx[m]) * scale[n];
    if (bias) v = no_contract(v) + bias[n];
    y[m * ldy + n] = v;
  };
  if (M == 1) {
    const int32_t c = static_cast<int32_t>(128u * static_cast<uint32_t>(row_sum(xq, ldq)));
    int64_t n = n0;
    for (; n + 4 <= n1; n += 4) {
      int32_t s[4];
      gemv<4>(xq, codes + n * K, K, s);
      for (int j = 0; j < 4; ++j) emit(0, n + j, s[j], c);
    }
    for (; n < n1; ++n) {
      int32_t s[1];
      gemv<1>(xq, codes + n * K, K, s);
      emit(0, n, s[0], c);
    }
    return;
  }
  const int64_t nb = rows_per_block(K);
  for (int64_t m0 = 0; m0 < M; m0 += kSumChunk) {
    const int64_t m1 = m0 + kSumChunk < M ? m0 + kSumChunk : M;
    int32_t c[kSumChunk];
    for (int64_t m = m0; m < m1; ++m)
      c[m - m0] = static_cast<int32_t>(128u * static_cast<uint32_t>(row_sum(xq + m * ldq, ldq)));
    for (int64_t b0 = n0; b0 < n1; b0 += nb) {
      const int64_t b1 = b0 + nb < n1 ? b0 + nb : n1;
      for (int64_t m = m0; m < m1; m += kTileM) {
        const int mr = static_cast<int>(m1 - m < kTileM ? m1 - m : kTileM);
        for (int64_t n = b0; n < b1; n += kTileN) {
          const int nr = static_cast<int>(b1 - n < kTileN ? b1 - n : kTileN);
          int32_t s[kTileM][4];
          const int8_t* xm = xq + m * ldq;
          const int8_t* w = codes + n * K;
          dispatch_tile<kTileM, kTileN>(mr, nr, [&](auto mr_c, auto nr_c) {
            tile<decltype(mr_c)::value, decltype(nr_c)::value>(xm, ldq, w, K, s);
          });
          for (int i = 0; i < mr; ++i)
            for (int j = 0; j < nr; ++j) emit(m + i, n + j, s[i][j], c[m + i - m0]);
        }
      }
    }
  }
}

}  // namespace lowbit::cpu::avx512
