// Mixed-precision linear kernels for float8 (e4m3fn, e5m2) and GGUF Q8_0 / Q4_0
// weights, on raw pointers; no torch header. Layouts: docs/formats.md.
//
// Every kernel computes a range of output columns [n0, n1) of
//   y[M, N] (float32, row stride N) = x[M, K] @ dequantize(W)[N, K].T + bias
// so the glue can split N across threads; x rows are float32 (the glue widens
// float16 / bfloat16 input once per call), bias is float32 [N] or null.
//
// float8:  y[m, n] = scale[n] * sum_k fp8(q[n, k]) * x[m, k], float32 accumulation.
//          NaN codes (e4m3fn 0x7f / 0xff; e5m2 NaN) and e5m2 infinities give
//          NaN / inf outputs by IEEE rules, exactly as decoding first would.
// GGUF, exact float activations (int8_activations = false):
//          y[m, n] = sum_b d[n, b] * sum_{i<32} code[n, b, i] * x[m, 32 b + i].
// GGUF, int8 activations (llama.cpp's scheme): each block of 32 of an x row is
//          quantized first by quantize_act_q8 (dx = amax / 127 in float32,
//          qx = round_half_even(x * (1 / dx)), 0 where dx == 0), then
//          y[m, n] = sum_b d[n, b] * dx[m, b] * int32_dot(code[n, b], qx[m, b]).
#pragma once
#include "cpu/panel_gemm.h"
#include "lowbit/float_types.h"  // Fp8Format
#include <cstdint>

namespace lowbit::cpu {


// Activations quantized to int8 blocks of 32 (Q8_0-like, float32 scale):
//   qx [rows, K] int8, dx [rows, K / 32] float32, sx [rows, K / 32] int32 holding
//   the sum of the 32 codes of each block (used by Q4_0's offset correction).
// K % 32 == 0. A block that is all zero gets dx = 0 and codes 0.
void quantize_act_q8(const float* x, int8_t* qx, float* dx, int32_t* sx, int64_t rows, int64_t K);

// scale_stride: 1 for a per-output-channel scale[N], 0 for one scale[0].
void linear_fp8(const float* x, const uint8_t* q, Fp8Format fmt, const float* scale, int64_t scale_stride,
                const float* bias, float* y, int64_t M, int64_t K, int64_t N, int64_t n0, int64_t n1);

// blocks: [N, K / 32 * 34] (Q8_0) or [N, K / 32 * 18] (Q4_0) bytes.
void linear_q8_0_f32act(const float* x, const uint8_t* blocks, const float* bias, float* y, int64_t M, int64_t K,
                        int64_t N, int64_t n0, int64_t n1);
void linear_q4_0_f32act(const float* x, const uint8_t* blocks, const float* bias, float* y, int64_t M, int64_t K,
                        int64_t N, int64_t n0, int64_t n1);
void linear_q8_0_int8act(const int8_t* qx, const float* dx, const int32_t* sx, const uint8_t* blocks,
                         const float* bias, float* y, int64_t M, int64_t K, int64_t N, int64_t n0, int64_t n1);
void linear_q4_0_int8act(const int8_t* qx, const float* dx, const int32_t* sx, const uint8_t* blocks,
                         const float* bias, float* y, int64_t M, int64_t K, int64_t N, int64_t n0, int64_t n1);

// bfloat16 x on the bfloat16 panel path (cpu/panel_gemm.h; only when packed_bf16_gemm(M, K)):
// the f32act formulas above with x's bfloat16 values. Per-channel float8 keeps its values
// (exact in bfloat16) and scales the sums; per-tensor float8 and GGUF round the dequantized
// weight to bfloat16. Here and in avx2:: (which implements them).
#define LOWBIT_FP8_GGUF_BF16_DECLS                                                                                  \
  void linear_fp8_bf16act(const bf16_t* x, const uint8_t* q, Fp8Format fmt, const float* scale,                    \
                          int64_t scale_stride, const float* bias, float* y, int64_t M, int64_t K, int64_t N,      \
                          int64_t n0, int64_t n1);                                                                 \
  void linear_q8_0_bf16act(const bf16_t* x, const uint8_t* blocks, const float* bias, float* y, int64_t M,         \
                           int64_t K, int64_t N, int64_t n0, int64_t n1);                                         \
  void linear_q4_0_bf16act(const bf16_t* x, const uint8_t* blocks, const float* bias, float* y, int64_t M,         \
                           int64_t K, int64_t N, int64_t n0, int64_t n1);
LOWBIT_FP8_GGUF_BF16_DECLS

// packed_float_gemm(M, K) (cpu/panel_gemm.h): whether the float-activation kernels take
// the AVX2 packed-panel path (large M). It is then faster than the int8-activation GGUF
// kernels, so the glue runs it for int8_activations=True as well (exact and faster).

// The implementations behind the run-time dispatch above (same signatures).
#define LOWBIT_FP8_GGUF_DECLS                                                                                      \
  void quantize_act_q8(const float* x, int8_t* qx, float* dx, int32_t* sx, int64_t rows, int64_t K);              \
  void linear_fp8(const float* x, const uint8_t* q, Fp8Format fmt, const float* scale, int64_t scale_stride,       \
                  const float* bias, float* y, int64_t M, int64_t K, int64_t N, int64_t n0, int64_t n1);            \
  void linear_q8_0_f32act(const float* x, const uint8_t* blocks, const float* bias, float* y, int64_t M,          \
                          int64_t K, int64_t N, int64_t n0, int64_t n1);                                          \
  void linear_q4_0_f32act(const float* x, const uint8_t* blocks, const float* bias, float* y, int64_t M,          \
                          int64_t K, int64_t N, int64_t n0, int64_t n1);                                          \
  void linear_q8_0_int8act(const int8_t* qx, const float* dx, const int32_t* sx, const uint8_t* blocks,           \
                           const float* bias, float* y, int64_t M, int64_t K, int64_t N, int64_t n0, int64_t n1); \
  void linear_q4_0_int8act(const int8_t* qx, const float* dx, const int32_t* sx, const uint8_t* blocks,           \
                           const float* bias, float* y, int64_t M, int64_t K, int64_t N, int64_t n0, int64_t n1);

namespace portable {
LOWBIT_FP8_GGUF_DECLS
}
namespace avx2 {
LOWBIT_FP8_GGUF_DECLS
LOWBIT_FP8_GGUF_BF16_DECLS
}
#undef LOWBIT_FP8_GGUF_DECLS
#undef LOWBIT_FP8_GGUF_BF16_DECLS

}  // namespace lowbit::cpu
