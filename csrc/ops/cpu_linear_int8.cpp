// CPU glue of linear_int8 (W8A16 and, with int8_activations, W8A8): checks, the float32
// view of x, per-token quantization of x, and threads over blocks of output channels.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <optional>

#include "cpu/gemm_int8.h"
#include "cpu/isa.h"
#include "cpu/kernel_trace.h"
#include "cpu/panel_gemm.h"
#include "ops/linear_common.h"
#include "ops/linear_weights.h"

namespace lowbit::ops {
namespace {

constexpr const char* kOp = "linear_int8";

// Output channels per parallel task: a multiple of 12 (the kernels' 3- and 4-row tiles).
int64_t channels_per_task(int64_t N, int64_t M, int64_t K) {
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  // Enough tasks to balance the threads, but each task worth >= ~256K multiply-adds.
  int64_t per = (N + 4 * threads - 1) / (4 * threads);
  const int64_t min_rows = std::max<int64_t>(1, (int64_t{1} << 18) / std::max<int64_t>(1, M * K));
  per = std::max(per, min_rows);
  return (per + 11) / 12 * 12;
}

at::Tensor linear_int8(const at::Tensor& x, const at::Tensor& codes, const at::Tensor& scale,
                       const std::optional<at::Tensor>& bias, bool int8_activations) {
  const WeightShape shape = check_int8_weight(x, codes, scale);
  const int64_t N = shape.N, K = shape.K;
  LinearArgs a = prepare_linear(x, N, K, bias, kOp);
  const int64_t M = a.M;
  if (M == 0 || N == 0) return a.y;
  TORCH_CHECK(!int8_activations || K <= cpu::kInt8ActMaxK, "lowbit.linear_int8: expected K <= ",
              cpu::kInt8ActMaxK, " with int8_activations=True (int32 accumulators), got K = ", K);

  const FloatIO io = float_io(a, !int8_activations);
  const at::Tensor w = codes.contiguous();
  const at::Tensor s = scale.contiguous();
  const int8_t* wp = w.const_data_ptr<int8_t>();
  const float* sp = s.const_data_ptr<float>();
  const float* bp = a.bias.defined() ? a.bias.const_data_ptr<float>() : nullptr;
  float* yp = io.yf.mutable_data_ptr<float>();
  const bool avx2 = cpu::use_avx2();
  const int64_t per = channels_per_task(N, M, K);
  const int64_t tasks = (N + per - 1) / per;

  if (int8_activations) {
    cpu::note_kernel(kOp, cpu::use_avx512() ? (M == 1 ? "avx512_gemv_int8act" : "avx512_gemm_int8act")
                          : avx2                ? (M == 1 ? "avx2_gemv_int8act" : "avx2_gemm_int8act")
                                                : "portable_int8act");
    const int64_t ldq = cpu::int8act_row_stride(K);
    at::Tensor xq = at::empty({M, ldq}, a.x2d.options().dtype(at::kChar));
    at::Tensor sx = at::empty({M}, a.x2d.options().dtype(at::kFloat));
    const float* xp = io.xf.const_data_ptr<float>();
    int8_t* qp = xq.mutable_data_ptr<int8_t>();
    float* sxp = sx.mutable_data_ptr<float>();
    at::parallel_for(0, M, std::max<int64_t>(1, (int64_t{1} << 16) / std::max<int64_t>(1, K)),
                     [&](int64_t b, int64_t e) {
                       cpu::quantize_rows_int8(xp + b * K, e - b, K, qp + b * ldq, ldq, sxp + b);
                     });
    at::parallel_for(0, tasks, 1, [&](int64_t b, int64_t e) {
      cpu::linear_int8_int8act(qp, ldq, sxp, M, K, wp, sp, bp, yp, N, b * per, std::min(N, e * per));
    });
  } else if (io.bf16_panels) {
    cpu::note_kernel(kOp, "avx512_packed_gemm_bf16act");
    const auto* xp = reinterpret_cast<const bf16_t*>(io.xf.const_data_ptr());
    at::parallel_for(0, tasks, 1, [&](int64_t b, int64_t e) {
      cpu::linear_int8_bf16act(xp, M, K, wp, sp, bp, yp, N, b * per, std::min(N, e * per));
    });
  } else {
    cpu::note_kernel(kOp, !avx2 ? "portable_f32act"
                          : cpu::packed_float_gemm(M, K) ? "avx2_packed_gemm_f32act"
                          : (M == 1 ? "avx2_gemv_f32act" : "avx2_gemm_f32act"));
    const float* xp = io.xf.const_data_ptr<float>();
    at::parallel_for(0, tasks, 1, [&](int64_t b, int64_t e) {
      cpu::linear_int8_f32act(xp, M, K, wp, sp, bp, yp, N, b * per, std::min(N, e * per));
    });
  }
  finish(a, io);
  return a.y;
}

}  // namespace

TORCH_LIBRARY_IMPL(lowbit, CPU, m) {
  m.impl("linear_int8", &linear_int8);
}

}  // namespace lowbit::ops
