// CPU glue of pack_bits / unpack_bits: checks, output allocation, threading.
// Non-contiguous inputs are accepted and copied to contiguous memory first.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <vector>

#include "cpu/packing.h"
#include "ops/checks.h"
#include "ops/layout_checks.h"

namespace lowbit::ops {
namespace {

// Codes per parallel task. A multiple of 4, so a chunk of a long row starts on a
// byte boundary for both bit widths.
constexpr int64_t kTaskCodes = int64_t{1} << 16;


// Splits `rows` rows of `n` codes into parallel tasks and calls
// fn(code_offset, byte_offset, task_rows, task_n) for each. Rows whose length fills
// whole bytes lie back to back in both layouts, so they are treated as one long row;
// long rows are cut into chunks of kTaskCodes codes; short rows are grouped.
template <class Fn>
void for_each_task(int64_t rows, int64_t n, int64_t bits, Fn fn) {
  if (rows == 0 || n == 0) return;
  if ((n * bits) % 8 == 0) {
    n *= rows;
    rows = 1;
  }
  if (n >= kTaskCodes) {
    const int64_t per_row = (n + kTaskCodes - 1) / kTaskCodes;
    const int64_t nb = packed_len(n, bits);
    at::parallel_for(0, rows * per_row, 1, [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t) {
        const int64_t r = t / per_row, i0 = (t % per_row) * kTaskCodes;
        fn(r * n + i0, r * nb + i0 * bits / 8, int64_t{1}, std::min(kTaskCodes, n - i0));
      }
    });
    return;
  }
  const int64_t nb = packed_len(n, bits);
  at::parallel_for(0, rows, std::max<int64_t>(1, kTaskCodes / n), [&](int64_t b, int64_t e) {
    fn(b * n, b * nb, e - b, n);
  });
}

at::Tensor pack_bits(const at::Tensor& codes, int64_t bits) {
  const std::vector<int64_t> shape = pack_bits_shape(codes, bits);
  const at::Tensor c = codes.contiguous();
  const int64_t n = c.size(-1), rows = rows_of(c);
  at::Tensor out = at::empty(shape, c.options().dtype(at::kByte));
  const int8_t* src = c.const_data_ptr<int8_t>();
  uint8_t* dst = out.mutable_data_ptr<uint8_t>();
  std::atomic<bool> ok{true};
  for_each_task(rows, n, bits, [&](int64_t ci, int64_t bi, int64_t r, int64_t len) {
    if (!cpu::pack_bits(src + ci, r, len, static_cast<int>(bits), dst + bi)) ok.store(false, std::memory_order_relaxed);
  });
  if (!ok.load()) {
    // Slow path, errors only: report the offending range.
    const auto mn = c.min().item<int64_t>(), mx = c.max().item<int64_t>();
    TORCH_CHECK(false, "lowbit.pack_bits: expected codes in [", qmin_of(bits), ", ", qmax_of(bits), "] for bits=",
                bits, ", got codes ranging over [", mn, ", ", mx, "]");
  }
  return out;
}

at::Tensor unpack_bits(const at::Tensor& packed, int64_t bits, int64_t n) {
  const std::vector<int64_t> shape = unpack_bits_shape(packed, bits, n);
  const at::Tensor p = packed.contiguous();
  const int64_t rows = rows_of(p);
  at::Tensor out = at::empty(shape, p.options().dtype(at::kChar));
  const uint8_t* src = p.const_data_ptr<uint8_t>();
  int8_t* dst = out.mutable_data_ptr<int8_t>();
  for_each_task(rows, n, bits, [&](int64_t ci, int64_t bi, int64_t r, int64_t len) {
    cpu::unpack_bits(src + bi, r, len, static_cast<int>(bits), dst + ci);
  });
  return out;
}

}  // namespace
}  // namespace lowbit::ops

TORCH_LIBRARY_IMPL(lowbit, CPU, m) {
  m.impl("pack_bits", &lowbit::ops::pack_bits);
  m.impl("unpack_bits", &lowbit::ops::unpack_bits);
}
