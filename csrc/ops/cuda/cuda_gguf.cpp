// CUDA glue of the GGUF ops: quantize / dequantize Q8_0 and Q4_0 blocks, and
// linear_q8_0 / linear_q4_0. The CPU op's checks and messages, output allocation on
// the input's device, launches on the current stream. Non-contiguous inputs are
// copied to contiguous memory first.
//
// Differs from the CPU op (docs/cuda.md):
//   - quantize_q8_0 / quantize_q4_0 do not raise on NaN or +-inf (finding them would
//     need a device-to-host sync); such a block is written with an fp16 NaN scale and
//     codes 0, so it dequantizes to NaN.
//   - linear_q8_0 / linear_q4_0 are not fused kernels: they dequantize the weight to
//     x's dtype with the kernel above, then call cuBLAS (at::mm / at::addmm). The
//     int8_activations flag is accepted and ignored.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <optional>
#include <vector>

#include "cpu/kernel_trace.h"
#include "cuda/gguf.cuh"
#include "ops/checks.h"
#include "ops/layout_checks.h"
#include "ops/linear_weights.h"
#include "ops/linear_common.h"

namespace lowbit::ops {
namespace {

using cpu::kGgufBlockElems;
constexpr int64_t kQ8_0BlockBytes = 34;
constexpr int64_t kQ4_0BlockBytes = 18;

using QuantizeLaunch = cudaError_t (*)(const void*, FloatType, int64_t, uint8_t*, cudaStream_t);
using DequantizeLaunch = cudaError_t (*)(const uint8_t*, int64_t, void*, FloatType, cudaStream_t);


at::Tensor quantize_blocks_cuda(const at::Tensor& x_in, const char* op, int64_t block_bytes, QuantizeLaunch launch) {
  const std::vector<int64_t> shape = gguf_quantize_shape(x_in, op, block_bytes);
  check_cuda(x_in, op, "x");
  const c10::cuda::CUDAGuard guard(x_in.device());
  at::Tensor out = at::empty(shape, x_in.options().dtype(at::kByte));
  const int64_t nblocks = x_in.numel() / kGgufBlockElems;
  if (nblocks == 0) return out;
  const at::Tensor x = x_in.contiguous();
  C10_CUDA_CHECK(launch(x.const_data_ptr(), float_type_of(x.scalar_type()), nblocks, out.mutable_data_ptr<uint8_t>(),
                        c10::cuda::getCurrentCUDAStream()));
  return out;
}

// Checks of the CPU op; returns the float output [..., K / 32 * 32] in `dtype`.
at::Tensor dequantize_blocks_cuda(const at::Tensor& blocks_in, at::ScalarType dtype, const char* op,
                                  int64_t block_bytes, DequantizeLaunch launch) {
  const std::vector<int64_t> shape = gguf_dequantize_shape(blocks_in, dtype, op, block_bytes);
  check_cuda(blocks_in, op, "blocks");
  const c10::cuda::CUDAGuard guard(blocks_in.device());
  at::Tensor y = at::empty(shape, blocks_in.options().dtype(dtype));
  const int64_t nblocks = blocks_in.numel() / block_bytes;
  if (nblocks == 0) return y;
  const at::Tensor blocks = blocks_in.contiguous();
  C10_CUDA_CHECK(launch(blocks.const_data_ptr<uint8_t>(), nblocks, y.mutable_data_ptr(), float_type_of(dtype),
                        c10::cuda::getCurrentCUDAStream()));
  return y;
}

at::Tensor quantize_q8_0_cuda(const at::Tensor& x) {
  return quantize_blocks_cuda(x, "quantize_q8_0", kQ8_0BlockBytes, &cuda::launch_quantize_q8_0);
}
at::Tensor quantize_q4_0_cuda(const at::Tensor& x) {
  return quantize_blocks_cuda(x, "quantize_q4_0", kQ4_0BlockBytes, &cuda::launch_quantize_q4_0);
}
at::Tensor dequantize_q8_0_cuda(const at::Tensor& blocks, at::ScalarType dtype) {
  return dequantize_blocks_cuda(blocks, dtype, "dequantize_q8_0", kQ8_0BlockBytes, &cuda::launch_dequantize_q8_0);
}
at::Tensor dequantize_q4_0_cuda(const at::Tensor& blocks, at::ScalarType dtype) {
  return dequantize_blocks_cuda(blocks, dtype, "dequantize_q4_0", kQ4_0BlockBytes, &cuda::launch_dequantize_q4_0);
}

// y = x @ dequantize(blocks).T + bias: the weight [N, K] is dequantized to x's dtype
// (one pass of the kernel above), then cuBLAS multiplies. The bias is added by addmm
// in x's dtype (the CPU op adds it in float32).
at::Tensor linear_gguf_cuda(const at::Tensor& x, const at::Tensor& blocks_in, const std::optional<at::Tensor>& bias,
                            const char* op, int64_t block_bytes, DequantizeLaunch launch) {
  const WeightShape shape = check_gguf_weight(x, blocks_in, op, block_bytes);
  const int64_t N = shape.N, K = shape.K;
  const c10::cuda::CUDAGuard guard(x.device());
  LinearArgs a = prepare_linear(x, N, K, bias, op);
  check_cuda(x, op, "x");
  if (a.M == 0 || N == 0) return a.y;
  const at::Tensor blocks = blocks_in.contiguous();
  at::Tensor w = at::empty({N, K}, a.x2d.options());  // dtype of x
  const int64_t nblocks = N * (K / kGgufBlockElems);
  if (nblocks > 0)
    C10_CUDA_CHECK(launch(blocks.const_data_ptr<uint8_t>(), nblocks, w.mutable_data_ptr(),
                          float_type_of(x.scalar_type()), c10::cuda::getCurrentCUDAStream()));
  at::Tensor y2d = a.y.view({a.M, N});
  if (a.bias.defined()) at::addmm_out(y2d, a.bias.to(x.scalar_type()), a.x2d, w.t());
  else at::mm_out(y2d, a.x2d, w.t());
  cpu::note_kernel(op, "cuda_dequant_cublas");
  return a.y;
}

at::Tensor linear_q8_0_cuda(const at::Tensor& x, const at::Tensor& blocks, const std::optional<at::Tensor>& bias,
                            bool /*int8_activations: ignored on CUDA*/) {
  return linear_gguf_cuda(x, blocks, bias, "linear_q8_0", kQ8_0BlockBytes, &cuda::launch_dequantize_q8_0);
}

at::Tensor linear_q4_0_cuda(const at::Tensor& x, const at::Tensor& blocks, const std::optional<at::Tensor>& bias,
                            bool /*int8_activations: ignored on CUDA*/) {
  return linear_gguf_cuda(x, blocks, bias, "linear_q4_0", kQ4_0BlockBytes, &cuda::launch_dequantize_q4_0);
}

}  // namespace

TORCH_LIBRARY_IMPL(lowbit, CUDA, m) {
  m.impl("quantize_q8_0", &quantize_q8_0_cuda);
  m.impl("dequantize_q8_0", &dequantize_q8_0_cuda);
  m.impl("quantize_q4_0", &quantize_q4_0_cuda);
  m.impl("dequantize_q4_0", &dequantize_q4_0_cuda);
  m.impl("linear_q8_0", &linear_q8_0_cuda);
  m.impl("linear_q4_0", &linear_q4_0_cuda);
}

}  // namespace lowbit::ops
