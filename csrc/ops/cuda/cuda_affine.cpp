// CUDA glue of the affine ops: the CPU op's checks and messages (csrc/ops/checks.h),
// output allocation on the input's device, and the launch on the current stream.
// Non-contiguous inputs are copied to contiguous memory first, as on the CPU.
//
// What differs from the CPU op (docs/cuda.md): checks that need the *values* of a
// tensor would need a device-to-host copy and a sync, which CUDA graphs cannot
// capture, so they are not made here:
//   - choose_qparams_affine gives scale = zero_point = NaN for a channel holding NaN
//     or +-inf (the CPU op raises);
//   - quantize_affine does not check that scales are finite and > 0 and zero-points
//     finite (codes stay in [qmin, qmax] whatever they are).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <optional>

#include "cuda/affine.cuh"
#include "ops/checks.h"

namespace lowbit::ops {
namespace {


std::tuple<at::Tensor, at::Tensor> choose_qparams_affine_cuda(const at::Tensor& x_in, int64_t bits, bool symmetric,
                                                              std::optional<int64_t> axis,
                                                              std::optional<int64_t> group_size) {
  const char* op = "choose_qparams_affine";
  check_float(x_in, op, "x");
  check_bits(bits, op);
  check_cuda(x_in, op, "x");
  const at::Tensor x = x_in.contiguous();
  const ParamShape ps = param_shape_for(x, axis, group_size, op);
  const ScaleLayout& L = ps.layout;
  const c10::cuda::CUDAGuard guard(x.device());
  const auto opts = x.options().dtype(at::kFloat);
  at::Tensor scale = at::empty(ps.shape, opts), zero_point = at::empty(ps.shape, opts);
  if (L.channels == 0) return {scale, zero_point};
  // scratch: per-channel min keys, then max keys (int32 storage of uint32 keys)
  at::Tensor keys = at::empty({2 * L.channels}, x.options().dtype(at::kInt));
  C10_CUDA_CHECK(cuda::launch_choose_qparams_affine(
      x.const_data_ptr(), float_type_of(x.scalar_type()), L, static_cast<int>(bits), symmetric,
      reinterpret_cast<uint32_t*>(keys.mutable_data_ptr<int32_t>()), scale.mutable_data_ptr<float>(),
      zero_point.mutable_data_ptr<float>(), c10::cuda::getCurrentCUDAStream()));
  return {scale, zero_point};
}

at::Tensor quantize_affine_cuda(const at::Tensor& x_in, const at::Tensor& scale_in,
                                const std::optional<at::Tensor>& zp_in, int64_t bits) {
  const char* op = "quantize_affine";
  check_float(x_in, op, "x");
  check_bits(bits, op);
  const at::Tensor x = x_in.contiguous();
  const AffineParams p = affine_params(x, scale_in, zp_in, op);
  check_cuda(x, op, "x");
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor codes = at::empty(x.sizes(), x.options().dtype(at::kChar));
  if (x.numel() == 0) return codes;
  C10_CUDA_CHECK(cuda::launch_quantize_affine(x.const_data_ptr(), float_type_of(x.scalar_type()), p.layout,
                                              p.scale.const_data_ptr<float>(), p.zero_point_ptr(), static_cast<int>(bits),
                                              codes.mutable_data_ptr<int8_t>(), c10::cuda::getCurrentCUDAStream()));
  return codes;
}

at::Tensor dequantize_affine_cuda(const at::Tensor& codes_in, const at::Tensor& scale_in,
                                  const std::optional<at::Tensor>& zp_in, at::ScalarType dtype) {
  const char* op = "dequantize_affine";
  check_dtype(codes_in, at::kChar, op, "codes");
  check_float_dtype_arg(dtype, op, "dtype");
  const at::Tensor codes = codes_in.contiguous();
  const AffineParams p = affine_params(codes, scale_in, zp_in, op);
  check_cuda(codes, op, "codes");
  const c10::cuda::CUDAGuard guard(codes.device());
  at::Tensor y = at::empty(codes.sizes(), codes.options().dtype(dtype));
  if (codes.numel() == 0) return y;
  C10_CUDA_CHECK(cuda::launch_dequantize_affine(codes.const_data_ptr<int8_t>(), p.layout,
                                                p.scale.const_data_ptr<float>(), p.zero_point_ptr(), y.mutable_data_ptr(),
                                                float_type_of(dtype), c10::cuda::getCurrentCUDAStream()));
  return y;
}

}  // namespace

TORCH_LIBRARY_IMPL(lowbit, CUDA, m) {
  m.impl("choose_qparams_affine", &choose_qparams_affine_cuda);
  m.impl("quantize_affine", &quantize_affine_cuda);
  m.impl("dequantize_affine", &dequantize_affine_cuda);
}

}  // namespace lowbit::ops
