#include "cpu/streaming.h"

#include <atomic>
#include <fstream>
#include <string>

#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__)
#include <immintrin.h>
#define LOWBIT_X86 1
#endif

namespace lowbit::cpu {
namespace {

// The size of CPU 0's highest cache level as Linux's sysfs reports it ("32768K").
// Not sysconf(_SC_LEVEL3_CACHE_SIZE): glibc reports the whole package's L3 there
// (320 MiB on the development VM, whose cores share one 32 MiB L3).
int64_t last_level_cache_bytes() {
  int best_level = 0;
  int64_t best = 0;
  for (int i = 0; i < 8; ++i) {
    const std::string dir = "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(i) + "/";
    std::ifstream level_file(dir + "level"), size_file(dir + "size");
    int level = 0;
    std::string size;
    if (!(level_file >> level) || !(size_file >> size) || size.empty()) continue;
    int64_t bytes = 0;
    try { bytes = std::stoll(size); } catch (...) { continue; }
    const char unit = size.back();
    bytes <<= unit == 'K' ? 10 : unit == 'M' ? 20 : unit == 'G' ? 30 : 0;
    if (level > best_level) best_level = level, best = bytes;
  }
  return best;
}

int64_t default_min_bytes() {
  static const int64_t bytes = [] {
    const int64_t llc = last_level_cache_bytes();
    return llc > 0 ? llc : int64_t{32} << 20;
  }();
  return bytes;
}

std::atomic<int64_t>& forced() {
  static std::atomic<int64_t> v{-1};
  return v;
}

}  // namespace

int64_t streaming_min_bytes() {
  const int64_t f = forced().load(std::memory_order_relaxed);
  return f >= 0 ? f : default_min_bytes();
}

void set_streaming_min_bytes(int64_t bytes) { forced().store(bytes < 0 ? -1 : bytes); }

void streaming_fence() {
#if defined(LOWBIT_X86)
  _mm_sfence();
#else
  std::atomic_thread_fence(std::memory_order_seq_cst);
#endif
}

}  // namespace lowbit::cpu
