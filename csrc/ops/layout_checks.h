// Argument checks and output shapes of the ops whose output layout follows from the input's
// (bit packing, GGUF blocks), shared by the CPU and the CUDA glue so that every device
// rejects bad input with the same message.
#pragma once
#include <ATen/ATen.h>

#include <vector>

#include "cpu/gguf.h"  // kGgufBlockElems
#include "ops/checks.h"

namespace lowbit::ops {

inline int64_t packed_len(int64_t n, int64_t bits) { return (n * bits + 7) / 8; }

// Product of all dims but the last (the rows the packing / block ops run along).
inline int64_t rows_of(const at::Tensor& t) {
  int64_t rows = 1;
  for (int64_t d = 0; d + 1 < t.dim(); ++d) rows *= t.size(d);
  return rows;
}

inline void check_packing_bits(int64_t bits, const char* op) {
  TORCH_CHECK(bits == 2 || bits == 4, "lowbit.", op, ": expected bits 2 or 4, got ", bits,
              bits == 8 ? " (8-bit codes are stored one per int8 byte; there is nothing to pack)" : "");
}

// `shape` with its last axis replaced.
inline std::vector<int64_t> with_last(at::IntArrayRef shape, int64_t last) {
  std::vector<int64_t> out(shape.begin(), shape.end());
  out.back() = last;
  return out;
}

// pack_bits(codes int8 [..., n], bits) -> uint8 [..., ceil(n * bits / 8)].
inline std::vector<int64_t> pack_bits_shape(const at::Tensor& codes, int64_t bits) {
  check_packing_bits(bits, "pack_bits");
  check_dtype(codes, at::kChar, "pack_bits", "codes");
  TORCH_CHECK(codes.dim() >= 1, "lowbit.pack_bits: expected codes of rank >= 1 (packing runs along the last axis), "
              "got a 0-d tensor");
  return with_last(codes.sizes(), packed_len(codes.size(-1), bits));
}

// unpack_bits(packed uint8 [..., ceil(n * bits / 8)], bits, n) -> int8 [..., n].
inline std::vector<int64_t> unpack_bits_shape(const at::Tensor& packed, int64_t bits, int64_t n) {
  check_packing_bits(bits, "unpack_bits");
  check_dtype(packed, at::kByte, "unpack_bits", "packed");
  TORCH_CHECK(n >= 0, "lowbit.unpack_bits: expected n >= 0, got ", n);
  TORCH_CHECK(packed.dim() >= 1, "lowbit.unpack_bits: expected packed of rank >= 1 (packing runs along the last "
              "axis), got a 0-d tensor");
  const int64_t nb = packed_len(n, bits);
  TORCH_CHECK(packed.size(-1) == nb, "lowbit.unpack_bits: expected the last axis of packed to hold ceil(n * bits / 8) = ",
              nb, " bytes for n=", n, ", bits=", bits, ", got ", packed.size(-1), " (packed shape ", packed.sizes(), ")");
  return with_last(packed.sizes(), n);
}

// quantize_q8_0 / q4_0(x float [..., K]) -> uint8 [..., K / 32 * block_bytes].
inline std::vector<int64_t> gguf_quantize_shape(const at::Tensor& x, const char* op, int64_t block_bytes) {
  check_float(x, op, "x");
  TORCH_CHECK(x.dim() >= 1, "lowbit.", op, ": expected x of rank >= 1 (blocks run along the last axis), got a 0-d tensor");
  const int64_t k = x.size(-1);
  TORCH_CHECK(k % cpu::kGgufBlockElems == 0, "lowbit.", op, ": expected the last axis K to be a multiple of ",
              cpu::kGgufBlockElems, ", got K = ", k, " (input shape ", x.sizes(), ")");
  return with_last(x.sizes(), k / cpu::kGgufBlockElems * block_bytes);
}

// dequantize_q8_0 / q4_0(blocks uint8 [..., nb * block_bytes], dtype) -> dtype [..., nb * 32].
inline std::vector<int64_t> gguf_dequantize_shape(const at::Tensor& blocks, at::ScalarType dtype, const char* op,
                                                  int64_t block_bytes) {
  check_dtype(blocks, at::kByte, op, "blocks");
  check_float_dtype_arg(dtype, op, "dtype");
  TORCH_CHECK(blocks.dim() >= 1, "lowbit.", op, ": expected blocks of rank >= 1 (", block_bytes,
              " bytes per block along the last axis), got a 0-d tensor");
  const int64_t n = blocks.size(-1);
  TORCH_CHECK(n % block_bytes == 0, "lowbit.", op, ": expected the last axis of blocks to be a multiple of ",
              block_bytes, " bytes (one block each), got ", n, " (shape ", blocks.sizes(), ")");
  return with_last(blocks.sizes(), n / block_bytes * cpu::kGgufBlockElems);
}

}  // namespace lowbit::ops
