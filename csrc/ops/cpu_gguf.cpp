// CPU glue of the GGUF block ops: checks, output allocation, threads over blocks.
// Blocks are independent, so the flattened input is cut into runs of whole blocks.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <atomic>
#include <cstdint>
#include <limits>
#include <vector>

#include "cpu/gguf.h"
#include "cpu/streaming.h"
#include "ops/checks.h"
#include "ops/layout_checks.h"

namespace lowbit::ops {
namespace {

using cpu::kGgufBlockElems;

// Blocks per parallel task (32K elements, as kGrainElements in cpu_driver.h).
constexpr int64_t kGrainBlocks = 1024;

template <typename T>
const T* data_as(const at::Tensor& t) { return reinterpret_cast<const T*>(t.const_data_ptr()); }
template <typename T>
T* mutable_data_as(at::Tensor& t) { return reinterpret_cast<T*>(t.mutable_data_ptr()); }

using QuantizeFn = int64_t (*)(const void*, uint8_t*, int64_t);

template <typename T, int64_t (*Kernel)(const T*, uint8_t*, int64_t)>
int64_t quantize_erased(const void* x, uint8_t* out, int64_t nblocks) {
  return Kernel(static_cast<const T*>(x), out, nblocks);
}

at::Tensor quantize_blocks(const at::Tensor& x_in, const char* op, int64_t block_bytes, QuantizeFn f32,
                           QuantizeFn f16, QuantizeFn bf16) {
  const std::vector<int64_t> shape = gguf_quantize_shape(x_in, op, block_bytes);
  at::Tensor out = at::empty(shape, x_in.options().dtype(at::kByte));
  const int64_t nblocks = x_in.numel() / kGgufBlockElems;
  if (nblocks == 0) return out;

  const at::Tensor x = x_in.contiguous();
  const QuantizeFn fn = x.scalar_type() == at::kFloat ? f32 : (x.scalar_type() == at::kHalf ? f16 : bf16);
  const size_t elem = x.element_size();
  const auto* base = static_cast<const char*>(x.const_data_ptr());
  uint8_t* dst = out.mutable_data_ptr<uint8_t>();
  std::atomic<int64_t> first_bad{std::numeric_limits<int64_t>::max()};
  at::parallel_for(0, nblocks, kGrainBlocks, [&](int64_t b, int64_t e) {
    const int64_t bad = fn(base + static_cast<size_t>(b * kGgufBlockElems) * elem, dst + b * block_bytes, e - b);
    if (bad >= 0) {
      int64_t cur = first_bad.load();
      while (b + bad < cur && !first_bad.compare_exchange_weak(cur, b + bad)) {}
    }
  });
  const int64_t bad = first_bad.load();
  TORCH_CHECK(bad == std::numeric_limits<int64_t>::max(), "lowbit.", op,
              ": expected finite values, got a non-finite value in block ", bad, " (elements ",
              bad * kGgufBlockElems, "..", bad * kGgufBlockElems + kGgufBlockElems - 1,
              " of the flattened input, shape ", x_in.sizes(), ")");
  return out;
}

using DequantizeFn = void (*)(const uint8_t*, void*, int64_t, bool);

template <typename T, void (*Kernel)(const uint8_t*, T*, int64_t, bool)>
void dequantize_erased(const uint8_t* blocks, void* y, int64_t nblocks, bool stream) {
  Kernel(blocks, static_cast<T*>(y), nblocks, stream);
}

at::Tensor dequantize_blocks(const at::Tensor& blocks_in, at::ScalarType dtype, const char* op, int64_t block_bytes,
                             DequantizeFn f32, DequantizeFn f16, DequantizeFn bf16) {
  const std::vector<int64_t> shape = gguf_dequantize_shape(blocks_in, dtype, op, block_bytes);
  at::Tensor y = at::empty(shape, blocks_in.options().dtype(dtype));
  const int64_t nblocks = blocks_in.numel() / block_bytes;
  if (nblocks == 0) return y;

  const at::Tensor blocks = blocks_in.contiguous();
  const DequantizeFn fn = dtype == at::kFloat ? f32 : (dtype == at::kHalf ? f16 : bf16);
  const uint8_t* src = blocks.const_data_ptr<uint8_t>();
  auto* base = static_cast<char*>(y.mutable_data_ptr());
  const size_t elem = y.element_size();
  const bool stream = cpu::stream_output(blocks.nbytes() + y.nbytes());
  at::parallel_for(0, nblocks, kGrainBlocks, [&](int64_t b, int64_t e) {
    fn(src + b * block_bytes, base + static_cast<size_t>(b * kGgufBlockElems) * elem, e - b, stream);
    if (stream) cpu::streaming_fence();
  });
  return y;
}

at::Tensor quantize_q8_0(const at::Tensor& x) {
  return quantize_blocks(x, "quantize_q8_0", cpu::kQ8_0BlockBytes,
                         &quantize_erased<float, cpu::quantize_q8_0<float>>,
                         &quantize_erased<half_t, cpu::quantize_q8_0<half_t>>,
                         &quantize_erased<bf16_t, cpu::quantize_q8_0<bf16_t>>);
}

at::Tensor quantize_q4_0(const at::Tensor& x) {
  return quantize_blocks(x, "quantize_q4_0", cpu::kQ4_0BlockBytes,
                         &quantize_erased<float, cpu::quantize_q4_0<float>>,
                         &quantize_erased<half_t, cpu::quantize_q4_0<half_t>>,
                         &quantize_erased<bf16_t, cpu::quantize_q4_0<bf16_t>>);
}

at::Tensor dequantize_q8_0(const at::Tensor& blocks, at::ScalarType dtype) {
  return dequantize_blocks(blocks, dtype, "dequantize_q8_0", cpu::kQ8_0BlockBytes,
                           &dequantize_erased<float, cpu::dequantize_q8_0<float>>,
                           &dequantize_erased<half_t, cpu::dequantize_q8_0<half_t>>,
                           &dequantize_erased<bf16_t, cpu::dequantize_q8_0<bf16_t>>);
}

at::Tensor dequantize_q4_0(const at::Tensor& blocks, at::ScalarType dtype) {
  return dequantize_blocks(blocks, dtype, "dequantize_q4_0", cpu::kQ4_0BlockBytes,
                           &dequantize_erased<float, cpu::dequantize_q4_0<float>>,
                           &dequantize_erased<half_t, cpu::dequantize_q4_0<half_t>>,
                           &dequantize_erased<bf16_t, cpu::dequantize_q4_0<bf16_t>>);
}

}  // namespace

TORCH_LIBRARY_IMPL(lowbit, CPU, m) {
  m.impl("quantize_q8_0", &quantize_q8_0);
  m.impl("dequantize_q8_0", &dequantize_q8_0);
  m.impl("quantize_q4_0", &quantize_q4_0);
  m.impl("dequantize_q4_0", &dequantize_q4_0);
}

}  // namespace lowbit::ops
