// Shared CUDA glue of the mixed-precision linear ops (cuda_linear_{intx,int8,fp8}.cpp): device
// checks, tuning knobs, and the two GEMM paths (small-M tensor-core kernel, dequantize +
// cuBLAS). Kernels: csrc/cuda/gemm*.cu; design and routing: docs/cuda.md ("Mixed-precision GEMMs").
#pragma once
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>

#include "cpu/kernel_trace.h"
#include "cuda/gemm.cuh"
#include "ops/checks.h"
#include "ops/linear_common.h"

namespace lowbit::ops::cuda_linear {

using lowbit::cuda::gemm::ElemType;
using lowbit::cuda::gemm::WeightKind;
using lowbit::cuda::gemm::WxArgs;
using lowbit::cuda::gemm::WxPlan;

inline ElemType elem_type(at::ScalarType t) {
  return t == at::kFloat ? ElemType::F32 : (t == at::kHalf ? ElemType::F16 : ElemType::BF16);
}

inline int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return (v && *v) ? std::atoi(v) : fallback;
}

// Tuning knobs, read once per process (docs/cuda.md ("Mixed-precision GEMMs")):
//   LOWBIT_CUDA_SMALL_M_MAX       rows up to which the tensor-core kernel runs (default 64)
//   LOWBIT_CUDA_W8A16_M_MAX       the same for int8 weights with 16-bit x (default 128: at
//                                 M = 128 it beat dequantize + cuBLAS by 12-19% on an H100)
//   LOWBIT_CUDA_GEMM_KW / _SPLITS force the kernel's warps-along-K / split-K (0: automatic)
//   LOWBIT_CUDA_DEQUANT_CHUNK_MB  dequantize + cuBLAS in slices of this many MB of 16/32-bit
//                                 weight (0: the whole weight at once)
struct Tuning {
  int64_t small_m_max, w8a16_m_max;
  int kw, splits;
  int64_t chunk_bytes;
};

inline const Tuning& tuning() {
  static const Tuning t{env_int("LOWBIT_CUDA_SMALL_M_MAX", 64), env_int("LOWBIT_CUDA_W8A16_M_MAX", 128),
                        env_int("LOWBIT_CUDA_GEMM_KW", 0),
                        env_int("LOWBIT_CUDA_GEMM_SPLITS", 0),
                        static_cast<int64_t>(std::max(0, env_int("LOWBIT_CUDA_DEQUANT_CHUNK_MB", 0))) << 20};
  return t;
}

// The tensor-core kernels (mma.sync with bf16) need Ampere or newer; say so instead of
// failing with "no kernel image".
inline void check_cuda_device(const at::Tensor& x, const char* op) {
  TORCH_CHECK(x.is_cuda(), "lowbit.", op, ": expected x on a CUDA device (another argument is a CUDA tensor), got ",
              x.device());
  const int major = lowbit::cuda::gemm::device_cc_major(x.get_device());
  TORCH_CHECK(major >= 8, "lowbit.", op, ": the CUDA kernels need a GPU of compute capability >= 8.0 "
              "(Ampere or newer), got compute capability ", major, ".x on ", x.device());
}

inline bool aligned16(const at::Tensor& t) { return reinterpret_cast<uintptr_t>(t.const_data_ptr()) % 16 == 0; }

// Contiguous and 16-byte aligned (a contiguous view may start at any element; a clone does not).
inline at::Tensor aligned_contiguous(const at::Tensor& t) {
  at::Tensor c = t.contiguous();
  return aligned16(c) ? c : c.clone();
}

inline cudaStream_t stream() { return c10::cuda::getCurrentCUDAStream().stream(); }

inline const float* ptr_or_null(const at::Tensor& t) { return t.defined() ? t.const_data_ptr<float>() : nullptr; }

// y = (K == 0) bias or zeros, as the CPU ops give.
inline at::Tensor empty_k_result(LinearArgs& a) {
  a.y.zero_();
  if (a.bias.defined()) a.y.add_(a.bias.to(a.y.scalar_type()));
  return a.y;
}

// The tensor-core kernel on x_act ([M, K] F16/BF16, aligned): W (and its scales) in `args`;
// row_scale (W8A8) optional. Writes a.y directly when one split suffices and a.y has x_act's
// type, otherwise float32 partials + the finish kernel. Returns true when split-K ran.
inline bool run_wx(WeightKind kind, const LinearArgs& a, const at::Tensor& x_act, WxArgs args,
                   const at::Tensor& row_scale) {
  const ElemType act = elem_type(x_act.scalar_type());
  const ElemType out = elem_type(a.y.scalar_type());
  const Tuning& t = tuning();
  const WxPlan plan =
      lowbit::cuda::gemm::plan_wx_gemm(kind, act, a.M, a.N, a.K, x_act.get_device(), t.kw, t.splits);
  const bool final_out = plan.splits == 1 && out == act;
  at::Tensor ws;
  if (!final_out) ws = at::empty({plan.splits, a.M, a.N}, x_act.options().dtype(at::kFloat));
  args.x = x_act.const_data_ptr();
  args.M = a.M;
  args.N = a.N;
  args.K = a.K;
  args.row_scale = ptr_or_null(row_scale);
  args.bias = ptr_or_null(a.bias);
  args.out_final = final_out;
  args.y = final_out ? a.y.mutable_data_ptr() : nullptr;
  args.partials = final_out ? nullptr : ws.mutable_data_ptr<float>();
  C10_CUDA_CHECK(lowbit::cuda::gemm::launch_wx_gemm(kind, act, args, plan, stream()));
  if (!final_out) {
    C10_CUDA_CHECK(lowbit::cuda::gemm::launch_finish_f32acc(ws.const_data_ptr<float>(), plan.splits, a.M, a.N,
                                                            args.row_scale, args.col_scale, args.col_scale_stride,
                                                            args.bias, a.y.mutable_data_ptr(), out, stream()));
  }
  return !final_out;
}

// y = x @ dequantize(W).T + bias through cuBLAS (at::mm / at::addmm in x's dtype).
// dequant(n0, n1, out, type) writes rows [n0, n1) of W into out [n1 - n0, K]. With
// LOWBIT_CUDA_DEQUANT_CHUNK_MB the weight is done in row slices that a reused buffer holds.
template <class Dequant>
void dequant_matmul(const LinearArgs& a, Dequant&& dequant) {
  const at::ScalarType dt = a.x2d.scalar_type();
  const int64_t elem = at::elementSize(dt);
  int64_t rows = a.N;
  const int64_t chunk = tuning().chunk_bytes;
  if (chunk > 0) rows = std::max<int64_t>(64, chunk / std::max<int64_t>(1, a.K * elem) / 64 * 64);
  rows = std::min(rows, a.N);
  at::Tensor buf = at::empty({rows, a.K}, a.x2d.options());
  at::Tensor y2d = a.y.view({a.M, a.N});
  at::Tensor bias = a.bias.defined() ? a.bias.to(dt) : at::Tensor();
  for (int64_t n0 = 0; n0 < a.N; n0 += rows) {
    const int64_t nc = std::min(rows, a.N - n0);
    at::Tensor w = buf.narrow(0, 0, nc);
    dequant(n0, n0 + nc, w.mutable_data_ptr(), elem_type(dt));
    at::Tensor out = nc == a.N ? y2d : y2d.narrow(1, n0, nc);
    if (bias.defined()) at::addmm_out(out, bias.narrow(0, n0, nc), a.x2d, w.t());
    else at::mm_out(out, a.x2d, w.t());
  }
}

}  // namespace lowbit::ops::cuda_linear
