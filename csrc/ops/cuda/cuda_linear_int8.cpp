// CUDA glue of linear_int8: W8A16 (float activations) and W8A8 (int8_activations=True:
// per-token int8 activations, int32-exact dot products, fused rescale). The CPU op's checks
// and errors; paths in docs/cuda.md ("Mixed-precision GEMMs").
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <optional>

#include "ops/cuda/cuda_linear_common.h"
#include "ops/linear_weights.h"

namespace lowbit::ops {
namespace {

constexpr const char* kOp = "linear_int8";
constexpr int64_t kInt8ActMaxK = 131072;  // as the CPU op: 127 * 128 * K < 2^31

at::Tensor linear_int8_cuda(const at::Tensor& x, const at::Tensor& codes_in, const at::Tensor& scale_in,
                            const std::optional<at::Tensor>& bias, bool int8_activations) {
  using namespace cuda_linear;
  namespace g = lowbit::cuda::gemm;
  const WeightShape shape = check_int8_weight(x, codes_in, scale_in);
  const int64_t N = shape.N, K = shape.K;
  check_cuda_device(x, kOp);  // before the guard, which would reject a CPU x with its own message
  c10::cuda::CUDAGuard guard(x.device());
  LinearArgs a = prepare_linear(x, N, K, bias, kOp);
  const int64_t M = a.M;
  if (M == 0 || N == 0) return a.y;
  TORCH_CHECK(!int8_activations || K <= kInt8ActMaxK, "lowbit.linear_int8: expected K <= ", kInt8ActMaxK,
              " with int8_activations=True (int32 accumulators), got K = ", K);
  if (K == 0) return empty_k_result(a);

  const at::Tensor codes = aligned_contiguous(codes_in);
  const at::Tensor scale = scale_in.contiguous();
  const float* sp = scale.const_data_ptr<float>();
  const uint8_t* wp = static_cast<const uint8_t*>(codes.const_data_ptr());
  const ElemType out = elem_type(a.y.scalar_type());
  const bool mma_ok = g::wx_gemm_supported(WeightKind::Int8, K, 0);
  WxArgs args;
  args.w = wp;
  args.col_scale = sp;
  args.col_scale_stride = 1;

  if (!int8_activations) {  // W8A16
    if (a.x2d.scalar_type() != at::kFloat && M <= tuning().w8a16_m_max && mma_ok) {
      const bool split = run_wx(WeightKind::Int8, a, aligned_contiguous(a.x2d), args, at::Tensor());
      cpu::note_kernel(kOp, split ? "cuda_mma_splitk" : "cuda_mma");
      return a.y;
    }
    dequant_matmul(a, [&](int64_t n0, int64_t n1, void* o, ElemType type) {
      C10_CUDA_CHECK(g::launch_dequantize_weight(WeightKind::Int8, wp, sp, nullptr, 1, 1, N, K, n0, n1, o, type,
                                                 stream()));
    });
    cpu::note_kernel(kOp, "cuda_dequant_cublas");
    return a.y;
  }

  // W8A8: per-token scales sx [M] and codes, then an exact integer dot product.
  const at::Tensor x2d = aligned_contiguous(a.x2d);
  const ElemType xt = elem_type(x2d.scalar_type());
  at::Tensor sx = at::empty({M}, x2d.options().dtype(at::kFloat));
  float* sxp = sx.mutable_data_ptr<float>();
  if (M > tuning().small_m_max && M > 16 && K % 8 == 0 && N % 8 == 0) {
    // cuBLASLt int8 GEMM (at::_int_mm needs M > 16, K and N multiples of 8), then the rescale.
    at::Tensor xq = at::empty({M, K}, x2d.options().dtype(at::kChar));
    C10_CUDA_CHECK(g::launch_quantize_rows_int8(x2d.const_data_ptr(), xt, M, K, xq.mutable_data_ptr(),
                                                g::kCodesInt8, sxp, stream()));
    const at::Tensor acc = at::_int_mm(xq, codes.t());  // codes.t(): column-major [K, N], as cuBLASLt wants
    C10_CUDA_CHECK(g::launch_finish_i32acc(acc.const_data_ptr<int32_t>(), M, N, sxp, sp, 1, ptr_or_null(a.bias),
                                           a.y.mutable_data_ptr(), out, stream()));
    cpu::note_kernel(kOp, "cuda_int_mm");
    return a.y;
  }
  if (mma_ok) {
    // The codes as exact 16-bit floats through the tensor-core kernel: products are exact and
    // float32 sums of integers stay exact below 2^24 (always for K <= 1032), so this equals the
    // int32 dot product; row and column scales and bias are applied in the same order.
    const at::ScalarType ct = x2d.scalar_type() == at::kBFloat16 ? at::kBFloat16 : at::kHalf;
    at::Tensor xq = at::empty({M, K}, x2d.options().dtype(ct));
    C10_CUDA_CHECK(g::launch_quantize_rows_int8(x2d.const_data_ptr(), xt, M, K, xq.mutable_data_ptr(),
                                                static_cast<int>(elem_type(ct)), sxp, stream()));
    const bool split = run_wx(WeightKind::Int8, a, xq, args, sx);
    cpu::note_kernel(kOp, split ? "cuda_mma_int8act_splitk" : "cuda_mma_int8act");
    return a.y;
  }
  // Any other shape: float32 codes through cuBLAS (exact products; TF32 also holds 8-bit codes).
  at::Tensor xq = at::empty({M, K}, x2d.options().dtype(at::kFloat));
  C10_CUDA_CHECK(g::launch_quantize_rows_int8(x2d.const_data_ptr(), xt, M, K, xq.mutable_data_ptr(),
                                              static_cast<int>(ElemType::F32), sxp, stream()));
  const at::Tensor acc = at::mm(xq, codes.to(at::kFloat).t());
  C10_CUDA_CHECK(g::launch_finish_f32acc(acc.const_data_ptr<float>(), 1, M, N, sxp, sp, 1, ptr_or_null(a.bias),
                                         a.y.mutable_data_ptr(), out, stream()));
  cpu::note_kernel(kOp, "cuda_f32mm_int8act");
  return a.y;
}

}  // namespace

TORCH_LIBRARY_IMPL(lowbit, CUDA, m) { m.impl("linear_int8", &linear_int8_cuda); }

}  // namespace lowbit::ops
