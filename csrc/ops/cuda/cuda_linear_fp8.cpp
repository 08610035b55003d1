// CUDA glue of linear_fp8 (float8 e4m3fn / e5m2 weights x float activations): the CPU op's
// checks and errors; the tensor-core kernel for float16 / bfloat16 x with few rows, else
// dequantize + cuBLAS. docs/cuda.md ("Mixed-precision GEMMs").
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <optional>

#include "ops/cuda/cuda_linear_common.h"
#include "ops/linear_weights.h"

namespace lowbit::ops {
namespace {

constexpr const char* kOp = "linear_fp8";

at::Tensor linear_fp8_cuda(const at::Tensor& x, const at::Tensor& q_in, const at::Tensor& scale_in,
                           const std::optional<at::Tensor>& bias) {
  using namespace cuda_linear;
  namespace g = lowbit::cuda::gemm;
  const WeightShape shape = check_fp8_weight(x, q_in, scale_in);
  const int64_t N = shape.N, K = shape.K;
  check_cuda_device(x, kOp);  // before the guard, which would reject a CPU x with its own message
  c10::cuda::CUDAGuard guard(x.device());
  LinearArgs a = prepare_linear(x, N, K, bias, kOp);
  if (a.M == 0 || N == 0) return a.y;
  if (K == 0) return empty_k_result(a);

  const at::Tensor q = aligned_contiguous(q_in);
  const at::Tensor scale = scale_in.contiguous();
  const WeightKind kind = q.scalar_type() == at::kFloat8_e4m3fn ? WeightKind::Fp8E4M3 : WeightKind::Fp8E5M2;
  const int64_t cs_stride = scale.size(0) == 1 ? 0 : 1;
  const uint8_t* wp = static_cast<const uint8_t*>(q.const_data_ptr());
  const float* sp = scale.const_data_ptr<float>();

  if (a.x2d.scalar_type() != at::kFloat && a.M <= tuning().small_m_max && g::wx_gemm_supported(kind, K, 0)) {
    WxArgs args;
    args.w = wp;
    args.col_scale = sp;
    args.col_scale_stride = cs_stride;
    const bool split = run_wx(kind, a, aligned_contiguous(a.x2d), args, at::Tensor());
    cpu::note_kernel(kOp, split ? "cuda_mma_splitk" : "cuda_mma");
    return a.y;
  }
  dequant_matmul(a, [&](int64_t n0, int64_t n1, void* o, ElemType type) {
    C10_CUDA_CHECK(g::launch_dequantize_weight(kind, wp, sp, nullptr, 1, cs_stride, N, K, n0, n1, o, type, stream()));
  });
  cpu::note_kernel(kOp, "cuda_dequant_cublas");
  return a.y;
}

}  // namespace

TORCH_LIBRARY_IMPL(lowbit, CUDA, m) { m.impl("linear_fp8", &linear_fp8_cuda); }

}  // namespace lowbit::ops
