// The small kernels around the GEMMs: finish (split-K sum, scales, bias, rounding), weight
// dequantization for the cuBLAS path, per-token int8 quantization of activations (W8A8).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <cfloat>
#include <cstdint>
#include <type_traits>

#include "cuda/gemm.cuh"

namespace lowbit::cuda::gemm {
namespace {

constexpr int kBlock = 256;

// 1-D grid for n work items of `per` elements each: enough blocks to fill any GPU, grid-stride beyond.
unsigned grid_for(int64_t n) {
  const int64_t b = (n + kBlock - 1) / kBlock;
  return static_cast<unsigned>(b < 1 ? 1 : (b > 65536 ? 65536 : b));
}

__device__ __forceinline__ float load_f(const float* p) { return *p; }
__device__ __forceinline__ float load_f(const __half* p) { return __half2float(*p); }
__device__ __forceinline__ float load_f(const __nv_bfloat16* p) { return __bfloat162float(*p); }

template <typename T>
__device__ __forceinline__ T from_f(float v);
template <>
__device__ __forceinline__ float from_f<float>(float v) { return v; }
template <>
__device__ __forceinline__ __half from_f<__half>(float v) { return __float2half_rn(v); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }
template <>
__device__ __forceinline__ int8_t from_f<int8_t>(float v) { return static_cast<int8_t>(__float2int_rn(v)); }

// ---- finish -------------------------------------------------------------------------------
template <typename AccT, typename OutT>
__global__ void __launch_bounds__(kBlock) finish_kernel(const AccT* __restrict__ acc, int splits, int64_t M, int64_t N,
                                                        const float* __restrict__ row_scale,
                                                        const float* __restrict__ col_scale, int64_t cs_stride,
                                                        const float* __restrict__ bias, OutT* __restrict__ y) {
  const int64_t total = M * N;
  for (int64_t i = blockIdx.x * int64_t{kBlock} + threadIdx.x; i < total; i += int64_t{gridDim.x} * kBlock) {
    float v;
    if constexpr (std::is_same<AccT, int32_t>::value) {
      v = __int2float_rn(acc[i]);  // the CPU's float(acc): round to nearest
    } else {
      v = acc[i];
      for (int z = 1; z < splits; ++z) v = __fadd_rn(v, acc[z * total + i]);  // fixed order
    }
    const int64_t m = i / N, n = i - m * N;
    if (row_scale) v = __fmul_rn(v, row_scale[m]);
    if (col_scale) v = __fmul_rn(v, col_scale[n * cs_stride]);
    if (bias) v = __fadd_rn(v, bias[n]);
    y[i] = from_f<OutT>(v);
  }
}

template <typename AccT>
cudaError_t launch_finish(const AccT* acc, int splits, int64_t M, int64_t N, const float* rs, const float* cs,
                          int64_t cs_stride, const float* bias, void* y, ElemType out, cudaStream_t stream) {
  if (M <= 0 || N <= 0) return cudaSuccess;
  const unsigned grid = grid_for(M * N);
  switch (out) {
    case ElemType::F32:
      finish_kernel<AccT, float><<<grid, kBlock, 0, stream>>>(acc, splits, M, N, rs, cs, cs_stride, bias,
                                                              static_cast<float*>(y));
      break;
    case ElemType::F16:
      finish_kernel<AccT, __half><<<grid, kBlock, 0, stream>>>(acc, splits, M, N, rs, cs, cs_stride, bias,
                                                               static_cast<__half*>(y));
      break;
    case ElemType::BF16:
      finish_kernel<AccT, __nv_bfloat16><<<grid, kBlock, 0, stream>>>(acc, splits, M, N, rs, cs, cs_stride, bias,
                                                                      static_cast<__nv_bfloat16*>(y));
      break;
  }
  return cudaGetLastError();
}

// ---- dequantize ---------------------------------------------------------------------------
// float8 byte -> float, exact (cuda_fp8.h conversion: NaN codes give NaN, e5m2 inf gives inf).
__device__ __forceinline__ float fp8_to_float(uint8_t b, bool e4m3) {
  const __half_raw h = __nv_cvt_fp8_to_halfraw(static_cast<__nv_fp8_storage_t>(b), e4m3 ? __NV_E4M3 : __NV_E5M2);
  return __half2float(__half(h));
}

template <typename OutT>
__device__ __forceinline__ void store8(OutT* dst, const float (&v)[8], int cnt, bool vec) {
  if (vec) {
    if constexpr (std::is_same<OutT, float>::value) {
      reinterpret_cast<float4*>(dst)[0] = make_float4(v[0], v[1], v[2], v[3]);
      reinterpret_cast<float4*>(dst)[1] = make_float4(v[4], v[5], v[6], v[7]);
    } else {
      OutT o[8];
#pragma unroll
      for (int j = 0; j < 8; ++j) o[j] = from_f<OutT>(v[j]);
      *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(o);
    }
  } else {
#pragma unroll
    for (int j = 0; j < 8; ++j)  // static indices keep v in registers
      if (j < cnt) dst[j] = from_f<OutT>(v[j]);
  }
}

// Thread: 8 consecutive elements of one row (a "unit"). Rows [n0, n0 + rows) of W.
template <WeightKind KIND, typename OutT>
__global__ void __launch_bounds__(kBlock) dequant_kernel(const uint8_t* __restrict__ w, const float* __restrict__ scale,
                                                         const float* __restrict__ zp, int64_t groups,
                                                         int64_t group_size, int64_t cs_stride, int64_t K, int64_t n0,
                                                         int64_t rows, OutT* __restrict__ out) {
  const int64_t upr = (K + 7) / 8;  // units per row
  const int64_t total = rows * upr;
  const bool vec = K % 8 == 0;      // then every unit is full and 16/32-byte aligned
  for (int64_t i = blockIdx.x * int64_t{kBlock} + threadIdx.x; i < total; i += int64_t{gridDim.x} * kBlock) {
    const int64_t r = i / upr;
    const int64_t k0 = (i - r * upr) * 8;
    const int64_t n = n0 + r;
    const int cnt = K - k0 < 8 ? static_cast<int>(K - k0) : 8;
    float v[8];
    if constexpr (KIND == WeightKind::Int4 || KIND == WeightKind::Int2) {
      // K % 8 == 0 here (packed format): 4 (int4) or 2 (int2) aligned bytes per unit.
      const int64_t gi = k0 / group_size;
      const float s = scale[n * groups + gi];
      const float z = zp ? zp[n * groups + gi] : 0.0f;
      if constexpr (KIND == WeightKind::Int4) {
        const uint32_t q = *reinterpret_cast<const uint32_t*>(w + n * (K / 2) + k0 / 2);
#pragma unroll
        for (int j = 0; j < 8; ++j) {
          const float code = static_cast<float>(static_cast<int>((q >> (4 * j)) & 15u) - 8);
          v[j] = __fmul_rn(__fsub_rn(code, z), s);
        }
      } else {
        const uint32_t q = *reinterpret_cast<const uint16_t*>(w + n * (K / 4) + k0 / 4);
#pragma unroll
        for (int j = 0; j < 8; ++j) {
          const float code = static_cast<float>(static_cast<int>((q >> (2 * j)) & 3u) - 2);
          v[j] = __fmul_rn(__fsub_rn(code, z), s);
        }
      }
    } else {
      const float s = scale[n * cs_stride];
      const uint8_t* src = w + n * K + k0;
      uint8_t b[8] = {0, 0, 0, 0, 0, 0, 0, 0};
      if (vec) {
        *reinterpret_cast<uint2*>(b) = *reinterpret_cast<const uint2*>(src);
      } else {
#pragma unroll
        for (int j = 0; j < 8; ++j)
          if (j < cnt) b[j] = src[j];
      }
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        float d;
        if constexpr (KIND == WeightKind::Int8) d = static_cast<float>(static_cast<int8_t>(b[j]));
        else d = fp8_to_float(b[j], KIND == WeightKind::Fp8E4M3);
        v[j] = __fmul_rn(d, s);
      }
    }
    store8<OutT>(out + r * K + k0, v, cnt, vec);
  }
}

template <WeightKind KIND>
cudaError_t launch_dequant_kind(const uint8_t* w, const float* scale, const float* zp, int64_t groups, int64_t cs_stride,
                                int64_t N, int64_t K, int64_t n0, int64_t n1, void* out, ElemType ot,
                                cudaStream_t stream) {
  (void)N;
  const int64_t rows = n1 - n0;
  if (rows <= 0 || K <= 0) return cudaSuccess;
  const int64_t group_size = (KIND == WeightKind::Int4 || KIND == WeightKind::Int2) ? K / (groups > 0 ? groups : 1) : 1;
  const unsigned grid = grid_for(rows * ((K + 7) / 8));
  switch (ot) {
    case ElemType::F32:
      dequant_kernel<KIND, float><<<grid, kBlock, 0, stream>>>(w, scale, zp, groups, group_size, cs_stride, K, n0, rows,
                                                               static_cast<float*>(out));
      break;
    case ElemType::F16:
      dequant_kernel<KIND, __half><<<grid, kBlock, 0, stream>>>(w, scale, zp, groups, group_size, cs_stride, K, n0,
                                                                rows, static_cast<__half*>(out));
      break;
    case ElemType::BF16:
      dequant_kernel<KIND, __nv_bfloat16><<<grid, kBlock, 0, stream>>>(w, scale, zp, groups, group_size, cs_stride, K,
                                                                       n0, rows, static_cast<__nv_bfloat16*>(out));
      break;
  }
  return cudaGetLastError();
}

// ---- per-token int8 quantization -----------------------------------------------------------
// One block per row (grid-stride over rows). VEC: K % 8 == 0 and 16-byte aligned rows, 8
// elements per thread and step; otherwise one element.
template <typename InT, int VEC>
__device__ __forceinline__ void load_vec(const InT* p, float (&v)[VEC]) {
  if constexpr (VEC == 1) {
    v[0] = load_f(p);
  } else if constexpr (std::is_same<InT, float>::value) {
    const float4 a = reinterpret_cast<const float4*>(p)[0], b = reinterpret_cast<const float4*>(p)[1];
    v[0] = a.x; v[1] = a.y; v[2] = a.z; v[3] = a.w; v[4] = b.x; v[5] = b.y; v[6] = b.z; v[7] = b.w;
  } else {
    const uint4 raw = *reinterpret_cast<const uint4*>(p);
    const InT* e = reinterpret_cast<const InT*>(&raw);
#pragma unroll
    for (int j = 0; j < 8; ++j) v[j] = load_f(e + j);
  }
}

template <typename CodeT, int VEC>
__device__ __forceinline__ void store_codes(CodeT* p, const float (&q)[VEC]) {
  if constexpr (VEC == 1) {
    p[0] = from_f<CodeT>(q[0]);
  } else if constexpr (std::is_same<CodeT, float>::value) {
    reinterpret_cast<float4*>(p)[0] = make_float4(q[0], q[1], q[2], q[3]);
    reinterpret_cast<float4*>(p)[1] = make_float4(q[4], q[5], q[6], q[7]);
  } else if constexpr (std::is_same<CodeT, int8_t>::value) {
    int8_t o[8];
#pragma unroll
    for (int j = 0; j < 8; ++j) o[j] = from_f<int8_t>(q[j]);
    *reinterpret_cast<uint2*>(p) = *reinterpret_cast<const uint2*>(o);
  } else {
    CodeT o[8];
#pragma unroll
    for (int j = 0; j < 8; ++j) o[j] = from_f<CodeT>(q[j]);
    *reinterpret_cast<uint4*>(p) = *reinterpret_cast<const uint4*>(o);
  }
}

template <typename InT, typename CodeT, int VEC>
__global__ void __launch_bounds__(kBlock) quantize_rows_kernel(const InT* __restrict__ x, int64_t M, int64_t K,
                                                               CodeT* __restrict__ codes, float* __restrict__ sx) {
  __shared__ float s_max[kBlock / 32];
  __shared__ int s_bad[kBlock / 32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int64_t m = blockIdx.x; m < M; m += gridDim.x) {
    const InT* xr = x + m * K;
    CodeT* qr = codes + m * K;
    float amax = 0.0f;
    int bad = 0;
    for (int64_t k = int64_t{threadIdx.x} * VEC; k < K; k += int64_t{kBlock} * VEC) {
      float v[VEC];
      load_vec<InT, VEC>(xr + k, v);
#pragma unroll
      for (int j = 0; j < VEC; ++j) {
        const float a = fabsf(v[j]);
        bad |= !(a <= FLT_MAX);        // NaN or +-inf
        amax = a > amax ? a : amax;    // as the CPU: NaN never wins
      }
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      const float other = __shfl_xor_sync(0xffffffffu, amax, o);
      amax = other > amax ? other : amax;
      bad |= __shfl_xor_sync(0xffffffffu, bad, o);
    }
    if (lane == 0) {
      s_max[warp] = amax;
      s_bad[warp] = bad;
    }
    __syncthreads();
    amax = s_max[0];
    bad = s_bad[0];
#pragma unroll
    for (int w = 1; w < kBlock / 32; ++w) {
      amax = s_max[w] > amax ? s_max[w] : amax;
      bad |= s_bad[w];
    }
    const float s = bad ? __int_as_float(0x7fc00000) : __fdiv_rn(amax, 127.0f);
    if (threadIdx.x == 0) sx[m] = s;
    const bool zero = !(s > 0.0f);  // zero row, underflowing scale, or NaN
    for (int64_t k = int64_t{threadIdx.x} * VEC; k < K; k += int64_t{kBlock} * VEC) {
      float v[VEC], q[VEC];
      load_vec<InT, VEC>(xr + k, v);
#pragma unroll
      for (int j = 0; j < VEC; ++j) {
        float c = zero ? 0.0f : rintf(__fdiv_rn(v[j], s));
        c = c > 127.0f ? 127.0f : (c < -127.0f ? -127.0f : c);
        q[j] = c;
      }
      store_codes<CodeT, VEC>(qr + k, q);
    }
    __syncthreads();  // s_max / s_bad are rewritten for the next row
  }
}

template <typename InT, typename CodeT>
cudaError_t launch_quantize_typed(const InT* x, int64_t M, int64_t K, CodeT* codes, float* sx, cudaStream_t stream) {
  const unsigned grid = static_cast<unsigned>(M < 65536 ? M : 65536);
  const bool vec = K % 8 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0 && reinterpret_cast<uintptr_t>(codes) % 16 == 0;
  if (vec) quantize_rows_kernel<InT, CodeT, 8><<<grid, kBlock, 0, stream>>>(x, M, K, codes, sx);
  else quantize_rows_kernel<InT, CodeT, 1><<<grid, kBlock, 0, stream>>>(x, M, K, codes, sx);
  return cudaGetLastError();
}

template <typename InT>
cudaError_t launch_quantize_in(const InT* x, int64_t M, int64_t K, void* codes, int code_type, float* sx,
                               cudaStream_t stream) {
  switch (code_type) {
    case kCodesInt8: return launch_quantize_typed(x, M, K, static_cast<int8_t*>(codes), sx, stream);
    case static_cast<int>(ElemType::F32): return launch_quantize_typed(x, M, K, static_cast<float*>(codes), sx, stream);
    case static_cast<int>(ElemType::F16): return launch_quantize_typed(x, M, K, static_cast<__half*>(codes), sx, stream);
    case static_cast<int>(ElemType::BF16):
      return launch_quantize_typed(x, M, K, static_cast<__nv_bfloat16*>(codes), sx, stream);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace

cudaError_t launch_finish_f32acc(const float* acc, int splits, int64_t M, int64_t N, const float* row_scale,
                                 const float* col_scale, int64_t cs_stride, const float* bias, void* y, ElemType out,
                                 cudaStream_t stream) {
  return launch_finish<float>(acc, splits, M, N, row_scale, col_scale, cs_stride, bias, y, out, stream);
}

cudaError_t launch_finish_i32acc(const int32_t* acc, int64_t M, int64_t N, const float* row_scale,
                                 const float* col_scale, int64_t cs_stride, const float* bias, void* y, ElemType out,
                                 cudaStream_t stream) {
  return launch_finish<int32_t>(acc, 1, M, N, row_scale, col_scale, cs_stride, bias, y, out, stream);
}

cudaError_t launch_dequantize_weight(WeightKind kind, const uint8_t* w, const float* scale, const float* zero_point,
                                     int64_t groups, int64_t cs_stride, int64_t N, int64_t K, int64_t n0, int64_t n1,
                                     void* out, ElemType out_type, cudaStream_t stream) {
  switch (kind) {
    case WeightKind::Int4:
      return launch_dequant_kind<WeightKind::Int4>(w, scale, zero_point, groups, cs_stride, N, K, n0, n1, out, out_type,
                                                   stream);
    case WeightKind::Int2:
      return launch_dequant_kind<WeightKind::Int2>(w, scale, zero_point, groups, cs_stride, N, K, n0, n1, out, out_type,
                                                   stream);
    case WeightKind::Int8:
      return launch_dequant_kind<WeightKind::Int8>(w, scale, nullptr, 1, cs_stride, N, K, n0, n1, out, out_type, stream);
    case WeightKind::Fp8E4M3:
      return launch_dequant_kind<WeightKind::Fp8E4M3>(w, scale, nullptr, 1, cs_stride, N, K, n0, n1, out, out_type,
                                                      stream);
    case WeightKind::Fp8E5M2:
      return launch_dequant_kind<WeightKind::Fp8E5M2>(w, scale, nullptr, 1, cs_stride, N, K, n0, n1, out, out_type,
                                                      stream);
  }
  return cudaErrorInvalidValue;
}

cudaError_t launch_quantize_rows_int8(const void* x, ElemType x_type, int64_t M, int64_t K, void* codes, int code_type,
                                      float* sx, cudaStream_t stream) {
  if (M <= 0) return cudaSuccess;
  switch (x_type) {
    case ElemType::F32: return launch_quantize_in(static_cast<const float*>(x), M, K, codes, code_type, sx, stream);
    case ElemType::F16: return launch_quantize_in(static_cast<const __half*>(x), M, K, codes, code_type, sx, stream);
    case ElemType::BF16:
      return launch_quantize_in(static_cast<const __nv_bfloat16*>(x), M, K, codes, code_type, sx, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace lowbit::cuda::gemm
