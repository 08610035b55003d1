// CPU glue of linear_intx (W4A16 / W2A16): checks, activation workspace, threads
// over blocks of output channels. Kernels: csrc/cpu/gemm_intx.{h,cpp}.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <optional>

#include "cpu/gemm_intx.h"
#include "cpu/kernel_trace.h"
#include "ops/checks.h"
#include "ops/linear_common.h"
#include "ops/linear_weights.h"

namespace lowbit::ops {
namespace {

constexpr const char* kOp = "linear_intx";

template <typename T>
const T* data_as(const at::Tensor& t) { return reinterpret_cast<const T*>(t.const_data_ptr()); }

at::Tensor linear_intx(const at::Tensor& x, const at::Tensor& packed_in, const at::Tensor& scale_in,
                       const std::optional<at::Tensor>& zero_point_in, int64_t bits,
                       const std::optional<at::Tensor>& bias, bool int8_activations) {
  const WeightShape ws_shape = check_intx_weight(x, packed_in, scale_in, zero_point_in, bits);
  const int64_t N = ws_shape.N, K = ws_shape.K, group_size = ws_shape.group_size;
  LinearArgs a = prepare_linear(x, N, K, bias, kOp);
  if (a.M == 0 || N == 0) return a.y;
  if (K == 0) {
    a.y.zero_();
    if (a.bias.defined()) a.y.add_(a.bias.to(a.y.scalar_type()));
    return a.y;
  }

  const at::Tensor packed = packed_in.contiguous();
  const at::Tensor scale = scale_in.contiguous();
  at::Tensor zero_point;
  if (zero_point_in.has_value()) zero_point = zero_point_in->contiguous();

  cpu::ZeroPoints zp;
  if (zero_point.defined() && zero_point.scalar_type() == at::kChar) zp.i8 = zero_point.const_data_ptr<int8_t>();
  else if (zero_point.defined()) zp.f32 = zero_point.const_data_ptr<float>();
  cpu::IntxWeights w{packed.const_data_ptr<uint8_t>(), scale.const_data_ptr<float>(), zp, N, K, group_size,
                     static_cast<int>(bits)};
  const int64_t M = a.M;
  const cpu::IntxPlan plan =
      cpu::intx_plan(w, M, int8_activations, a.x2d.scalar_type() == at::kBFloat16, bf16_terms(a.x2d.scalar_type()));
  cpu::note_kernel(kOp, plan.name);

  at::Tensor ws = at::empty({static_cast<int64_t>(cpu::intx_workspace_bytes(plan, w, M))},
                            x.options().dtype(at::kByte));
  void* wsp = ws.mutable_data_ptr();
  // the bfloat16 panels read bfloat16 x: float32 x (matmul precision "medium") rounded first
  const at::Tensor xk = plan.kind == cpu::IntxKernel::Avx512PackedBf16 ? a.x2d.to(at::kBFloat16) : a.x2d;
  const at::ScalarType dt = xk.scalar_type();
  // Rows of x are independent: a few rows per task.
  at::parallel_for(0, M, std::max<int64_t>(1, (int64_t{1} << 15) / K), [&](int64_t b, int64_t e) {
    if (dt == at::kFloat) cpu::intx_prepare(plan, w, data_as<float>(xk), M, wsp, b, e);
    else if (dt == at::kHalf) cpu::intx_prepare(plan, w, data_as<half_t>(xk), M, wsp, b, e);
    else cpu::intx_prepare(plan, w, data_as<bf16_t>(xk), M, wsp, b, e);
  });

  const bool f32_out = a.y.scalar_type() == at::kFloat;
  at::Tensor y32 = f32_out ? a.y : at::empty({M, N}, x.options().dtype(at::kFloat));
  float* yp = y32.mutable_data_ptr<float>();
  const float* bp = a.bias.defined() ? a.bias.const_data_ptr<float>() : nullptr;
  // Tasks of whole blocks of output channels; each output is summed by one task, in an
  // order fixed by the shapes, so results do not depend on the thread count.
  constexpr int64_t kChannelBlock = 16;
  const int64_t nblocks = (N + kChannelBlock - 1) / kChannelBlock;
  // Aim for >= ~256K weight elements per task so that small layers stay on one thread.
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 18) / (K * kChannelBlock * std::max<int64_t>(1, M / 4)));
  at::parallel_for(0, nblocks, grain, [&](int64_t b, int64_t e) {
    cpu::intx_compute(plan, w, wsp, M, bp, yp, b * kChannelBlock, std::min(N, e * kChannelBlock));
  });
  if (!f32_out) a.y.view({M, N}).copy_(y32);
  return a.y;
}

}  // namespace

TORCH_LIBRARY_IMPL(lowbit, CPU, m) { m.impl("linear_intx", &linear_intx); }

}  // namespace lowbit::ops
