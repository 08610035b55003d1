// CUDA kernels of the GGUF Q8_0 / Q4_0 ops, byte-identical to the CPU kernels
// (csrc/cpu/gguf.cpp), which reproduce gguf-py:
//   Q8_0: d = amax / 127, id = d == 0 ? 0 : 1 / d, code = round_half_away(x * id),
//         computed as trunc(p + copysign(0.5 - 2^-25, p)) with p = x * id rounded first.
//   Q4_0: m = the element of largest |x| (lowest index on ties), d = m / -8,
//         id as above, code + 8 = min(trunc(x * id + 8.5), 15), the product rounded first.
//   trunc is x86's cvttss2si (NaN / inf / out of int32 -> INT32_MIN) and only the low
//   byte is kept; the stored scale is d rounded half to even to fp16 (__float2half_rn:
//   subnormals kept, overflow -> inf, sign of zero kept).
// Every float step uses an explicit rounding intrinsic, so nothing is fused into an FMA.
//
// Work split: 8 threads per 32-element block, thread l of a block handling elements
// 4l .. 4l + 3 (one 16-byte load for float32, 8 bytes for 16-bit floats). The 8
// threads of a block are consecutive lanes of one warp (lanes 8k .. 8k + 7), and they
// combine their amax with three xor-shuffles (offsets 1, 2, 4 stay inside the group).
#include "cuda/common.cuh"
#include "cuda/gguf.cuh"

namespace lowbit::cuda {
namespace {

constexpr int kBlockElems = 32;
constexpr int kQ8Bytes = 34;
constexpr int kQ4Bytes = 18;
constexpr int kLanesPerBlock = 8;  // threads per GGUF block, 4 elements each

// The 4 elements at p (element offset 4l of a block). With `vec`, p is aligned to
// 4 * sizeof(T) bytes and read in one access.
__device__ __forceinline__ void load4(const float* p, bool vec, float (&f)[4]) {
  if (vec) {
    const float4 v = *reinterpret_cast<const float4*>(p);
    f[0] = v.x; f[1] = v.y; f[2] = v.z; f[3] = v.w;
  } else {
#pragma unroll
    for (int k = 0; k < 4; ++k) f[k] = p[k];
  }
}
template <typename T>
__device__ __forceinline__ void load4(const T* p, bool vec, float (&f)[4]) {
  if (vec) {
    const uint2 v = *reinterpret_cast<const uint2*>(p);
    f[0] = to_f32(from_bits16<T>(static_cast<uint16_t>(v.x & 0xffffu)));
    f[1] = to_f32(from_bits16<T>(static_cast<uint16_t>(v.x >> 16)));
    f[2] = to_f32(from_bits16<T>(static_cast<uint16_t>(v.y & 0xffffu)));
    f[3] = to_f32(from_bits16<T>(static_cast<uint16_t>(v.y >> 16)));
  } else {
#pragma unroll
    for (int k = 0; k < 4; ++k) f[k] = to_f32(p[k]);
  }
}

__device__ __forceinline__ void store4(float* p, bool vec, const float (&f)[4]) {
  if (vec) {
    *reinterpret_cast<float4*>(p) = make_float4(f[0], f[1], f[2], f[3]);
  } else {
#pragma unroll
    for (int k = 0; k < 4; ++k) p[k] = f[k];
  }
}
template <typename T>
__device__ __forceinline__ void store4(T* p, bool vec, const float (&f)[4]) {
  if (vec) {
    uint2 v;
    v.x = static_cast<uint32_t>(bits16(from_f32<T>(f[0]))) | (static_cast<uint32_t>(bits16(from_f32<T>(f[1]))) << 16);
    v.y = static_cast<uint32_t>(bits16(from_f32<T>(f[2]))) | (static_cast<uint32_t>(bits16(from_f32<T>(f[3]))) << 16);
    *reinterpret_cast<uint2*>(p) = v;
  } else {
#pragma unroll
    for (int k = 0; k < 4; ++k) p[k] = from_f32<T>(f[k]);
  }
}

// float -> int32 by truncation as cvttss2si does it: NaN, +-inf and values outside
// the int32 range give INT32_MIN (the CPU's trunc_i32).
__device__ __forceinline__ int32_t trunc_i32(float v) {
  return (v >= -2147483648.f && v < 2147483648.f) ? static_cast<int32_t>(v) : INT32_MIN;
}

// One 16-bit store (blocks are 34 / 18 bytes and the output is allocated here, so
// every block starts 2-byte aligned). Two byte stores of the half's bits were
// miscompiled for sm_90a by nvcc 13.0 (the low byte came out 0 on an H100: the f16
// result of cvt.rn.f16.f32 was stored with st.u8 straight from its register).
__device__ __forceinline__ void store_scale(uint8_t* block, float d) {
  *reinterpret_cast<uint16_t*>(block) = __half_as_ushort(__float2half_rn(d));  // little-endian
}

__device__ __forceinline__ float load_scale(const uint8_t* block) {
  return __half2float(__ushort_as_half(static_cast<uint16_t>(block[0] | (block[1] << 8))));
}

// Stored for a block holding NaN or +-inf: an fp16 NaN scale (and codes 0).
constexpr uint16_t kNanScale = 0x7e00;

// Threads slot t = 0 .. 8 * nblocks - 1, slot t handling elements 4 * (t % 8) ..
// + 3 of block t / 8. The loop runs over whole warps (base = the warp's first slot)
// so that every lane reaches every shuffle; lanes past the last slot compute on
// zeros and write nothing. A block's 8 slots are all valid or all invalid, since
// warps start at multiples of 32 and 8 * nblocks is a multiple of 8.
template <typename T>
__global__ void
quantize_q8_0_kernel(const T* __restrict__ x, int64_t nblocks, uint8_t* __restrict__ out, bool vec) {
  const int lane = threadIdx.x & 31;
  const int64_t slots = nblocks * kLanesPerBlock;
  const int64_t warp_step = grid_threads();  // a multiple of 32
  for (int64_t base = global_thread() - lane; base < slots; base += warp_step) {
    const int64_t t = base + lane;
    const bool valid = t < slots;
    const int64_t b = t / kLanesPerBlock;
    const int l = static_cast<int>(t % kLanesPerBlock);
    float f[4] = {0.f, 0.f, 0.f, 0.f};
    if (valid) load4(x + b * kBlockElems + 4 * l, vec, f);
    // amax as the bits of |x|: for non-negative floats integer order is float order,
    // and NaN bit patterns sort above infinity.
    uint32_t m = 0;
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const uint32_t a = __float_as_uint(f[k]) & 0x7fffffffu;
      m = a > m ? a : m;
    }
#pragma unroll
    for (int off = 1; off < kLanesPerBlock; off <<= 1) {
      const uint32_t o = __shfl_xor_sync(kFullMask, m, off);
      m = o > m ? o : m;
    }
    if (!valid) continue;
    uint8_t* ob = out + b * kQ8Bytes;
    uint8_t* codes = ob + 2 + 4 * l;  // bytes of elements 4l .. 4l + 3
    if (m >= 0x7f800000u) {  // NaN or inf in the block
      if (l == 0) *reinterpret_cast<uint16_t*>(ob) = kNanScale;
#pragma unroll
      for (int k = 0; k < 4; ++k) codes[k] = 0;
      continue;
    }
    const float d = __fdiv_rn(__uint_as_float(m), 127.f);
    const float id = d == 0.f ? 0.f : __fdiv_rn(1.f, d);
    if (l == 0) store_scale(ob, d);
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const float p = __fmul_rn(f[k], id);
      // 0.49999997f = 0.5 - 2^-25: p + that reaches the next integer magnitude exactly
      // when |p|'s fraction is >= 0.5 (half away from zero after truncation).
      const float r = __fadd_rn(p, copysignf(0.49999997f, p));
      codes[k] = static_cast<uint8_t>(trunc_i32(r) & 0xff);
    }
  }
}

// Same slots as above. The block's extreme element is found with one 64-bit key per
// element: |x| bits in the high word (larger wins), then (31 - index) << 1 (lower
// index wins ties, as numpy's argmax), then the sign bit of x in bit 0 (so the
// element's value can be rebuilt; it never decides, indices being distinct).
// Output byte j = 0 .. 15 pairs elements j (low nibble) and j + 16 (high nibble):
// thread l < 4 holds elements 4l .. 4l + 3 and receives those of thread l + 4
// (elements 16 + 4l ..) with a shuffle, then writes bytes 4l .. 4l + 3.
template <typename T>
__global__ void
quantize_q4_0_kernel(const T* __restrict__ x, int64_t nblocks, uint8_t* __restrict__ out, bool vec) {
  const int lane = threadIdx.x & 31;
  const int64_t slots = nblocks * kLanesPerBlock;
  const int64_t warp_step = grid_threads();
  for (int64_t base = global_thread() - lane; base < slots; base += warp_step) {
    const int64_t t = base + lane;
    const bool valid = t < slots;
    const int64_t b = t / kLanesPerBlock;
    const int l = static_cast<int>(t % kLanesPerBlock);
    float f[4] = {0.f, 0.f, 0.f, 0.f};
    if (valid) load4(x + b * kBlockElems + 4 * l, vec, f);
    unsigned long long key = 0;
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const uint32_t u = __float_as_uint(f[k]);
      const unsigned long long kk = (static_cast<unsigned long long>(u & 0x7fffffffu) << 32) |
                                    (static_cast<unsigned long long>(31 - (4 * l + k)) << 1) | (u >> 31);
      key = kk > key ? kk : key;
    }
#pragma unroll
    for (int off = 1; off < kLanesPerBlock; off <<= 1) {
      const unsigned long long o = __shfl_xor_sync(kFullMask, key, off);
      key = o > key ? o : key;
    }
    const uint32_t amax_bits = static_cast<uint32_t>(key >> 32);
    const bool bad = amax_bits >= 0x7f800000u;  // NaN or inf in the block
    const float m = __uint_as_float(amax_bits | (static_cast<uint32_t>(key & 1u) << 31));
    const float d = __fdiv_rn(m, -8.f);
    const float id = d == 0.f ? 0.f : __fdiv_rn(1.f, d);
    uint32_t nib = 0;  // this thread's 4 stored values (code + 8), one per byte
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const float v = __fadd_rn(__fmul_rn(f[k], id), 8.5f);
      const uint32_t u = static_cast<uint32_t>(trunc_i32(v)) & 0xffu;
      nib |= (u < 15u ? u : 15u) << (8 * k);
    }
    if (bad) nib = 0x08080808u;  // code 0 everywhere
    const uint32_t hi = __shfl_down_sync(kFullMask, nib, 4, kLanesPerBlock);  // from thread l + 4
    if (!valid) continue;
    uint8_t* ob = out + b * kQ4Bytes;
    if (l == 0) {
      if (bad) *reinterpret_cast<uint16_t*>(ob) = kNanScale;
      else store_scale(ob, d);
    }
    if (l < 4) {
      const uint32_t bytes = nib | (hi << 4);  // nibbles are < 16: no carry between bytes
#pragma unroll
      for (int k = 0; k < 4; ++k) ob[2 + 4 * l + k] = static_cast<uint8_t>(bytes >> (8 * k));
    }
  }
}

// Dequantize: slot t (grid-stride) writes elements 4l .. 4l + 3 of block b = t / 8,
// l = t % 8. No shuffles, so a plain grid-stride loop.
template <typename T>
__global__ void
dequantize_q8_0_kernel(const uint8_t* __restrict__ blocks, int64_t nblocks, T* __restrict__ y, bool vec) {
  const int64_t slots = nblocks * kLanesPerBlock;
  for (int64_t t = global_thread(); t < slots; t += grid_threads()) {
    const int64_t b = t / kLanesPerBlock;
    const int l = static_cast<int>(t % kLanesPerBlock);
    const uint8_t* ib = blocks + b * kQ8Bytes;
    const float d = load_scale(ib);
    float f[4];
#pragma unroll
    for (int k = 0; k < 4; ++k) f[k] = __fmul_rn(d, static_cast<float>(static_cast<int8_t>(ib[2 + 4 * l + k])));
    store4(y + b * kBlockElems + 4 * l, vec, f);
  }
}

// Q4_0: elements 4l .. 4l + 3 are the low nibbles of bytes 4l .. 4l + 3 for l < 4 and
// the high nibbles of bytes 4(l - 4) .. 4(l - 4) + 3 for l >= 4 (element j + 16 sits in
// the high nibble of byte j).
template <typename T>
__global__ void
dequantize_q4_0_kernel(const uint8_t* __restrict__ blocks, int64_t nblocks, T* __restrict__ y, bool vec) {
  const int64_t slots = nblocks * kLanesPerBlock;
  for (int64_t t = global_thread(); t < slots; t += grid_threads()) {
    const int64_t b = t / kLanesPerBlock;
    const int l = static_cast<int>(t % kLanesPerBlock);
    const uint8_t* ib = blocks + b * kQ4Bytes;
    const float d = load_scale(ib);
    const int j0 = 4 * (l & 3), shift = l < 4 ? 0 : 4;
    float f[4];
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const int q = ((ib[2 + j0 + k] >> shift) & 0xf) - 8;
      f[k] = __fmul_rn(d, static_cast<float>(q));
    }
    store4(y + b * kBlockElems + 4 * l, vec, f);
  }
}

}  // namespace

cudaError_t launch_quantize_q8_0(const void* x, FloatType type, int64_t nblocks, uint8_t* blocks,
                                 cudaStream_t stream) {
  if (nblocks <= 0) return cudaSuccess;
  return with_float_type(type, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    const T* xt = static_cast<const T*>(x);
    const bool vec = aligned_to(xt, 4 * sizeof(T));
    quantize_q8_0_kernel<T><<<grid_for(nblocks * kLanesPerBlock), kThreads, 0, stream>>>(xt, nblocks, blocks, vec);
    return cudaGetLastError();
  });
}

cudaError_t launch_quantize_q4_0(const void* x, FloatType type, int64_t nblocks, uint8_t* blocks,
                                 cudaStream_t stream) {
  if (nblocks <= 0) return cudaSuccess;
  return with_float_type(type, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    const T* xt = static_cast<const T*>(x);
    const bool vec = aligned_to(xt, 4 * sizeof(T));
    quantize_q4_0_kernel<T><<<grid_for(nblocks * kLanesPerBlock), kThreads, 0, stream>>>(xt, nblocks, blocks, vec);
    return cudaGetLastError();
  });
}

cudaError_t launch_dequantize_q8_0(const uint8_t* blocks, int64_t nblocks, void* y, FloatType type,
                                   cudaStream_t stream) {
  if (nblocks <= 0) return cudaSuccess;
  return with_float_type(type, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    T* yt = static_cast<T*>(y);
    const bool vec = aligned_to(yt, 4 * sizeof(T));
    dequantize_q8_0_kernel<T><<<grid_for(nblocks * kLanesPerBlock), kThreads, 0, stream>>>(blocks, nblocks, yt, vec);
    return cudaGetLastError();
  });
}

cudaError_t launch_dequantize_q4_0(const uint8_t* blocks, int64_t nblocks, void* y, FloatType type,
                                   cudaStream_t stream) {
  if (nblocks <= 0) return cudaSuccess;
  return with_float_type(type, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    T* yt = static_cast<T*>(y);
    const bool vec = aligned_to(yt, 4 * sizeof(T));
    dequantize_q4_0_kernel<T><<<grid_for(nblocks * kLanesPerBlock), kThreads, 0, stream>>>(blocks, nblocks, yt, vec);
    return cudaGetLastError();
  });
}

}  // namespace lowbit::cuda
