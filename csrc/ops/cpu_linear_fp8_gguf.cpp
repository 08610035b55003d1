// CPU glue of linear_fp8, linear_q8_0 and linear_q4_0: checks, float32 views of
// x and y, the on-the-fly int8 quantization of x, and threads over output columns.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <optional>

#include "cpu/gemm_fp8_gguf.h"
#include "cpu/isa.h"
#include "cpu/kernel_trace.h"
#include "ops/checks.h"
#include "ops/linear_common.h"
#include "ops/linear_weights.h"

namespace lowbit::ops {
namespace {

// Output columns are handed to threads in units of this many (the AVX2 tiles
// take 2 or 4 columns at a time).
constexpr int64_t kColUnit = 4;

// Runs fn(n0, n1) over [0, N) in parallel, in units of kColUnit columns, with
// enough work per task (multiply-adds) to be worth a thread.
template <class Fn>
void for_columns(int64_t M, int64_t K, int64_t N, Fn fn) {
  const int64_t units = (N + kColUnit - 1) / kColUnit;
  const int64_t work_per_unit = std::max<int64_t>(1, M * K * kColUnit);
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 16) / work_per_unit);
  at::parallel_for(0, units, grain, [&](int64_t b, int64_t e) {
    fn(b * kColUnit, std::min(N, e * kColUnit));
  });
}

constexpr const char* kBf16PanelKernel = "avx512_packed_gemm_bf16act";

const bf16_t* bf16_data(const FloatIO& io) { return reinterpret_cast<const bf16_t*>(io.xf.const_data_ptr()); }

const char* f32_kernel_name(int64_t M, int64_t K) {
  if (!cpu::use_avx2()) return "portable";
  if (cpu::packed_float_gemm(M, K)) return "avx2_packed_gemm_f32act";
  return M <= 4 ? "avx2_gemv_f32act" : "avx2_gemm_f32act";
}

const float* bias_ptr(const LinearArgs& a) { return a.bias.defined() ? a.bias.const_data_ptr<float>() : nullptr; }

at::Tensor linear_fp8(const at::Tensor& x, const at::Tensor& q_in, const at::Tensor& scale_in,
                      const std::optional<at::Tensor>& bias) {
  constexpr const char* op = "linear_fp8";
  const WeightShape shape = check_fp8_weight(x, q_in, scale_in);
  const int64_t N = shape.N, K = shape.K;
  LinearArgs a = prepare_linear(x, N, K, bias, op);
  if (a.M == 0 || N == 0) return a.y;
  const at::Tensor q = q_in.contiguous(), scale = scale_in.contiguous();
  const FloatIO io = float_io(a);
  const Fp8Format fmt = fp8_format_of(q.scalar_type());
  const int64_t scale_stride = scale.size(0) == 1 ? 0 : 1;
  const auto* qp = static_cast<const uint8_t*>(q.const_data_ptr());
  const float* sp = scale.const_data_ptr<float>();
  const float* bp = bias_ptr(a);
  float* yp = io.yf.mutable_data_ptr<float>();
  const int64_t M = a.M;
  if (io.bf16_panels) {
    const bf16_t* xp = bf16_data(io);
    for_columns(M, K, N, [&](int64_t n0, int64_t n1) {
      cpu::linear_fp8_bf16act(xp, qp, fmt, sp, scale_stride, bp, yp, M, K, N, n0, n1);
    });
  } else {
    const float* xp = io.xf.const_data_ptr<float>();
    for_columns(M, K, N, [&](int64_t n0, int64_t n1) {
      cpu::linear_fp8(xp, qp, fmt, sp, scale_stride, bp, yp, M, K, N, n0, n1);
    });
  }
  finish(a, io);
  cpu::note_kernel(op, io.bf16_panels ? kBf16PanelKernel : f32_kernel_name(M, K));
  return a.y;
}

using GgufF32Fn = void (*)(const float*, const uint8_t*, const float*, float*, int64_t, int64_t, int64_t, int64_t,
                           int64_t);
using GgufBf16Fn = void (*)(const bf16_t*, const uint8_t*, const float*, float*, int64_t, int64_t, int64_t, int64_t,
                            int64_t);
using GgufI8Fn = void (*)(const int8_t*, const float*, const int32_t*, const uint8_t*, const float*, float*, int64_t,
                          int64_t, int64_t, int64_t, int64_t);

at::Tensor linear_gguf(const at::Tensor& x, const at::Tensor& blocks_in, const std::optional<at::Tensor>& bias,
                       bool int8_activations, const char* op, int64_t block_bytes, GgufF32Fn f32_fn, GgufI8Fn i8_fn,
                       GgufBf16Fn bf16_fn) {
  const WeightShape shape = check_gguf_weight(x, blocks_in, op, block_bytes);
  const int64_t N = shape.N, K = shape.K;
  LinearArgs a = prepare_linear(x, N, K, bias, op);
  if (a.M == 0 || N == 0) return a.y;
  const at::Tensor blocks = blocks_in.contiguous();
  const FloatIO io = float_io(a);
  const int64_t M = a.M, nb = K / cpu::kGgufBlockElems;
  const uint8_t* wp = blocks.const_data_ptr<uint8_t>();
  const float* bp = bias_ptr(a);
  float* yp = io.yf.mutable_data_ptr<float>();
  // large M: the packed panel kernels are faster than the int8 one and exact
  if (io.bf16_panels) {
    const bf16_t* xp = bf16_data(io);
    for_columns(M, K, N, [&](int64_t n0, int64_t n1) { bf16_fn(xp, wp, bp, yp, M, K, N, n0, n1); });
    cpu::note_kernel(op, kBf16PanelKernel);
    finish(a, io);
    return a.y;
  }
  const float* xp = io.xf.const_data_ptr<float>();
  if (int8_activations && !cpu::packed_float_gemm(M, K)) {
    at::Tensor qx = at::empty({M, K}, a.x2d.options().dtype(at::kChar));
    at::Tensor dx = at::empty({M, nb}, a.x2d.options().dtype(at::kFloat));
    at::Tensor sx = at::empty({M, nb}, a.x2d.options().dtype(at::kInt));
    int8_t* qxp = qx.mutable_data_ptr<int8_t>();
    float* dxp = dx.mutable_data_ptr<float>();
    int32_t* sxp = sx.mutable_data_ptr<int32_t>();
    at::parallel_for(0, M, std::max<int64_t>(1, (int64_t{1} << 14) / std::max<int64_t>(K, 1)), [&](int64_t b, int64_t e) {
      cpu::quantize_act_q8(xp + b * K, qxp + b * K, dxp + b * nb, sxp + b * nb, e - b, K);
    });
    for_columns(M, K, N, [&](int64_t n0, int64_t n1) { i8_fn(qxp, dxp, sxp, wp, bp, yp, M, K, N, n0, n1); });
    cpu::note_kernel(op, !cpu::use_avx2() ? "portable_int8act" : (M <= 4 ? "avx2_gemv_int8act" : "avx2_gemm_int8act"));
  } else {
    for_columns(M, K, N, [&](int64_t n0, int64_t n1) { f32_fn(xp, wp, bp, yp, M, K, N, n0, n1); });
    cpu::note_kernel(op, f32_kernel_name(M, K));
  }
  finish(a, io);
  return a.y;
}

at::Tensor linear_q8_0(const at::Tensor& x, const at::Tensor& blocks, const std::optional<at::Tensor>& bias,
                       bool int8_activations) {
  return linear_gguf(x, blocks, bias, int8_activations, "linear_q8_0", 34, &cpu::linear_q8_0_f32act,
                     &cpu::linear_q8_0_int8act, &cpu::linear_q8_0_bf16act);
}

at::Tensor linear_q4_0(const at::Tensor& x, const at::Tensor& blocks, const std::optional<at::Tensor>& bias,
                       bool int8_activations) {
  return linear_gguf(x, blocks, bias, int8_activations, "linear_q4_0", 18, &cpu::linear_q4_0_f32act,
                     &cpu::linear_q4_0_int8act, &cpu::linear_q4_0_bf16act);
}

}  // namespace

TORCH_LIBRARY_IMPL(lowbit, CPU, m) {
  m.impl("linear_fp8", &linear_fp8);
  m.impl("linear_q8_0", &linear_q8_0);
  m.impl("linear_q4_0", &linear_q4_0);
}

}  // namespace lowbit::ops
