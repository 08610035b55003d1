// no_contract(v): returns v, pinned in a register, so that the compiler cannot fuse the
// multiply that produced it with a following add into one FMA (-ffp-contract). The kernels
// that must round like another implementation (gguf-py's codes, the portable W8A8 epilogue)
// write `no_contract(a * b) + c`. Included by portable and ISA-specific files alike: the
// function is `static` so that no copy compiled with AVX flags can be linked into a
// portable caller.
#pragma once

namespace lowbit::cpu {

static inline float no_contract(float v) {
#if defined(__FMA__) || defined(__FP_FAST_FMAF) || defined(__ARM_FEATURE_FMA) || defined(__aarch64__)
#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
  __asm__("" : "+x"(v));
#elif (defined(__GNUC__) || defined(__clang__)) && defined(__aarch64__)
  __asm__("" : "+w"(v));
#else
  volatile float t = v;
  v = t;
#endif
#endif
  return v;
}

}  // namespace lowbit::cpu
