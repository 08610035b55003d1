// Device helpers shared by the lowbit CUDA kernels: launch sizes, element
// conversions, 16-byte vector loads / stores, order-preserving float keys and
// warp / block reductions, and the two element-wise drivers (float -> byte and
// byte -> float over a ScaleLayout) that the affine and float8 kernels share.
//
// Kernel files include no ATen / torch / c10 header: only CUDA headers, <cstdint>
// and csrc/include/lowbit/*. Everything here is header-only (templates and inline
// functions), so each .cu file instantiates what it uses.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "lowbit/float_types.h"
#include "lowbit/scale_layout.h"

namespace lowbit::cuda {

// Threads per block of every element-wise / reduction kernel (8 warps).
constexpr int kThreads = 256;
constexpr unsigned kFullMask = 0xffffffffu;

// ---------------------------------------------------------------- launch sizes

// Number of SMs of the current device, queried once per device. No stream work and
// no synchronisation, so it is also safe while a CUDA graph is being captured.
inline int sm_count() {
  static std::atomic<int> cache[64];  // static storage: zero-initialised
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) {
    (void)cudaGetLastError();  // clear it; the launch that follows reports real trouble
    return 108;
  }
  if (dev >= 0 && dev < 64) {
    const int v = cache[dev].load(std::memory_order_relaxed);
    if (v > 0) return v;
  }
  int v = 0;
  if (cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess || v <= 0) {
    (void)cudaGetLastError();
    v = 108;
  }
  if (dev >= 0 && dev < 64) cache[dev].store(v, std::memory_order_relaxed);
  return v;
}

// Blocks for a grid-stride kernel over `items` work items of one thread each:
// enough to cover the items, at most 8 blocks of 256 threads per SM (one full wave
// at 2048 resident threads per SM); the kernels loop over the rest. Never 0.
inline unsigned grid_for(int64_t items, int threads = kThreads) {
  const int64_t want = (items + threads - 1) / threads;
  const int64_t cap = int64_t{sm_count()} * 8;
  const int64_t g = want < cap ? want : cap;
  return static_cast<unsigned>(g < 1 ? 1 : g);
}

inline bool aligned_to(const void* p, uintptr_t bytes) {
  return (reinterpret_cast<uintptr_t>(p) % bytes) == 0;
}

// Index of this thread in a 1-D grid, and the grid's total thread count (64-bit:
// element offsets can exceed 2^31).
__device__ __forceinline__ int64_t global_thread() {
  return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ int64_t grid_threads() {
  return static_cast<int64_t>(gridDim.x) * blockDim.x;
}

// ---------------------------------------------------------- element conversions

// Run-time float type -> compile-time element type. fn receives a null pointer of
// the element type (float, __half or __nv_bfloat16) as a tag.
template <class Fn>
cudaError_t with_float_type(FloatType t, Fn&& fn) {
  switch (t) {
    case FloatType::F32: return fn(static_cast<float*>(nullptr));
    case FloatType::F16: return fn(static_cast<__half*>(nullptr));
    case FloatType::BF16: return fn(static_cast<__nv_bfloat16*>(nullptr));
  }
  return cudaErrorInvalidValue;
}

// Widening to float32 is exact for all three types (inf and NaN included).
__device__ __forceinline__ float to_f32(float v) { return v; }
// A NaN keeps its sign, as the CPU's conversion (F16C) does: the quantizers copy the
// sign of a NaN input into their codes.
__device__ __forceinline__ float to_f32(__half v) {
  const float f = __half2float(v);
  return f == f ? f : __uint_as_float(0x7fc00000u | (static_cast<uint32_t>(__half_as_ushort(v) & 0x8000u) << 16));
}
__device__ __forceinline__ float to_f32(__nv_bfloat16 v) { return __bfloat162float(v); }

// Narrowing rounds half to even, as the CPU's from_float: float16 overflows to
// +-inf, subnormals are kept; NaN stays NaN (its payload may differ from the CPU's).
template <typename T> __device__ __forceinline__ T from_f32(float v);
template <> __device__ __forceinline__ float from_f32<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_f32<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

// Raw 16 bits of a 16-bit float and back (no value conversion).
__device__ __forceinline__ uint16_t bits16(__half v) { return __half_as_ushort(v); }
__device__ __forceinline__ uint16_t bits16(__nv_bfloat16 v) { return __bfloat16_as_ushort(v); }
template <typename T> __device__ __forceinline__ T from_bits16(uint16_t b);
template <> __device__ __forceinline__ __half from_bits16<__half>(uint16_t b) { return __ushort_as_half(b); }
template <> __device__ __forceinline__ __nv_bfloat16 from_bits16<__nv_bfloat16>(uint16_t b) {
  return __ushort_as_bfloat16(b);
}

// ------------------------------------------------------------- 16-byte vectors

// Elements of T in 16 bytes: 4 floats or 8 16-bit floats.
template <typename T> struct VecWidth { static constexpr int value = 16 / static_cast<int>(sizeof(T)); };

// Loads 16 bytes at p (p must be 16-byte aligned) and widens them to float32.
__device__ __forceinline__ void load_vec(const float* p, float (&f)[4]) {
  const float4 v = *reinterpret_cast<const float4*>(p);
  f[0] = v.x; f[1] = v.y; f[2] = v.z; f[3] = v.w;
}
template <typename T>
__device__ __forceinline__ void load_vec(const T* p, float (&f)[8]) {
  const uint4 v = *reinterpret_cast<const uint4*>(p);
  const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int k = 0; k < 4; ++k) {  // element 2k in the low half of word k (little-endian)
    f[2 * k] = to_f32(from_bits16<T>(static_cast<uint16_t>(w[k] & 0xffffu)));
    f[2 * k + 1] = to_f32(from_bits16<T>(static_cast<uint16_t>(w[k] >> 16)));
  }
}

// Rounds 4 / 8 floats to T and stores them as 16 bytes at p (16-byte aligned).
__device__ __forceinline__ void store_vec(float* p, const float (&f)[4]) {
  *reinterpret_cast<float4*>(p) = make_float4(f[0], f[1], f[2], f[3]);
}
template <typename T>
__device__ __forceinline__ void store_vec(T* p, const float (&f)[8]) {
  uint32_t w[4];
#pragma unroll
  for (int k = 0; k < 4; ++k)
    w[k] = static_cast<uint32_t>(bits16(from_f32<T>(f[2 * k]))) |
           (static_cast<uint32_t>(bits16(from_f32<T>(f[2 * k + 1]))) << 16);
  *reinterpret_cast<uint4*>(p) = make_uint4(w[0], w[1], w[2], w[3]);
}

// V consecutive bytes (V = 4 or 8) as one 4- or 8-byte access; p aligned to V.
template <int V> __device__ __forceinline__ void load_bytes(const uint8_t* p, uint8_t (&b)[V]);
template <> __device__ __forceinline__ void load_bytes<4>(const uint8_t* p, uint8_t (&b)[4]) {
  const uint32_t w = *reinterpret_cast<const uint32_t*>(p);
#pragma unroll
  for (int k = 0; k < 4; ++k) b[k] = static_cast<uint8_t>(w >> (8 * k));
}
template <> __device__ __forceinline__ void load_bytes<8>(const uint8_t* p, uint8_t (&b)[8]) {
  const uint2 w = *reinterpret_cast<const uint2*>(p);
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    b[k] = static_cast<uint8_t>(w.x >> (8 * k));
    b[4 + k] = static_cast<uint8_t>(w.y >> (8 * k));
  }
}
template <int V> __device__ __forceinline__ void store_bytes(uint8_t* p, const uint8_t (&b)[V]);
template <> __device__ __forceinline__ void store_bytes<4>(uint8_t* p, const uint8_t (&b)[4]) {
  *reinterpret_cast<uint32_t*>(p) = static_cast<uint32_t>(b[0]) | (static_cast<uint32_t>(b[1]) << 8) |
                                    (static_cast<uint32_t>(b[2]) << 16) | (static_cast<uint32_t>(b[3]) << 24);
}
template <> __device__ __forceinline__ void store_bytes<8>(uint8_t* p, const uint8_t (&b)[8]) {
  uint2 w;
  w.x = static_cast<uint32_t>(b[0]) | (static_cast<uint32_t>(b[1]) << 8) | (static_cast<uint32_t>(b[2]) << 16) |
        (static_cast<uint32_t>(b[3]) << 24);
  w.y = static_cast<uint32_t>(b[4]) | (static_cast<uint32_t>(b[5]) << 8) | (static_cast<uint32_t>(b[6]) << 16) |
        (static_cast<uint32_t>(b[7]) << 24);
  *reinterpret_cast<uint2*>(p) = w;
}

// ------------------------------------------------- order-preserving float keys

// float32 -> uint32 whose unsigned order is the float order: negative floats have
// all bits flipped, non-negative ones get the sign bit set. -0 sorts just below +0;
// NaNs land beyond the infinities on their sign's side (a positive NaN above +inf,
// a negative NaN below -inf), so a min / max of keys sees every NaN and infinity.
__device__ __forceinline__ uint32_t float_to_key(float v) {
  const uint32_t u = __float_as_uint(v);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
__device__ __forceinline__ float key_to_float(uint32_t k) {
  return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}
// Initial values of running min / max keys (what cudaMemsetAsync with 0xff / 0x00
// writes): an empty channel is recognisable by min key > max key.
constexpr uint32_t kKeyMinInit = 0xffffffffu;
constexpr uint32_t kKeyMaxInit = 0u;

// ------------------------------------------------------------------ reductions

__device__ __forceinline__ uint32_t warp_min(uint32_t v) { return __reduce_min_sync(kFullMask, v); }
__device__ __forceinline__ uint32_t warp_max(uint32_t v) { return __reduce_max_sync(kFullMask, v); }

// Min and max of a value held by every thread of the block; the result is valid in
// thread 0. Every thread of the block must call it (it synchronises the block);
// `scratch` holds 2 * 32 words of shared memory.
__device__ __forceinline__ void block_minmax(uint32_t& mn, uint32_t& mx, uint32_t* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int nwarps = (blockDim.x + 31) >> 5;
  mn = warp_min(mn);
  mx = warp_max(mx);
  if (lane == 0) {
    scratch[warp] = mn;
    scratch[32 + warp] = mx;
  }
  __syncthreads();
  if (warp == 0) {
    mn = lane < nwarps ? scratch[lane] : kKeyMinInit;
    mx = lane < nwarps ? scratch[32 + lane] : kKeyMaxInit;
    mn = warp_min(mn);
    mx = warp_max(mx);
  }
  __syncthreads();  // scratch may be reused by the caller's next iteration
}

// --------------------------------------------------- channels of a ScaleLayout

// Which parameter (scale / zero-point index) element e of a contiguous tensor uses,
// for a layout (outer, channels, inner): element e = (o * channels + c) * inner + i
// uses channel c = (e / inner) % channels.
struct ChannelMap {
  int64_t channels;
  int64_t inner;

  __device__ __forceinline__ int64_t of(int64_t e) const {
    if (channels == 1) return 0;
    if (inner == 1) return e % channels;
    return (e / inner) % channels;
  }
  // Do V consecutive elements starting at a multiple of V share one channel?
  __host__ __device__ __forceinline__ bool uniform(int v) const { return channels == 1 || inner % v == 0; }
};

inline ChannelMap channel_map(const ScaleLayout& L) { return ChannelMap{L.channels, L.inner}; }

// ------------------------------------------------------- element-wise drivers

// q[e] = op(float(x[e]), channel(e)) for e < n, x of float type T, q one byte per
// element. With `vec`, x must be 16-byte aligned and q aligned to V = 16 / sizeof(T)
// bytes: each thread then handles V consecutive elements per step (one 16-byte load,
// one V-byte store), and the last n % V elements go through the scalar loop.
template <typename T, typename Op>
__global__ void
float_to_byte_kernel(const T* __restrict__ x, uint8_t* __restrict__ q, int64_t n, ChannelMap map, Op op,
                     bool vec) {
  constexpr int V = VecWidth<T>::value;
  const int64_t tid = global_thread(), stride = grid_threads();
  int64_t scalar_from = 0;
  if (vec) {
    const int64_t nv = n / V;  // whole vectors
    const bool uniform = map.uniform(V);
    for (int64_t i = tid; i < nv; i += stride) {
      const int64_t e0 = i * V;  // first element of this vector
      float f[V];
      load_vec(x + e0, f);
      uint8_t b[V];
      if (uniform) {
        const int64_t c = map.of(e0);
#pragma unroll
        for (int k = 0; k < V; ++k) b[k] = op(f[k], c);
      } else {
#pragma unroll
        for (int k = 0; k < V; ++k) b[k] = op(f[k], map.of(e0 + k));
      }
      store_bytes<V>(q + e0, b);
    }
    scalar_from = nv * V;
  }
  for (int64_t e = scalar_from + tid; e < n; e += stride) q[e] = op(to_f32(x[e]), map.of(e));
}

// y[e] = round_to_T(op(q[e], channel(e))) for e < n; the mirror image of the above
// (V-byte load, 16-byte store when `vec`).
template <typename T, typename Op>
__global__ void
byte_to_float_kernel(const uint8_t* __restrict__ q, T* __restrict__ y, int64_t n, ChannelMap map, Op op,
                     bool vec) {
  constexpr int V = VecWidth<T>::value;
  const int64_t tid = global_thread(), stride = grid_threads();
  int64_t scalar_from = 0;
  if (vec) {
    const int64_t nv = n / V;
    const bool uniform = map.uniform(V);
    for (int64_t i = tid; i < nv; i += stride) {
      const int64_t e0 = i * V;
      uint8_t b[V];
      load_bytes<V>(q + e0, b);
      float f[V];
      if (uniform) {
        const int64_t c = map.of(e0);
#pragma unroll
        for (int k = 0; k < V; ++k) f[k] = op(b[k], c);
      } else {
#pragma unroll
        for (int k = 0; k < V; ++k) f[k] = op(b[k], map.of(e0 + k));
      }
      store_vec(y + e0, f);
    }
    scalar_from = nv * V;
  }
  for (int64_t e = scalar_from + tid; e < n; e += stride) y[e] = from_f32<T>(op(q[e], map.of(e)));
}

// Host side of the two drivers: picks the vector path when the pointers allow it.
template <typename T, typename Op>
cudaError_t launch_float_to_byte(const T* x, uint8_t* q, int64_t n, const ScaleLayout& L, Op op,
                                 cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  constexpr int V = VecWidth<T>::value;
  const bool vec = aligned_to(x, 16) && aligned_to(q, V);
  const int64_t items = vec ? n / V + n % V : n;
  float_to_byte_kernel<T, Op><<<grid_for(items), kThreads, 0, stream>>>(x, q, n, channel_map(L), op, vec);
  return cudaGetLastError();
}

template <typename T, typename Op>
cudaError_t launch_byte_to_float(const uint8_t* q, T* y, int64_t n, const ScaleLayout& L, Op op,
                                 cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  constexpr int V = VecWidth<T>::value;
  const bool vec = aligned_to(y, 16) && aligned_to(q, V);
  const int64_t items = vec ? n / V + n % V : n;
  byte_to_float_kernel<T, Op><<<grid_for(items), kThreads, 0, stream>>>(q, y, n, channel_map(L), op, vec);
  return cudaGetLastError();
}

}  // namespace lowbit::cuda
