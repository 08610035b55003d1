#include "cpu/isa.h"

#include <atomic>
#include <cstdlib>
#include <stdexcept>

namespace lowbit::cpu {

bool cpu_has_avx2() {
#if defined(LOWBIT_HAVE_AVX2) && (defined(__GNUC__) || defined(__clang__))
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
           __builtin_cpu_supports("f16c");
  }();
  return has;
#else
  return false;
#endif
}

bool cpu_has_avx512() {
#if defined(LOWBIT_HAVE_AVX512) && (defined(__GNUC__) || defined(__clang__))
  // libgcc sets the avx512 features only when the OS saves the zmm state (XCR0).
  static const bool has = [] {
    __builtin_cpu_init();
    return cpu_has_avx2() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
  }();
  return has;
#else
  return false;
#endif
}

bool cpu_has_avx512_bf16() {
#if defined(LOWBIT_HAVE_AVX512_BF16) && (defined(__GNUC__) || defined(__clang__))
  static const bool has = [] {
    __builtin_cpu_init();
    return cpu_has_avx512() && __builtin_cpu_supports("avx512bf16");
  }();
  return has;
#else
  return false;
#endif
}

namespace {
Isa parse(const std::string& name) {
  if (name == "portable") return Isa::Portable;
  if (name == "avx2") {
    if (!cpu_has_avx2())
      throw std::invalid_argument("lowbit: ISA 'avx2' requested but this CPU or build lacks AVX2/FMA/F16C");
    return Isa::Avx2;
  }
  if (name == "avx512") {
    if (!cpu_has_avx512())
      throw std::invalid_argument("lowbit: ISA 'avx512' requested but this CPU or build lacks AVX-512 F/BW/VL/VNNI");
    return Isa::Avx512;
  }
  throw std::invalid_argument("lowbit: unknown CPU ISA '" + name + "'; expected 'portable', 'avx2' or 'avx512'");
}

Isa initial() {
  if (const char* env = std::getenv("LOWBIT_CPU_ISA")) return parse(env);
  return cpu_has_avx512() ? Isa::Avx512 : cpu_has_avx2() ? Isa::Avx2 : Isa::Portable;
}

std::atomic<int>& current() {
  static std::atomic<int> isa{static_cast<int>(initial())};
  return isa;
}
}  // namespace

Isa active_isa() { return static_cast<Isa>(current().load(std::memory_order_relaxed)); }

void set_isa(const std::string& name) { current().store(static_cast<int>(parse(name))); }

const char* isa_name(Isa isa) {
  return isa == Isa::Avx512 ? "avx512" : isa == Isa::Avx2 ? "avx2" : "portable";
}

}  // namespace lowbit::cpu
