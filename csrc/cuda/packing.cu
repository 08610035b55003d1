// CUDA kernels of pack_bits / unpack_bits (layout: docs/formats.md). Element i of a
// row lives at bit position i * bits of the row's little-endian byte string, stored
// as the offset-binary value code + 2^(bits-1); every row starts on a fresh byte.
#include "cuda/common.cuh"
#include "cuda/packing.cuh"

namespace lowbit::cuda {
namespace {

// Offset-binary value of a code, the code first saturated to [-2^(bits-1), 2^(bits-1) - 1].
__device__ __forceinline__ uint32_t stored_value(int8_t code, int bits) {
  const int lo = -(1 << (bits - 1)), hi = (1 << (bits - 1)) - 1;
  const int v = code < lo ? lo : (code > hi ? hi : code);
  return static_cast<uint32_t>(v - lo);
}

// Any layout: one thread per output byte. Byte i of the output is byte j = i % nb of
// row r = i / nb and holds codes j * per .. j * per + per - 1 of that row (per = 8 /
// bits codes per byte, code k of the byte at bits k * bits); codes at or past n are
// the row's padding and stay 0.
__global__ void
pack_rows_kernel(const int8_t* __restrict__ codes, int64_t rows, int64_t n, int64_t nb, int bits,
                 uint8_t* __restrict__ packed) {
  const int per = 8 / bits;
  for (int64_t i = global_thread(); i < rows * nb; i += grid_threads()) {
    const int64_t r = i / nb, j = i % nb;
    const int8_t* row = codes + r * n;
    uint32_t byte = 0;
    for (int k = 0; k < per; ++k) {
      const int64_t e = j * per + k;  // element index inside the row
      if (e < n) byte |= stored_value(row[e], bits) << (k * bits);
    }
    packed[i] = static_cast<uint8_t>(byte);
  }
}

// Rows without padding (n * bits a multiple of 8) lie back to back in both layouts,
// so the tensor is one long row of nbytes output bytes. Each thread step makes a group
// of 8 output bytes (one 8-byte store) from 8 * PER codes (PER / 2 16-byte loads; codes
// must be 16-byte and packed 8-byte aligned); the nbytes % 8 tail bytes go one per thread.
template <int BITS>
__global__ void
pack_flat_kernel(const int8_t* __restrict__ codes, int64_t nbytes, uint8_t* __restrict__ packed) {
  constexpr int PER = 8 / BITS;    // codes per byte: 2 or 4
  constexpr int LOADS = PER / 2;   // 16-byte loads per group: 16 * LOADS = 8 * PER codes
  const int64_t groups = nbytes / 8;
  const int64_t tid = global_thread(), stride = grid_threads();
  for (int64_t g = tid; g < groups; g += stride) {
    const uint4* src = reinterpret_cast<const uint4*>(codes + g * 8 * PER);
    uint32_t w[4 * LOADS];  // the group's codes, 4 per word, code e in byte e % 4 of word e / 4
#pragma unroll
    for (int l = 0; l < LOADS; ++l) {
      const uint4 v = src[l];
      w[4 * l] = v.x; w[4 * l + 1] = v.y; w[4 * l + 2] = v.z; w[4 * l + 3] = v.w;
    }
    uint32_t out[2] = {0u, 0u};  // output byte j in byte j % 4 of out[j / 4]
#pragma unroll
    for (int j = 0; j < 8; ++j)
#pragma unroll
      for (int k = 0; k < PER; ++k) {
        const int e = j * PER + k;  // code of the group
        const int8_t code = static_cast<int8_t>(w[e / 4] >> (8 * (e % 4)));
        out[j / 4] |= stored_value(code, BITS) << (8 * (j % 4) + k * BITS);
      }
    reinterpret_cast<uint2*>(packed)[g] = make_uint2(out[0], out[1]);
  }
  for (int64_t i = groups * 8 + tid; i < nbytes; i += stride) {
    uint32_t byte = 0;
#pragma unroll
    for (int k = 0; k < PER; ++k) byte |= stored_value(codes[i * PER + k], BITS) << (k * BITS);
    packed[i] = static_cast<uint8_t>(byte);
  }
}

// Any layout: one thread per output code. Code i is element e = i % n of row
// r = i / n, at bit e * bits of the row's nb bytes.
__global__ void
unpack_rows_kernel(const uint8_t* __restrict__ packed, int64_t rows, int64_t n, int64_t nb, int bits,
                   int8_t* __restrict__ codes) {
  const uint32_t mask = (1u << bits) - 1u;
  const int offset = 1 << (bits - 1);
  for (int64_t i = global_thread(); i < rows * n; i += grid_threads()) {
    const int64_t r = i / n, e = i % n;
    const int64_t bit = e * bits;
    const uint32_t byte = packed[r * nb + bit / 8];
    codes[i] = static_cast<int8_t>(static_cast<int>((byte >> (bit % 8)) & mask) - offset);
  }
}

// Rows without padding as one long row of ncodes codes. Each thread step makes a
// group of 16 codes (one 16-byte store) from 16 * BITS / 8 bytes (one 8-byte load for
// 4 bits, one 4-byte load for 2 bits); the ncodes % 16 tail goes one code per thread.
template <int BITS>
__global__ void
unpack_flat_kernel(const uint8_t* __restrict__ packed, int64_t ncodes, int8_t* __restrict__ codes) {
  constexpr uint32_t MASK = (1u << BITS) - 1u;
  constexpr int OFFSET = 1 << (BITS - 1);
  const int64_t groups = ncodes / 16;
  const int64_t tid = global_thread(), stride = grid_threads();
  for (int64_t g = tid; g < groups; g += stride) {
    uint32_t in[2];  // the group's bytes as little-endian words: code e at bit e * BITS
    if (BITS == 4) {
      const uint2 v = reinterpret_cast<const uint2*>(packed)[g];
      in[0] = v.x;
      in[1] = v.y;
    } else {
      in[0] = reinterpret_cast<const uint32_t*>(packed)[g];
      in[1] = 0u;
    }
    uint32_t out[4] = {0u, 0u, 0u, 0u};  // code e in byte e % 4 of out[e / 4]
#pragma unroll
    for (int e = 0; e < 16; ++e) {
      const int bit = e * BITS;
      const int v = static_cast<int>((in[bit / 32] >> (bit % 32)) & MASK) - OFFSET;
      out[e / 4] |= (static_cast<uint32_t>(v) & 0xffu) << (8 * (e % 4));
    }
    reinterpret_cast<uint4*>(codes)[g] = make_uint4(out[0], out[1], out[2], out[3]);
  }
  for (int64_t i = groups * 16 + tid; i < ncodes; i += stride) {
    const int64_t bit = i * BITS;
    codes[i] = static_cast<int8_t>(static_cast<int>((packed[bit / 8] >> (bit % 8)) & MASK) - OFFSET);
  }
}

}  // namespace

cudaError_t launch_pack_bits(const int8_t* codes, int64_t rows, int64_t n, int bits, uint8_t* packed,
                             cudaStream_t stream) {
  if (rows <= 0 || n <= 0) return cudaSuccess;
  if (bits != 2 && bits != 4) return cudaErrorInvalidValue;
  const int64_t nb = (n * bits + 7) / 8;
  if ((n * bits) % 8 == 0 && aligned_to(codes, 16) && aligned_to(packed, 8)) {
    const int64_t nbytes = rows * nb;
    const unsigned blocks = grid_for(nbytes / 8 + nbytes % 8);
    if (bits == 4) pack_flat_kernel<4><<<blocks, kThreads, 0, stream>>>(codes, nbytes, packed);
    else pack_flat_kernel<2><<<blocks, kThreads, 0, stream>>>(codes, nbytes, packed);
  } else {
    pack_rows_kernel<<<grid_for(rows * nb), kThreads, 0, stream>>>(codes, rows, n, nb, bits, packed);
  }
  return cudaGetLastError();
}

cudaError_t launch_unpack_bits(const uint8_t* packed, int64_t rows, int64_t n, int bits, int8_t* codes,
                               cudaStream_t stream) {
  if (rows <= 0 || n <= 0) return cudaSuccess;
  if (bits != 2 && bits != 4) return cudaErrorInvalidValue;
  const int64_t nb = (n * bits + 7) / 8;
  if ((n * bits) % 8 == 0 && aligned_to(codes, 16) && aligned_to(packed, bits == 4 ? 8 : 4)) {
    const int64_t ncodes = rows * n;
    const unsigned blocks = grid_for(ncodes / 16 + ncodes % 16);
    if (bits == 4) unpack_flat_kernel<4><<<blocks, kThreads, 0, stream>>>(packed, ncodes, codes);
    else unpack_flat_kernel<2><<<blocks, kThreads, 0, stream>>>(packed, ncodes, codes);
  } else {
    unpack_rows_kernel<<<grid_for(rows * n), kThreads, 0, stream>>>(packed, rows, n, nb, bits, codes);
  }
  return cudaGetLastError();
}

}  // namespace lowbit::cuda
