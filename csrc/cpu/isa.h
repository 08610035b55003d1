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
