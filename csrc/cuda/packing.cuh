// Host launchers of the bit-packing CUDA kernels (csrc/cuda/packing.cu); layout in
// docs/formats.md ("Packed 2- and 4-bit codes"). Raw device pointers, no torch header;
// work goes on `stream`, nothing synchronises; each returns cudaGetLastError().
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

namespace lowbit::cuda {

// `rows` rows of n int8 codes each (back to back) -> rows rows of ceil(n * bits / 8)
// bytes, bits 2 or 4, offset-binary values, padding bits 0. A code outside
// [-2^(bits-1), 2^(bits-1) - 1] is saturated to that range (the CPU op raises;
// raising here would need a device-to-host sync).
cudaError_t launch_pack_bits(const int8_t* codes, int64_t rows, int64_t n, int bits, uint8_t* packed,
                             cudaStream_t stream);

// The inverse; every byte is valid input, padding bits are ignored.
cudaError_t launch_unpack_bits(const uint8_t* packed, int64_t rows, int64_t n, int bits, int8_t* codes,
                               cudaStream_t stream);

}  // namespace lowbit::cuda
