// Small-M tensor-core GEMM, float8 weights (e4m3fn and e5m2; kernel and layout: gemm_wx_kernel.cuh).
#include "cuda/gemm_wx_kernel.cuh"

LOWBIT_WX_DEFINE_KIND(e4m3, lowbit::cuda::gemm::WeightKind::Fp8E4M3)
LOWBIT_WX_DEFINE_KIND(e5m2, lowbit::cuda::gemm::WeightKind::Fp8E5M2)
