// Internal: per-weight-kind entry points of the small-M tensor-core kernel. Each is defined
// (explicitly instantiated) in its own gemm_wx_<kind>.cu so the kinds compile in parallel;
// gemm_plan.cu dispatches to them. Not part of the public header gemm.cuh.
#pragma once
#include <cuda_runtime.h>

#include "cuda/gemm.cuh"

namespace lowbit::cuda::gemm::wx {

constexpr int kWarps = 4;               // warps per block
constexpr int kThreads = 32 * kWarps;   // 128 threads
constexpr int kNT = 4;                  // 8-channel mma tiles per warp: a warp owns 32 output channels

// launch_<kind>: runs the kernel for act (F16 / BF16) and plan.mt (1, 2, 4).
// occupancy_<kind>: resident blocks per SM of that kernel (cudaOccupancyMaxActiveBlocksPerMultiprocessor).
#define LOWBIT_WX_DECLARE_KIND(NAME)                                                           \
  cudaError_t launch_##NAME(ElemType act, const WxArgs& a, const WxPlan& p, cudaStream_t stream); \
  int occupancy_##NAME(ElemType act, int mt);
LOWBIT_WX_DECLARE_KIND(int4)
LOWBIT_WX_DECLARE_KIND(int2)
LOWBIT_WX_DECLARE_KIND(int8)
LOWBIT_WX_DECLARE_KIND(e4m3)
LOWBIT_WX_DECLARE_KIND(e5m2)
#undef LOWBIT_WX_DECLARE_KIND

}  // namespace lowbit::cuda::gemm::wx
