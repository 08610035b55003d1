// CUDA glue of the float8 ops: the CPU op's checks and messages, output allocation on
// the input's device, the launch on the current stream. Non-contiguous inputs are
// copied to contiguous memory first.
//
// Differs from the CPU op (docs/cuda.md): choose_scale_fp8 gives scale NaN for a
// channel holding NaN or +-inf instead of raising (raising would need a
// device-to-host sync, which CUDA graphs cannot capture).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <optional>

#include "cuda/fp8.cuh"
#include "ops/checks.h"

namespace lowbit::ops {
namespace {



at::Tensor choose_scale_fp8_cuda(const at::Tensor& x_in, at::ScalarType dtype, std::optional<int64_t> axis,
                                 std::optional<int64_t> group_size) {
  constexpr const char* op = "choose_scale_fp8";
  check_float(x_in, op, "x");
  const Fp8Format fmt = fp8_format_arg(dtype, op);
  const ParamShape ps = param_shape_for(x_in, axis, group_size, op);
  check_cuda(x_in, op, "x");
  const at::Tensor x = x_in.contiguous();
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor scale = at::empty(ps.shape, x.options().dtype(at::kFloat));
  const int64_t C = ps.layout.channels;
  if (C == 0) return scale;
  at::Tensor keys = at::empty({2 * C}, x.options().dtype(at::kInt));  // min keys, then max keys
  C10_CUDA_CHECK(cuda::launch_choose_scale_fp8(x.const_data_ptr(), float_type_of(x.scalar_type()), ps.layout, fmt,
                                               reinterpret_cast<uint32_t*>(keys.mutable_data_ptr<int32_t>()),
                                               scale.mutable_data_ptr<float>(), c10::cuda::getCurrentCUDAStream()));
  return scale;
}

at::Tensor quantize_fp8_cuda(const at::Tensor& x_in, const at::Tensor& scale_in, at::ScalarType dtype) {
  constexpr const char* op = "quantize_fp8";
  check_float(x_in, op, "x");
  const Fp8Format fmt = fp8_format_arg(dtype, op);
  const ScaleLayout L = layout_from_scale(x_in, scale_in, op);  // also checks scale's dtype and device
  check_cuda(x_in, op, "x");
  const at::Tensor x = x_in.contiguous();
  const at::Tensor scale = scale_in.contiguous();
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor q = at::empty(x.sizes(), x.options().dtype(dtype));
  if (x.numel() == 0) return q;
  C10_CUDA_CHECK(cuda::launch_quantize_fp8(x.const_data_ptr(), float_type_of(x.scalar_type()), L,
                                           scale.const_data_ptr<float>(), fmt,
                                           static_cast<uint8_t*>(q.mutable_data_ptr()),
                                           c10::cuda::getCurrentCUDAStream()));
  return q;
}

at::Tensor dequantize_fp8_cuda(const at::Tensor& q_in, const at::Tensor& scale_in, at::ScalarType dtype) {
  constexpr const char* op = "dequantize_fp8";
  const Fp8Format fmt = fp8_codes_format(q_in, op, "q");
  check_float_dtype_arg(dtype, op, "dtype");
  const ScaleLayout L = layout_from_scale(q_in, scale_in, op);
  check_cuda(q_in, op, "q");
  const at::Tensor q = q_in.contiguous();
  const at::Tensor scale = scale_in.contiguous();
  const c10::cuda::CUDAGuard guard(q.device());
  at::Tensor y = at::empty(q.sizes(), q.options().dtype(dtype));
  if (q.numel() == 0) return y;
  C10_CUDA_CHECK(cuda::launch_dequantize_fp8(static_cast<const uint8_t*>(q.const_data_ptr()), fmt, L,
                                             scale.const_data_ptr<float>(), y.mutable_data_ptr(),
                                             float_type_of(dtype), c10::cuda::getCurrentCUDAStream()));
  return y;
}

}  // namespace

TORCH_LIBRARY_IMPL(lowbit, CUDA, m) {
  m.impl("choose_scale_fp8", &choose_scale_fp8_cuda);
  m.impl("quantize_fp8", &quantize_fp8_cuda);
  m.impl("dequantize_fp8", &dequantize_fp8_cuda);
}

}  // namespace lowbit::ops
