// int8-weight linear kernels on raw pointers (op linear_int8; docs/kernels.md, int8 section).
// No torch header.
//
// Weights: canonical int8 codes [N, K] row-major (symmetric, per output channel), scale[n]
// float32. Activations arrive as float32 [M, K] (the glue widens float16 / bfloat16 first);
// outputs are float32 [M, N] (row stride ldy).
//
//   f32act (W8A16):  y[m, n] = (sum_k float(codes[n, k]) * x[m, k]) * scale[n] + bias[n]
//                    sum in float32; the order of the sum is fixed per ISA (deterministic).
//   int8act (W8A8):  each row of x is quantized first (quantize_rows_int8):
//                      sx[m] = max_k |x[m, k]| / 127,  xq[m, k] = clamp(rne(x[m, k] / sx[m]), -127, 127)
//                    (sx = 0 -> xq = 0; a row with NaN / inf gets sx = NaN and xq = 0), then
//                    y[m, n] = float(acc) * sx[m] * scale[n] + bias[n], acc = sum_k codes * xq in int32,
//                    evaluated left to right in float32. acc is exact, so both ISAs give the same bits.
//                    int32 cannot overflow while K <= kInt8ActMaxK (127 * 128 * K < 2^31).
// bias may be null (then no addition at all). Every kernel computes output columns [n0, n1)
// for all M rows, so callers can split N across threads.
#pragma once
#include <cstdint>

#include "lowbit/float_types.h"

namespace lowbit::cpu {

constexpr int64_t kInt8ActMaxK = 131072;

// Row stride (bytes) of the quantized-activation buffer for K: K rounded up to 32, the tail
// padded with zeros (the AVX2 kernels read whole 4-byte quads and 32-byte vectors).
inline int64_t int8act_row_stride(int64_t K) { return (K + 31) / 32 * 32; }

// x float32 [M, K] -> xq int8 [M, ldq] (values in [-127, 127], zero padding), sx float32 [M].
void quantize_rows_int8(const float* x, int64_t M, int64_t K, int8_t* xq, int64_t ldq, float* sx);

void linear_int8_f32act(const float* x, int64_t M, int64_t K, const int8_t* codes, const float* scale,
                        const float* bias, float* y, int64_t ldy, int64_t n0, int64_t n1);

void linear_int8_int8act(const int8_t* xq, int64_t ldq, const float* sx, int64_t M, int64_t K,
                         const int8_t* codes, const float* scale, const float* bias, float* y, int64_t ldy,
                         int64_t n0, int64_t n1);

// W8A16 with bfloat16 x on the bfloat16 panel path (cpu/panel_gemm.h; only when
// packed_bf16_gemm(M, K)): the f32act formula above with x's bfloat16 values (the sum in
// float32 in another order).
void linear_int8_bf16act(const bf16_t* x, int64_t M, int64_t K, const int8_t* codes, const float* scale,
                         const float* bias, float* y, int64_t ldy, int64_t n0, int64_t n1);

// The implementations behind the run-time dispatch above.
namespace portable {
void quantize_rows_int8(const float* x, int64_t M, int64_t K, int8_t* xq, int64_t ldq, float* sx);
void linear_int8_f32act(const float* x, int64_t M, int64_t K, const int8_t* codes, const float* scale,
                        const float* bias, float* y, int64_t ldy, int64_t n0, int64_t n1);
void linear_int8_int8act(const int8_t* xq, int64_t ldq, const float* sx, int64_t M, int64_t K,
                         const int8_t* codes, const float* scale, const float* bias, float* y, int64_t ldy,
                         int64_t n0, int64_t n1);
}  // namespace portable

namespace avx2 {
void linear_int8_bf16act(const bf16_t* x, int64_t M, int64_t K, const int8_t* codes, const float* scale,
                         const float* bias, float* y, int64_t ldy, int64_t n0, int64_t n1);
void quantize_rows_int8(const float* x, int64_t M, int64_t K, int8_t* xq, int64_t ldq, float* sx);
void linear_int8_f32act(const float* x, int64_t M, int64_t K, const int8_t* codes, const float* scale,
                        const float* bias, float* y, int64_t ldy, int64_t n0, int64_t n1);
void linear_int8_int8act(const int8_t* xq, int64_t ldq, const float* sx, int64_t M, int64_t K,
                         const int8_t* codes, const float* scale, const float* bias, float* y, int64_t ldy,
                         int64_t n0, int64_t n1);
}  // namespace avx2

// AVX-512 VNNI (cpu/avx512/gemm_int8_avx512.cpp): the W8A8 kernel only.
namespace avx512 {
void linear_int8_int8act(const int8_t* xq, int64_t ldq, const float* sx, int64_t M, int64_t K,
                         const int8_t* codes, const float* scale, const float* bias, float* y, int64_t ldy,
                         int64_t n0, int64_t n1);
}  // namespace avx512

}  // namespace lowbit::cpu
