// Which kernel ran last for each op, so that no slow path stays silent:
// glue calls note_kernel("linear_intx", "avx2_int4_gemv") on every call, and
// lowbit.last_kernels() shows it from Python.
#pragma once
#include <map>
#include <string>

namespace lowbit::cpu {

// Records the kernel an op just chose. `op` and `kernel` must be string literals.
void note_kernel(const char* op, const char* kernel);
// op -> kernel of the latest call of each op.
std::map<std::string, std::string> last_kernels();

}  // namespace lowbit::cpu
