// Small-M tensor-core GEMM, int2 weights (kernel and layout: gemm_wx_kernel.cuh).
#include "cuda/gemm_wx_kernel.cuh"

LOWBIT_WX_DEFINE_KIND(int2, lowbit::cuda::gemm::WeightKind::Int2)
