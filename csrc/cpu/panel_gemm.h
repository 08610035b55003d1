// Whether a float-activation linear kernel takes the large-M path: weights decoded into
// float panels and a register-blocked FMA microkernel (csrc/cpu/avx2/panel_gemm_avx2.h),
// shared by every weight format. AVX2 only; the portable kernels have no such path.
#pragma once
#include <cstdint>

namespace lowbit::cpu {

// True when the AVX2 kernels are in use and M rows x K inputs is large enough (M >= 32)
// for the panel path to beat the per-row kernels.
bool packed_float_gemm(int64_t M, int64_t K);

namespace avx2 {
bool packed_gemm_applies(int64_t M, int64_t K);
}

}  // namespace lowbit::cpu
