// CUDA glue of linear_intx (W4A16 / W2A16): the CPU op's checks and errors, then the
// tensor-core kernel (float16 / bfloat16 x, up to LOWBIT_CUDA_SMALL_M_MAX rows, groups of a
// multiple of 32) or dequantize + cuBLAS (everything else). docs/cuda.md ("Mixed-precision GEMMs").
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <optional>

#include "ops/cuda/cuda_linear_common.h"
#include "ops/linear_weights.h"

namespace lowbit::ops {
namespace {

constexpr const char* kOp = "linear_intx";

at::Tensor linear_intx_cuda(const at::Tensor& x, const at::Tensor& packed_in, const at::Tensor& scale_in,
                            const std::optional<at::Tensor>& zero_point_in, int64_t bits,
                            const std::optional<at::Tensor>& bias, bool int8_activations) {
  using namespace cuda_linear;
  (void)int8_activations;  // ignored on CUDA: the 16-bit tensor-core path is exact and memory-bound
  const WeightShape ws_shape = check_intx_weight(x, packed_in, scale_in, zero_point_in, bits);
  const int64_t N = ws_shape.N, K = ws_shape.K, group_size = ws_shape.group_size;
  const int64_t G = scale_in.size(1);  // groups per row
  check_cuda_device(x, kOp);  // before the guard, which would reject a CPU x with its own message
  c10::cuda::CUDAGuard guard(x.device());
  LinearArgs a = prepare_linear(x, N, K, bias, kOp);
  if (a.M == 0 || N == 0) return a.y;
  if (K == 0) return empty_k_result(a);

  const at::Tensor packed = aligned_contiguous(packed_in);
  const at::Tensor scale = scale_in.contiguous();
  at::Tensor zero_point;
  // int8 zero points (integers, a quarter of the bytes: a CPU-side saving) are widened once
  // here: the CUDA kernels read float32 ones, and [N, K / group_size] is small
  if (zero_point_in.has_value()) zero_point = zero_point_in->to(at::kFloat).contiguous();
  const WeightKind kind = bits == 4 ? WeightKind::Int4 : WeightKind::Int2;
  const float* zp = ptr_or_null(zero_point);

  const bool act16 = a.x2d.scalar_type() != at::kFloat;
  if (act16 && a.M <= tuning().small_m_max && lowbit::cuda::gemm::wx_gemm_supported(kind, K, group_size)) {
    WxArgs args;
    args.w = packed.const_data_ptr<uint8_t>();
    args.scale = scale.const_data_ptr<float>();
    args.zero_point = zp;
    args.groups = G;
    const bool split = run_wx(kind, a, aligned_contiguous(a.x2d), args, at::Tensor());
    cpu::note_kernel(kOp, split ? "cuda_mma_splitk" : "cuda_mma");
    return a.y;
  }
  dequant_matmul(a, [&](int64_t n0, int64_t n1, void* out, ElemType type) {
    C10_CUDA_CHECK(lowbit::cuda::gemm::launch_dequantize_weight(kind, packed.const_data_ptr<uint8_t>(),
                                                                scale.const_data_ptr<float>(), zp, G, 0, N, K, n0,
                                                                n1, out, type, stream()));
  });
  cpu::note_kernel(kOp, "cuda_dequant_cublas");
  return a.y;
}

}  // namespace

TORCH_LIBRARY_IMPL(lowbit, CUDA, m) { m.impl("linear_intx", &linear_intx_cuda); }

}  // namespace lowbit::ops
