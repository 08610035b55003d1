#include "cpu/kernel_trace.h"

#include <atomic>
#include <mutex>
#include <vector>

namespace lowbit::cpu {
namespace {
// A small fixed table of (op, kernel) pointer pairs: one uncontended lock per call.
std::mutex& table_mutex() { static std::mutex m; return m; }
std::vector<std::pair<const char*, const char*>>& table() {
  static std::vector<std::pair<const char*, const char*>> t;
  return t;
}
}  // namespace

void note_kernel(const char* op, const char* kernel) {
  std::lock_guard<std::mutex> lock(table_mutex());
  for (auto& e : table())
    if (e.first == op) { e.second = kernel; return; }
  table().emplace_back(op, kernel);
}

std::map<std::string, std::string> last_kernels() {
  std::lock_guard<std::mutex> lock(table_mutex());
  std::map<std::string, std::string> out;
  for (const auto& e : table()) out[e.first] = e.second;
  return out;
}

}  // namespace lowbit::cpu
