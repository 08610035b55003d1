// Run-time choice between the portable kernels and the AVX2/FMA/F16C ones.
#pragma once
#include <string>

namespace lowbit::cpu {

enum class Isa { Portable, Avx2 };

// What this CPU and this build can run.
bool cpu_has_avx2();
// The ISA kernels dispatch to now: the best available, unless forced with
// set_isa() or the environment variable LOWBIT_CPU_ISA=portable|avx2.
Isa active_isa();
// Forces an ISA (tests use it to cover the portable path); throws
// std::invalid_argument for an unknown name or one this CPU cannot run.
void set_isa(const std::string& name);
const char* isa_name(Isa isa);

inline bool use_avx2() { return active_isa() == Isa::Avx2; }

}  // namespace lowbit::cpu

// The body of a kernel entry point: `avx2::fn(args)` when the AVX2 kernels are built
// and selected, `portable::fn(args)` otherwise. Non-x86 builds never name avx2::.
#if defined(LOWBIT_HAVE_AVX2)
#define LOWBIT_CPU_DISPATCH(fn, ...) \
  return ::lowbit::cpu::use_avx2() ? avx2::fn(__VA_ARGS__) : portable::fn(__VA_ARGS__)
#else
#define LOWBIT_CPU_DISPATCH(fn, ...) return portable::fn(__VA_ARGS__)
#endif
