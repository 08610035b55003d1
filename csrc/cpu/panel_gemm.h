// Whether a float-activation linear kernel takes the large-M path: weights decoded into
// float panels and a register-blocked FMA microkernel (csrc/cpu/avx2/panel_gemm_avx2.h),
// shared by every weight format. AVX2 only; the portable kernels have no such path.
//
// With bfloat16 activations on a CPU with AVX512_BF16 the panels hold bfloat16 weights
// instead and the microkernel is vdpbf16ps (csrc/cpu/avx2/panel_gemm_bf16.h packs,
// csrc/cpu/avx512bf16/panel_gemm_bf16.cpp multiplies): twice the multiply-adds per
// cycle of the float32 FMA. Formats with one scale per output channel (int8) keep their
// codes in the panel, exact in bfloat16, and scale the float32 sums; the group-wise ones
// round the scaled weight to bfloat16 (relative error 2^-9, against 2^-4 and more of
// 4-bit quantization itself).
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>

#include "lowbit/float_types.h"

namespace lowbit::cpu {

// True when the AVX2 kernels are in use and M rows x K inputs is large enough (M >= 32)
// for the panel path to beat the per-row kernels.
bool packed_float_gemm(int64_t M, int64_t K);

// True when bfloat16 activations of M rows x K inputs take the bfloat16 panel path:
// ISA avx512 in use, the CPU has AVX512_BF16, M >= 32 and K % 8 == 0.
bool packed_bf16_gemm(int64_t M, int64_t K);

namespace avx2 {
bool packed_gemm_applies(int64_t M, int64_t K);
}

// Raised by the bfloat16 entry points in builds without the AVX512_BF16 kernels, where
// packed_bf16_gemm() is false and the glue never calls them.
template <class... Args>
[[noreturn]] void no_bf16_kernels(const char* fn, const Args&...) {
  throw std::logic_error(std::string("lowbit: ") + fn + " called in a build without AVX512_BF16 kernels");
}

}  // namespace lowbit::cpu

// The body of a bfloat16 entry point (formats' cpu::*_bf16act): the AVX2 file's version,
// whose packing feeds the AVX512_BF16 microkernel, or no_bf16_kernels().
#if defined(LOWBIT_HAVE_AVX512_BF16)
#define LOWBIT_BF16_DISPATCH(fn, ...) return avx2::fn(__VA_ARGS__)
#else
#define LOWBIT_BF16_DISPATCH(fn, ...) ::lowbit::cpu::no_bf16_kernels(#fn, __VA_ARGS__)
#endif

namespace lowbit::cpu {

// Columns per strip of a bfloat16 panel. Layout of a panel of ncols columns x kc
// inputs (kc even): [strip][kc / 2][32 columns] of uint32, each the bfloat16 weights
// (k, k + 1) of one column, k in the low half.
constexpr int64_t kPanelStripBf16 = 32;

namespace avx512bf16 {
// y[M, ncols] (+)= x[M, kc] @ panel, x bfloat16 with row stride ldx (kc % 2 == 0);
// `first` starts from bias (or 0) instead of y. With col_scale (the last K block of a
// format whose panel holds unscaled codes), the sum is then y * col_scale[c] + bias[c],
// and `first` starts from 0. Needs AVX512_BF16.
void panel_gemm(const uint32_t* panel, int64_t ncols, int64_t kc, const bf16_t* x, int64_t ldx, int64_t M, float* y,
                int64_t ldy, bool first, const float* bias, const float* col_scale);
}  // namespace avx512bf16

}  // namespace lowbit::cpu
