// CUDA glue of pack_bits / unpack_bits: the CPU op's checks and messages, output
// allocation on the input's device, the launch on the current stream. Non-contiguous
// inputs are copied to contiguous memory first.
//
// Differs from the CPU op (docs/cuda.md): pack_bits does not raise on a code outside
// the range of `bits` (finding one would need a device-to-host sync); it saturates
// the code to [-2^(bits-1), 2^(bits-1) - 1] instead.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <vector>

#include "cuda/packing.cuh"
#include "ops/checks.h"

namespace lowbit::ops {
namespace {

int64_t packed_len(int64_t n, int64_t bits) { return (n * bits + 7) / 8; }

void check_packing_bits(int64_t bits, const char* op) {
  TORCH_CHECK(bits == 2 || bits == 4, "lowbit.", op, ": expected bits 2 or 4, got ", bits,
              bits == 8 ? " (8-bit codes are stored one per int8 byte; there is nothing to pack)" : "");
}

void check_cuda(const at::Tensor& t, const char* op, const char* arg) {
  TORCH_CHECK(t.is_cuda(), "lowbit.", op, ": expected ", arg, " on a CUDA device, got ", t.device());
}

int64_t rows_of(const at::Tensor& t) {
  int64_t rows = 1;
  for (int64_t d = 0; d + 1 < t.dim(); ++d) rows *= t.size(d);
  return rows;
}

at::Tensor pack_bits_cuda(const at::Tensor& codes, int64_t bits) {
  check_packing_bits(bits, "pack_bits");
  check_dtype(codes, at::kChar, "pack_bits", "codes");
  TORCH_CHECK(codes.dim() >= 1, "lowbit.pack_bits: expected codes of rank >= 1 (packing runs along the last axis), "
              "got a 0-d tensor");
  check_cuda(codes, "pack_bits", "codes");
  const at::Tensor c = codes.contiguous();
  const int64_t n = c.size(-1), rows = rows_of(c);
  std::vector<int64_t> shape(c.sizes().begin(), c.sizes().end());
  shape.back() = packed_len(n, bits);
  const c10::cuda::CUDAGuard guard(c.device());
  at::Tensor out = at::empty(shape, c.options().dtype(at::kByte));
  if (out.numel() == 0) return out;
  C10_CUDA_CHECK(cuda::launch_pack_bits(c.const_data_ptr<int8_t>(), rows, n, static_cast<int>(bits),
                                        out.mutable_data_ptr<uint8_t>(), c10::cuda::getCurrentCUDAStream()));
  return out;
}

at::Tensor unpack_bits_cuda(const at::Tensor& packed, int64_t bits, int64_t n) {
  check_packing_bits(bits, "unpack_bits");
  check_dtype(packed, at::kByte, "unpack_bits", "packed");
  TORCH_CHECK(n >= 0, "lowbit.unpack_bits: expected n >= 0, got ", n);
  TORCH_CHECK(packed.dim() >= 1, "lowbit.unpack_bits: expected packed of rank >= 1 (packing runs along the last "
              "axis), got a 0-d tensor");
  const int64_t nb = packed_len(n, bits);
  TORCH_CHECK(packed.size(-1) == nb, "lowbit.unpack_bits: expected the last axis of packed to hold ceil(n * bits / 8) = ",
              nb, " bytes for n=", n, ", bits=", bits, ", got ", packed.size(-1), " (packed shape ", packed.sizes(), ")");
  check_cuda(packed, "unpack_bits", "packed");
  const at::Tensor p = packed.contiguous();
  const int64_t rows = rows_of(p);
  std::vector<int64_t> shape(p.sizes().begin(), p.sizes().end());
  shape.back() = n;
  const c10::cuda::CUDAGuard guard(p.device());
  at::Tensor out = at::empty(shape, p.options().dtype(at::kChar));
  if (out.numel() == 0) return out;
  C10_CUDA_CHECK(cuda::launch_unpack_bits(p.const_data_ptr<uint8_t>(), rows, n, static_cast<int>(bits),
                                          out.mutable_data_ptr<int8_t>(), c10::cuda::getCurrentCUDAStream()));
  return out;
}

}  // namespace
}  // namespace lowbit::ops

TORCH_LIBRARY_IMPL(lowbit, CUDA, m) {
  m.impl("pack_bits", &lowbit::ops::pack_bits_cuda);
  m.impl("unpack_bits", &lowbit::ops::unpack_bits_cuda);
}
