// CUDA kernels of the affine ops: per-channel min / max reductions, the choice of
// scale / zero-point, quantize and dequantize. Bit-exact with the CPU kernels
// (csrc/cpu/affine.cpp): every float step is one IEEE operation with explicit
// rounding intrinsics (__fdiv_rn, __fadd_rn, ...), so nvcc cannot contract a
// multiply and an add into an FMA that the CPU does not do.
#include "cuda/affine.cuh"
#include "cuda/common.cuh"

namespace lowbit::cuda {
namespace {

// Rows up to this many elements are reduced by one warp each; longer rows are cut
// into chunks of kBlockChunk elements, one block (256 threads) per chunk.
constexpr int64_t kWarpRowMax = 4096;
constexpr int64_t kBlockChunk = 16384;
// Elements one block of the column kernel reads per task (about 64 per thread).
constexpr int64_t kColTaskElems = 16384;

__device__ __forceinline__ void fold_key(float v, uint32_t& mn, uint32_t& mx) {
  const uint32_t k = float_to_key(v);
  mn = k < mn ? k : mn;
  mx = k > mx ? k : mx;
}

// Threads t = 0 .. nt-1 together read the `len` elements at p and fold them into
// their running keys. With `vec` (p 16-byte aligned) they read 16-byte vectors, then
// the len % V tail one element at a time.
template <typename T>
__device__ __forceinline__ void minmax_scan(const T* __restrict__ p, int64_t len, int t, int nt, bool vec,
                                            uint32_t& mn, uint32_t& mx) {
  constexpr int V = VecWidth<T>::value;
  int64_t from = 0;
  if (vec) {
    const int64_t nv = len / V;
    for (int64_t i = t; i < nv; i += nt) {
      float f[V];
      load_vec(p + i * V, f);
#pragma unroll
      for (int k = 0; k < V; ++k) fold_key(f[k], mn, mx);
    }
    from = nv * V;
  }
  for (int64_t e = from + t; e < len; e += nt) fold_key(to_f32(p[e]), mn, mx);
}

// Layout (outer, channels, inner) seen as rows = outer * channels rows of `inner`
// contiguous elements; row r starts at element r * inner and belongs to channel
// r % channels. One warp per row (rows of at most kWarpRowMax elements); the loop
// over rows is warp-uniform, as the full-mask warp reductions need.
template <typename T>
__global__ void
minmax_rows_warp_kernel(const T* __restrict__ x, int64_t rows, int64_t inner, int64_t channels,
                        uint32_t* __restrict__ kmin, uint32_t* __restrict__ kmax, bool vec) {
  const int lane = threadIdx.x & 31;
  const int64_t warp = global_thread() >> 5, nwarps = grid_threads() >> 5;  // blockDim is a multiple of 32
  for (int64_t r = warp; r < rows; r += nwarps) {
    uint32_t mn = kKeyMinInit, mx = kKeyMaxInit;
    minmax_scan(x + r * inner, inner, lane, 32, vec, mn, mx);
    mn = warp_min(mn);
    mx = warp_max(mx);
    if (lane == 0) {
      const int64_t c = r % channels;
      atomicMin(kmin + c, mn);
      atomicMax(kmax + c, mx);
    }
  }
}

// Long rows: task = (row r, chunk j) covers elements [j * kBlockChunk, min((j + 1) *
// kBlockChunk, inner)) of row r; one block per task, block-uniform loop over tasks.
// One atomic per task and key, so even a per-tensor reduction of 2^30 elements makes
// only 2^16 atomics on its single channel.
template <typename T>
__global__ void
minmax_rows_block_kernel(const T* __restrict__ x, int64_t rows, int64_t inner, int64_t channels,
                         int64_t chunks_per_row, uint32_t* __restrict__ kmin, uint32_t* __restrict__ kmax,
                         bool vec) {
  __shared__ uint32_t scratch[64];
  const int64_t tasks = rows * chunks_per_row;
  for (int64_t task = blockIdx.x; task < tasks; task += gridDim.x) {
    const int64_t r = task / chunks_per_row, j = task % chunks_per_row;
    const int64_t start = j * kBlockChunk;  // offset of the chunk inside row r
    const int64_t len = inner - start < kBlockChunk ? inner - start : kBlockChunk;
    uint32_t mn = kKeyMinInit, mx = kKeyMaxInit;
    minmax_scan(x + r * inner + start, len, threadIdx.x, blockDim.x, vec, mn, mx);
    block_minmax(mn, mx, scratch);
    if (threadIdx.x == 0) {
      const int64_t c = r % channels;
      atomicMin(kmin + c, mn);
      atomicMax(kmax + c, mx);
    }
  }
}

// Per-axis on the last axis (inner == 1): x is a row-major [outer, channels] matrix
// and channel c is column c. A task is a tile of tile_cols consecutive columns times
// a slab of slab_rows rows. Thread t reads column c0 + t % tile_cols and rows
// o0 + t / tile_cols, o0 + t / tile_cols + rows_per_step, ... (rows_per_step =
// blockDim / tile_cols), so consecutive threads read consecutive addresses also when
// there are fewer than 256 columns. Partial results meet in shared memory, then one
// global atomic per column and task.
template <typename T>
__global__ void
minmax_cols_kernel(const T* __restrict__ x, int64_t outer, int64_t channels, int tile_cols, int64_t slab_rows,
                   uint32_t* __restrict__ kmin, uint32_t* __restrict__ kmax) {
  __shared__ uint32_t smin[kThreads], smax[kThreads];
  const int64_t col_tiles = (channels + tile_cols - 1) / tile_cols;
  const int64_t slabs = (outer + slab_rows - 1) / slab_rows;
  const int rows_per_step = blockDim.x / tile_cols;  // >= 1 since tile_cols <= blockDim
  const int tc = threadIdx.x % tile_cols, tr = threadIdx.x / tile_cols;
  for (int64_t task = blockIdx.x; task < col_tiles * slabs; task += gridDim.x) {
    const int64_t c = (task % col_tiles) * tile_cols + tc;  // this thread's column
    const int64_t o0 = (task / col_tiles) * slab_rows;
    const int64_t o1 = o0 + slab_rows < outer ? o0 + slab_rows : outer;
    const bool active = tr < rows_per_step && c < channels;
    uint32_t mn = kKeyMinInit, mx = kKeyMaxInit;
    if (active)
      for (int64_t o = o0 + tr; o < o1; o += rows_per_step) fold_key(to_f32(x[o * channels + c]), mn, mx);
    if (threadIdx.x < tile_cols) {  // thread t < tile_cols owns column slot t (tc == t, tr == 0)
      smin[threadIdx.x] = kKeyMinInit;
      smax[threadIdx.x] = kKeyMaxInit;
    }
    __syncthreads();
    if (active) {
      atomicMin(smin + tc, mn);
      atomicMax(smax + tc, mx);
    }
    __syncthreads();
    if (threadIdx.x < tile_cols && c < channels) {
      atomicMin(kmin + c, smin[threadIdx.x]);
      atomicMax(kmax + c, smax[threadIdx.x]);
    }
    __syncthreads();  // the next task re-initialises smin / smax
  }
}

template <typename T>
cudaError_t minmax_keys_typed(const T* x, ScaleLayout L, uint32_t* kmin, uint32_t* kmax, cudaStream_t stream) {
  if (L.numel() == 0) return cudaSuccess;
  if (L.channels == 1) L = ScaleLayout{1, 1, L.numel()};  // e.g. per axis on a size-1 axis: one long row
  constexpr int V = VecWidth<T>::value;
  if (L.inner == 1 && L.channels > 1) {
    const int tile_cols = static_cast<int>(L.channels < kThreads ? L.channels : kThreads);
    const int64_t slab_rows = kColTaskElems / tile_cols;  // >= 64
    const int64_t tasks = (L.channels + tile_cols - 1) / tile_cols * ((L.outer + slab_rows - 1) / slab_rows);
    const unsigned blocks = grid_for(tasks * kThreads);
    minmax_cols_kernel<T><<<blocks, kThreads, 0, stream>>>(x, L.outer, L.channels, tile_cols, slab_rows, kmin, kmax);
    return cudaGetLastError();
  }
  const int64_t rows = L.outer * L.channels;
  // Every row (and every chunk, kBlockChunk being a multiple of V) starts 16-byte
  // aligned when x does and the row length is a multiple of V.
  const bool vec = aligned_to(x, 16) && L.inner % V == 0;
  if (L.inner <= kWarpRowMax) {
    minmax_rows_warp_kernel<T><<<grid_for(rows * 32), kThreads, 0, stream>>>(x, rows, L.inner, L.channels, kmin,
                                                                           kmax, vec);
  } else {
    const int64_t chunks = (L.inner + kBlockChunk - 1) / kBlockChunk;
    minmax_rows_block_kernel<T><<<grid_for(rows * chunks * kThreads), kThreads, 0, stream>>>(
        x, rows, L.inner, L.channels, chunks, kmin, kmax, vec);
  }
  return cudaGetLastError();
}

// One thread per channel: the CPU op's formulas (csrc/ops/cpu_affine.cpp) on the
// decoded min / max. An empty channel (min key > max key) reads as min = max = 0.
__global__ void
qparams_finalize_kernel(const uint32_t* __restrict__ kmin, const uint32_t* __restrict__ kmax, int64_t channels,
                        float qmin, float qmax, bool symmetric, float* __restrict__ scale,
                        float* __restrict__ zero_point) {
  for (int64_t c = global_thread(); c < channels; c += grid_threads()) {
    const uint32_t a = kmin[c], b = kmax[c];
    const float mn = a > b ? 0.f : key_to_float(a);
    const float mx = a > b ? 0.f : key_to_float(b);
    if (!isfinite(mn) || !isfinite(mx)) {
      scale[c] = __int_as_float(0x7fc00000);
      zero_point[c] = __int_as_float(0x7fc00000);
      continue;
    }
    if (symmetric) {
      const float s = __fdiv_rn(fmaxf(-mn, mx), qmax);
      scale[c] = s > 0.f ? s : 1.f;
      zero_point[c] = 0.f;
    } else {
      const float lo = fminf(mn, 0.f), hi = fmaxf(mx, 0.f);  // keep 0.0 exactly representable
      const float s = __fdiv_rn(__fsub_rn(hi, lo), __fsub_rn(qmax, qmin));
      const float sc = s > 0.f ? s : 1.f;
      scale[c] = sc;
      zero_point[c] = fminf(fmaxf(__fsub_rn(qmin, rintf(__fdiv_rn(lo, sc))), qmin), qmax);
    }
  }
}

// code = clamp(rint(x / s + zp), qmin, qmax); NaN x -> the code of 0.0; +-inf ->
// qmax / qmin by the clamp. fminf / fmaxf return the non-NaN operand, so even an
// (unchecked) NaN zero-point gives an in-range code.
struct AffineQuantOp {
  const float* scale;
  const float* zero_point;  // null: symmetric
  float qmin, qmax;
  __device__ __forceinline__ uint8_t operator()(float x, int64_t c) const {
    float v = __fdiv_rn(x, scale[c]);
    if (v != v) v = 0.f;
    if (zero_point) v = __fadd_rn(v, zero_point[c]);
    v = fminf(fmaxf(rintf(v), qmin), qmax);  // rintf: round half to even
    return static_cast<uint8_t>(static_cast<int8_t>(static_cast<int>(v)));
  }
};

struct AffineDequantOp {
  const float* scale;
  const float* zero_point;
  __device__ __forceinline__ float operator()(uint8_t b, int64_t c) const {
    const float q = static_cast<float>(static_cast<int8_t>(b));
    const float zp = zero_point ? zero_point[c] : 0.f;
    return __fmul_rn(__fsub_rn(q, zp), scale[c]);
  }
};

}  // namespace

cudaError_t launch_minmax_keys(const void* x, FloatType type, ScaleLayout L, uint32_t* kmin, uint32_t* kmax,
                               cudaStream_t stream) {
  if (L.channels <= 0) return cudaSuccess;
  const size_t bytes = static_cast<size_t>(L.channels) * sizeof(uint32_t);
  cudaError_t err = cudaMemsetAsync(kmin, 0xff, bytes, stream);  // kKeyMinInit
  if (err != cudaSuccess) return err;
  err = cudaMemsetAsync(kmax, 0x00, bytes, stream);  // kKeyMaxInit
  if (err != cudaSuccess) return err;
  return with_float_type(type, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    return minmax_keys_typed(static_cast<const T*>(x), L, kmin, kmax, stream);
  });
}

cudaError_t launch_choose_qparams_affine(const void* x, FloatType type, ScaleLayout L, int bits, bool symmetric,
                                         uint32_t* keys, float* scale, float* zero_point, cudaStream_t stream) {
  if (L.channels <= 0) return cudaSuccess;
  uint32_t* kmin = keys;
  uint32_t* kmax = keys + L.channels;
  cudaError_t err = launch_minmax_keys(x, type, L, kmin, kmax, stream);
  if (err != cudaSuccess) return err;
  const float qmin = static_cast<float>(-(1 << (bits - 1))), qmax = static_cast<float>((1 << (bits - 1)) - 1);
  qparams_finalize_kernel<<<grid_for(L.channels), kThreads, 0, stream>>>(kmin, kmax, L.channels, qmin, qmax,
                                                                        symmetric, scale, zero_point);
  return cudaGetLastError();
}

cudaError_t launch_quantize_affine(const void* x, FloatType type, ScaleLayout L, const float* scale,
                                   const float* zero_point, int bits, int8_t* codes, cudaStream_t stream) {
  const AffineQuantOp op{scale, zero_point, static_cast<float>(-(1 << (bits - 1))),
                         static_cast<float>((1 << (bits - 1)) - 1)};
  uint8_t* q = reinterpret_cast<uint8_t*>(codes);
  return with_float_type(type, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    return launch_float_to_byte(static_cast<const T*>(x), q, L.numel(), L, op, stream);
  });
}

cudaError_t launch_dequantize_affine(const int8_t* codes, ScaleLayout L, const float* scale, const float* zero_point,
                                     void* y, FloatType type, cudaStream_t stream) {
  const AffineDequantOp op{scale, zero_point};
  const uint8_t* q = reinterpret_cast<const uint8_t*>(codes);
  return with_float_type(type, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    return launch_byte_to_float(q, static_cast<T*>(y), L.numel(), L, op, stream);
  });
}

}  // namespace lowbit::cuda
