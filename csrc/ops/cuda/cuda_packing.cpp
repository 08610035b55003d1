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
#include "ops/layout_checks.h"

namespace lowbit::ops {
namespace {



at::Tensor pack_bits_cuda(const at::Tensor& codes, int64_t bits) {
  const std::vector<int64_t> shape = pack_bits_shape(codes, bits);
  check_cuda(codes, "pack_bits", "codes");
  const at::Tensor c = codes.contiguous();
  const int64_t n = c.size(-1), rows = rows_of(c);
  const c10::cuda::CUDAGuard guard(c.device());
  at::Tensor out = at::empty(shape, c.options().dtype(at::kByte));
  if (out.numel() == 0) return out;
  C10_CUDA_CHECK(cuda::launch_pack_bits(c.const_data_ptr<int8_t>(), rows, n, static_cast<int>(bits),
                                        out.mutable_data_ptr<uint8_t>(), c10::cuda::getCurrentCUDAStream()));
  return out;
}

at::Tensor unpack_bits_cuda(const at::Tensor& packed, int64_t bits, int64_t n) {
  const std::vector<int64_t> shape = unpack_bits_shape(packed, bits, n);
  check_cuda(packed, "unpack_bits", "packed");
  const at::Tensor p = packed.contiguous();
  const int64_t rows = rows_of(p);
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
