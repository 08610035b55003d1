// Run-time choice between the portable kernels, the AVX2/FMA/F16C ones and, for the
// kernels that have one, an AVX-512 (F, BW, VL, VNNI) version.
#pragma once
#include <string>

namespace lowbit::cpu {

// Ordered: each ISA can run every kernel of the ones before it.
enum class Isa { Portable, Avx2, Avx512 };

// What this CPU and this build can run.
bool cpu_has_avx2();
// AVX-512 F + BW + VL + VNNI (with OS support for the zmm state) and the AVX2 set.
bool cpu_has_avx512();
// cpu_has_avx512() and AVX512_BF16 (vdpbf16ps), in this build.
bool cpu_has_avx512_bf16();
// The ISA kernels dispatch to now: the best available, unless forced with
// set_isa() or the environment variable LOWBIT_CPU_ISA=portable|avx2|avx512.
Isa active_isa();
// Forces an ISA (tests use it to cover the portable path); throws
// std::invalid_argument for an unknown name or one this CPU cannot run.
void set_isa(const std::string& name);
const char* isa_name(Isa isa);

// Kernels without an AVX-512 version run their AVX2 one under Isa::Avx512.
inline bool use_avx2() { return active_isa() >= Isa::Avx2; }
inline bool use_avx512() { return active_isa() == Isa::Avx512; }
// The bfloat16 panel path belongs to the avx512 tier, on CPUs that also have AVX512_BF16.
inline bool use_avx512_bf16() { return use_avx512() && cpu_has_avx512_bf16(); }

}  // namespace lowbit::cpu

// The body of a kernel entry point: `avx2::fn(args)` when the AVX2 kernels are built
// and selected, `portable::fn(args)` otherwise. Non-x86 builds never name avx2::.
#if defined(LOWBIT_HAVE_AVX2)
#define LOWBIT_CPU_DISPATCH(fn, ...) \
  return ::lowbit::cpu::use_avx2() ? avx2::fn(__VA_ARGS__) : portable::fn(__VA_ARGS__)
#else
#define LOWBIT_CPU_DISPATCH(fn, ...) return portable::fn(__VA_ARGS__)
#endif

// The same with an AVX-512 version first, for the kernels that have one.
#if defined(LOWBIT_HAVE_AVX512)
#define LOWBIT_CPU_DISPATCH3(fn, ...)                                                    \
  if (::lowbit::cpu::use_avx512()) return avx512::fn(__VA_ARGS__);                       \
  LOWBIT_CPU_DISPATCH(fn, __VA_ARGS__)
#else
#define LOWBIT_CPU_DISPATCH3(fn, ...) LOWBIT_CPU_DISPATCH(fn, __VA_ARGS__)
#endif
