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

namespace lowbit::ops {
namespace {

// Codes per parallel task. A multiple of 4, so a chunk of a long row starts on a
// byte boundary for both bit widths.
constexpr int64_t kTaskCodes = int64_t{1} << 16;

int64_t packed_len(int64_t n, int64_t bits) { return (n * bits + 7) / 8; }

void check_packing_bits(int64_t bits, const char* op) {
  TORCH_CHECK(bits == 2 || bits == 4, "lowbit.", op, ": expected bits 2 or 4, got ", bits,
              bits == 8 ? " (8-bit codes are stored one per int8 byte; there is nothing to pack)" : "");
}

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

int64_t rows_of(const at::Tensor& t) {
  int64_t rows = 1;
  for (int64_t d = 0; d + 1 < t.dim(); ++d) rows *= t.size(d);
  return rows;
}

at::Tensor pack_bits(const at::Tensor& codes, int64_t bits) {
  check_packing_bits(bits, "pack_bits");
  check_dtype(codes, at::kChar, "pack_bits", "codes");
  TORCH_CHECK(codes.dim() >= 1, "lowbit.pack_bits: expected codes of rank >= 1 (packing runs along the last axis), "
              "got a 0-d tensor");
  const at::Tensor c = codes.contiguous();
  const int64_t n = c.size(-1), rows = rows_of(c);
  std::vector<int64_t> shape(c.sizes().begin(), c.sizes().end());
  shape.back() = packed_len(n, bits);
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
  check_packing_bits(bits, "unpack_bits");
  check_dtype(packed, at::kByte, "unpack_bits", "packed");
  TORCH_CHECK(n >= 0, "lowbit.unpack_bits: expected n >= 0, got ", n);
  TORCH_CHECK(packed.dim() >= 1, "lowbit.unpack_bits: expected packed of rank >= 1 (packing runs along the last "
              "axis), got a 0-d tensor");
  const int64_t nb = packed_len(n, bits);
  TORCH_CHECK(packed.size(-1) == nb, "lowbit.unpack_bits: expected the last axis of packed to hold ceil(n * bits / 8) = ",
              nb, " bytes for n=", n, ", bits=", bits, ", got ", packed.size(-1), " (packed shape ", packed.sizes(), ")");
  const at::Tensor p = packed.contiguous();
  const int64_t rows = rows_of(p);
  std::vector<int64_t> shape(p.sizes().begin(), p.sizes().end());
  shape.back() = n;
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
