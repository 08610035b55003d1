#include "cpu/gemm_intx.h"
#include "cpu/panel_gemm.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "cpu/isa.h"

namespace lowbit::cpu {

namespace {

// Largest M + 1 for which the register-decoding AVX512_BF16 kernel runs, by the number
// of bfloat16 terms of x (hot 4096 x 4096, 2026-11-23: 3 terms 37-45 GMAC/s at M = 1..24
// against 21-35 for the AVX2 float kernel, level with the float32 panels at M = 32;
// 2 terms 43-77 up to M = 48, level at 63; 1 term 54-124, ahead of both below 64).
constexpr int64_t kTermsMaxM[4] = {0, 64, 64, 32};
// 2-bit weights with x in three terms: the AVX2 float kernel decodes 2-bit fields more
// cheaply than 4-bit ones and is ahead from M = 4 (hot 4096 x 4096 g64, 2026-11-23: 28-39
// against 38-45 GMAC/s at M = 4..16; at M = 1 39-43 against 23-26, level at M = 2).
// One or two terms stay on the register kernel to M = 63 (bfloat16 x 72-112 against
// 25-50; two terms 39-65 against 17-50).
constexpr int64_t kTermsMaxM2Bit3 = 3;

inline int code_at(const uint8_t* row, int64_t k, int bits) {
  const int64_t bit = k * bits;
  const int u = (row[bit >> 3] >> (bit & 7)) & ((1 << bits) - 1);
  return u - (1 << (bits - 1));
}


template <typename T>
void prepare_portable_f32(const IntxWeights& w, const T* x, float* xf, int64_t m0, int64_t m1) {
  const int64_t K = w.K;
  for (int64_t m = m0; m < m1; ++m)
    for (int64_t k = 0; k < K; ++k) xf[m * K + k] = to_float(x[m * K + k]);
}

template <typename T>
void prepare_portable_int8(const IntxWeights& w, const T* x, int64_t M, void* ws, int64_t m0, int64_t m1) {
  const int64_t K = w.K, G = K / w.group_size, nb = K / kIntxActBlock, bpg = w.group_size / kIntxActBlock;
  IntxInt8Ws s = intx_int8_ws(ws, M, K, G);
  float buf[kIntxActBlock];
  for (int64_t m = m0; m < m1; ++m) {
    for (int64_t b = 0; b < nb; ++b) {
      for (int64_t i = 0; i < kIntxActBlock; ++i) buf[i] = to_float(x[m * K + b * kIntxActBlock + i]);
      s.dx[m * nb + b] = quantize_act_block(buf, s.q + m * K + b * kIntxActBlock);
    }
    for (int64_t g = 0; g < G; ++g) {
      float acc = 0.f;
      for (int64_t b = g * bpg; b < (g + 1) * bpg; ++b) {
        int32_t qs = 0;
        for (int64_t i = 0; i < kIntxActBlock; ++i) qs += s.q[m * K + b * kIntxActBlock + i];
        acc += s.dx[m * nb + b] * static_cast<float>(qs);
      }
      s.xsum[m * G + g] = acc;
    }
  }
}

// Exact path: per group, acc = sum_k (code_k - zp) * x_k in float32, y += scale * acc.
void compute_portable_f32(const IntxWeights& w, const float* xf, int64_t M, const float* bias, float* y, int64_t n0,
                          int64_t n1) {
  const int64_t K = w.K, g = w.group_size, G = K / g, row_bytes = K * w.bits / 8;
  std::vector<float> wrow(static_cast<size_t>(K));
  for (int64_t n = n0; n < n1; ++n) {
    const uint8_t* row = w.packed + n * row_bytes;
    // (code - zp) for the whole row, reused by every row of x.
    for (int64_t k = 0; k < K; ++k) {
      const float zp = w.zero_point[n * G + k / g];
      wrow[k] = static_cast<float>(code_at(row, k, w.bits)) - zp;
    }
    for (int64_t m = 0; m < M; ++m) {
      const float* xr = xf + m * K;
      float out = 0.f;
      for (int64_t gi = 0; gi < G; ++gi) {
        float acc = 0.f;
        for (int64_t k = gi * g; k < (gi + 1) * g; ++k) acc += wrow[k] * xr[k];
        out += w.scale[n * G + gi] * acc;
      }
      y[m * w.N + n] = out + (bias ? bias[n] : 0.f);
    }
  }
}

// int8 path: per block of 32, an exact int32 dot of the codes with the int8 x codes;
// per group: scale * (sum_b dx_b * dot_b - zp * xsum_g).
void compute_portable_int8(const IntxWeights& w, const void* ws, int64_t M, const float* bias, float* y, int64_t n0,
                           int64_t n1) {
  const int64_t K = w.K, g = w.group_size, G = K / g, row_bytes = K * w.bits / 8, nb = K / kIntxActBlock;
  const int64_t bpg = g / kIntxActBlock;
  const IntxInt8Ws s = intx_int8_ws(const_cast<void*>(ws), M, K, G);
  std::vector<int8_t> codes(static_cast<size_t>(K));
  for (int64_t n = n0; n < n1; ++n) {
    const uint8_t* row = w.packed + n * row_bytes;
    for (int64_t k = 0; k < K; ++k) codes[k] = static_cast<int8_t>(code_at(row, k, w.bits));
    for (int64_t m = 0; m < M; ++m) {
      const int8_t* q = s.q + m * K;
      float out = 0.f;
      for (int64_t gi = 0; gi < G; ++gi) {
        float acc = 0.f;
        for (int64_t b = gi * bpg; b < (gi + 1) * bpg; ++b) {
          int32_t dot = 0;
          for (int64_t i = b * kIntxActBlock; i < (b + 1) * kIntxActBlock; ++i) dot += codes[i] * q[i];
          acc += s.dx[m * nb + b] * static_cast<float>(dot);
        }
        const float zp = w.zero_point[n * G + gi];
        out += w.scale[n * G + gi] * (acc - zp * s.xsum[m * G + gi]);
      }
      y[m * w.N + n] = out + (bias ? bias[n] : 0.f);
    }
  }
}

}  // namespace

IntxPlan intx_plan(const IntxWeights& w, int64_t M, bool int8_activations, bool bf16_x, int x_parts) {
#if defined(LOWBIT_HAVE_AVX2)
  const bool avx = use_avx2();
#else
  const bool avx = false;
#endif
  const bool int8 = int8_activations && w.group_size % kIntxActBlock == 0;
  if (int8) {
#if defined(LOWBIT_HAVE_AVX2)
#if defined(LOWBIT_HAVE_AVX512)
    // M = 1 stays on the AVX2 GEMV (memory-bound, ~90% of read bandwidth already)
    if (M > 1 && use_avx512() && avx512::intx_int8_supported(w))
      return {IntxKernel::Avx512Int8, "avx512_gemm_int8act"};
#endif
    if (avx && avx2::intx_int8_supported(w))
      return {IntxKernel::Avx2Int8, M == 1 ? "avx2_gemv_int8act" : "avx2_gemm_int8act"};
#endif
    return {IntxKernel::PortableInt8, "portable_int8act"};
  }
#if defined(LOWBIT_HAVE_AVX512_BF16)
  // 2/4-bit: the register-decoding kernel for small M (kTermsMaxM). For bfloat16 x the
  // bfloat16 panels take over from M = 64: 117-131 GMAC/s there against 110-118 for the
  // register kernel, 142-161 at M = 128 (4096 x 4096 and 2048 x 5632, 2026-11-23).
  const int64_t max_m =
      x_parts < 1 || x_parts > 3 ? 0 : (w.bits == 2 && x_parts == 3 ? kTermsMaxM2Bit3 : kTermsMaxM[x_parts]);
  if (M < max_m && use_avx512_bf16() &&
      avx512bf16::intx_bf16_supported(w)) {
    static const char* const names[2][4] = {
        {"avx512_gemv_bf16act", "avx512_gemv_bf16x1act", "avx512_gemv_bf16x2act", "avx512_gemv_bf16x3act"},
        {"avx512_gemm_bf16act", "avx512_gemm_bf16x1act", "avx512_gemm_bf16x2act", "avx512_gemm_bf16x3act"}};
    return {IntxKernel::Avx512Bf16, names[M > 1][bf16_x ? 0 : x_parts], x_parts};
  }
  // x_parts == 1: bfloat16 x, or float32 x that may be rounded to it (the caller converts it)
  if (x_parts == 1 && packed_bf16_gemm(M, w.K))
    return {IntxKernel::Avx512PackedBf16, "avx512_packed_gemm_bf16act"};
#else
  (void)bf16_x;
  (void)x_parts;
#endif
#if defined(LOWBIT_HAVE_AVX2)
  if (avx && packed_float_gemm(M, w.K)) return {IntxKernel::Avx2PackedF32, "avx2_packed_gemm_f32act"};
  if (avx && avx2::intx_f32_supported(w))
    return {IntxKernel::Avx2F32, M == 1 ? "avx2_gemv_f32act" : "avx2_gemm_f32act"};
#endif
  (void)avx;
  return {IntxKernel::PortableF32, "portable_f32act"};
}

size_t intx_workspace_bytes(const IntxPlan& plan, const IntxWeights& w, int64_t M) {
  switch (plan.kind) {
    case IntxKernel::PortableF32:
    case IntxKernel::Avx2PackedF32:
      return static_cast<size_t>(M * w.K) * sizeof(float);
    case IntxKernel::Avx512PackedBf16:  // x as it is
      return static_cast<size_t>(M * w.K) * sizeof(bf16_t);
    case IntxKernel::Avx512Bf16:
#if defined(LOWBIT_HAVE_AVX512_BF16)
      return avx512bf16::intx_bf16_workspace_bytes(w, M, plan.x_parts);
#else
      return 0;  // never planned without the AVX512_BF16 build
#endif
    case IntxKernel::Avx2F32:  // x permuted [M, K], then its per-group sums [M, K / group_size]
      return static_cast<size_t>(M * w.K + M * (w.K / w.group_size)) * sizeof(float);
    default:
      return intx_int8_ws_bytes(M, w.K, w.K / w.group_size);
  }
}

template <typename T>
void intx_prepare(const IntxPlan& plan, const IntxWeights& w, const T* x, int64_t M, void* ws, int64_t m0,
                  int64_t m1) {
  switch (plan.kind) {
    case IntxKernel::PortableF32: return prepare_portable_f32(w, x, static_cast<float*>(ws), m0, m1);
    case IntxKernel::PortableInt8: return prepare_portable_int8(w, x, M, ws, m0, m1);
#if defined(LOWBIT_HAVE_AVX2)
    case IntxKernel::Avx2F32: return avx2::intx_prepare_f32(w, x, M, static_cast<float*>(ws), m0, m1);
    case IntxKernel::Avx2Int8:
    case IntxKernel::Avx512Int8: return avx2::intx_prepare_int8(w, x, M, ws, m0, m1);
    case IntxKernel::Avx2PackedF32: return prepare_portable_f32(w, x, static_cast<float*>(ws), m0, m1);
    case IntxKernel::Avx512PackedBf16:
      // planned for bfloat16 x only (intx_plan's bf16_x)
      if constexpr (std::is_same_v<T, bf16_t>)
        std::memcpy(static_cast<bf16_t*>(ws) + m0 * w.K, x + m0 * w.K, static_cast<size_t>((m1 - m0) * w.K) * sizeof(bf16_t));
      return;
    case IntxKernel::Avx512Bf16:
#if defined(LOWBIT_HAVE_AVX512_BF16)
      avx512bf16::intx_prepare_bf16(w, x, M, plan.x_parts, ws, m0, m1);
#endif
      return;
#else
    default: return;
#endif
  }
}

void intx_compute(const IntxPlan& plan, const IntxWeights& w, const void* ws, int64_t M, const float* bias, float* y,
                  int64_t n0, int64_t n1) {
  switch (plan.kind) {
    case IntxKernel::PortableF32:
      return compute_portable_f32(w, static_cast<const float*>(ws), M, bias, y, n0, n1);
    case IntxKernel::PortableInt8: return compute_portable_int8(w, ws, M, bias, y, n0, n1);
#if defined(LOWBIT_HAVE_AVX2)
    case IntxKernel::Avx2F32: return avx2::intx_compute_f32(w, static_cast<const float*>(ws), M, bias, y, n0, n1);
    case IntxKernel::Avx2Int8: return avx2::intx_compute_int8(w, ws, M, bias, y, n0, n1);
    case IntxKernel::Avx512Int8:
#if defined(LOWBIT_HAVE_AVX512)
      return avx512::intx_compute_int8(w, ws, M, bias, y, n0, n1);
#else
      return;  // never planned without the AVX-512 build
#endif
    case IntxKernel::Avx2PackedF32:
      return avx2::intx_compute_packed(w, static_cast<const float*>(ws), M, bias, y, n0, n1);
    case IntxKernel::Avx512PackedBf16:
#if defined(LOWBIT_HAVE_AVX512_BF16)
      return avx2::intx_compute_packed_bf16(w, static_cast<const bf16_t*>(ws), M, bias, y, n0, n1);
#else
      return;  // never planned without the AVX512_BF16 build
#endif
    case IntxKernel::Avx512Bf16:
#if defined(LOWBIT_HAVE_AVX512_BF16)
      return avx512bf16::intx_compute_bf16(w, ws, M, plan.x_parts, bias, y, n0, n1);
#else
      return;
#endif
#else
    default: return;
#endif
  }
}

template void intx_prepare<float>(const IntxPlan&, const IntxWeights&, const float*, int64_t, void*, int64_t, int64_t);
template void intx_prepare<half_t>(const IntxPlan&, const IntxWeights&, const half_t*, int64_t, void*, int64_t,
                                   int64_t);
template void intx_prepare<bf16_t>(const IntxPlan&, const IntxWeights&, const bf16_t*, int64_t, void*, int64_t,
                                   int64_t);

}  // namespace lowbit::cpu
