// Shared glue of the mixed-precision linear ops: checks of x and bias, the
// [..., K] -> [M, K] view, and the [..., N] output in x's dtype.
#pragma once
#include <ATen/ATen.h>

#include <optional>
#include <vector>

#include "cpu/panel_gemm.h"
#include "ops/checks.h"

namespace lowbit::ops {

struct LinearArgs {
  at::Tensor x2d;   // [M, K], contiguous, dtype of x
  at::Tensor y;     // [..., N], dtype of x (y.view({M, N}) is what kernels write)
  at::Tensor bias;  // [N] float32 contiguous, or undefined
  int64_t M, K, N;
};

inline LinearArgs prepare_linear(const at::Tensor& x, int64_t N, int64_t K, const std::optional<at::Tensor>& bias,
                                 const char* op) {
  check_float(x, op, "x");
  TORCH_CHECK(x.dim() >= 1, "lowbit.", op, ": expected x of rank >= 1 ([..., K]), got a 0-d tensor");
  TORCH_CHECK(x.size(-1) == K, "lowbit.", op, ": expected x with last axis K = ", K,
              " (the weight's input features), got x of shape ", x.sizes());
  LinearArgs a;
  a.K = K;
  a.N = N;
  a.M = 1;
  for (int64_t d = 0; d + 1 < x.dim(); ++d) a.M *= x.size(d);
  a.x2d = x.reshape({a.M, K}).contiguous();
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape.back() = N;
  a.y = at::empty(shape, x.options());
  if (bias.has_value()) {
    check_same_device(*bias, x, op, "bias", "x");
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == N, "lowbit.", op, ": expected bias of shape [", N,
                "], got ", bias->sizes());
    check_float(*bias, op, "bias");
    a.bias = bias->to(at::kFloat).contiguous();
  }
  return a;
}

// bfloat16 terms that represent an element of x of this dtype in the AVX512_BF16
// kernels: exact for bfloat16 (1), float16 (2) and float32 (3); for float32, 2 or 1 when
// torch.set_float32_matmul_precision is "high" or "medium", the precision torch's own
// float32 matmuls then allow themselves.
inline int bf16_terms(at::ScalarType dt) {
  if (dt == at::kBFloat16) return 1;
  if (dt == at::kHalf) return 2;
  switch (at::globalContext().float32MatmulPrecision()) {
    case at::Float32MatmulPrecision::MEDIUM: return 1;
    case at::Float32MatmulPrecision::HIGH: return 2;
    default: return 3;
  }
}

// x and y of the float-activation CPU kernels (linear_int8, linear_fp8, linear_q8_0,
// linear_q4_0). With bf16_panels the bfloat16 panel path (cpu/panel_gemm.h) runs: large
// M, and x bfloat16, or float32 at matmul precision "medium" (rounded to bfloat16 here).
struct FloatIO {
  at::Tensor xf;  // [M, K] float32 contiguous, or bfloat16 when bf16_panels
  at::Tensor yf;  // [M, N] float32, a view of the output when x is float32
  bool bf16_panels = false;
};

// panels_allowed: false where the op runs another path (int8 activations) instead.
inline FloatIO float_io(const LinearArgs& a, bool panels_allowed = true) {
  FloatIO io;
  const at::ScalarType dt = a.x2d.scalar_type();
  io.bf16_panels = panels_allowed && bf16_terms(dt) == 1 && cpu::packed_bf16_gemm(a.M, a.K);
  io.xf = a.x2d.to(io.bf16_panels ? at::kBFloat16 : at::kFloat);  // no copy when x has that dtype
  io.yf = a.y.scalar_type() == at::kFloat ? a.y.view({a.M, a.N}) : at::empty({a.M, a.N}, a.x2d.options().dtype(at::kFloat));
  return io;
}

// The output in x's dtype from the float32 result.
inline void finish(const LinearArgs& a, const FloatIO& io) {
  if (a.y.scalar_type() != at::kFloat) a.y.view({a.M, a.N}).copy_(io.yf);
}

}  // namespace lowbit::ops
