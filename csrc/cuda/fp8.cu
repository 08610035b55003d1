// CUDA kernels of the float8 ops (e4m3fn, e5m2): choice of scale, quantize and
// dequantize, byte-identical to the CPU kernels (csrc/cpu/fp8.cpp).
//
// Encoding uses cuda_fp8.h's __nv_cvt_float_to_fp8(v, __NV_SATFINITE, ...), which
// rounds half to even (a hardware cvt.rn.satfinite on sm_89+, the header's software
// conversion on sm_80 / sm_86). Two cases are decided here before it is called, so
// that the result never depends on how a given GPU treats them:
//   - NaN: the CPU op writes sign | 0x7f; the intrinsic drops the sign of a NaN, and so
//     does the GPU's division (see Fp8QuantOp).
//   - |v| above the max finite (448 / 57344), +-inf included: sign | max code, the
//     CPU's saturation (the intrinsic's satfinite gives the same, but this makes it
//     explicit and independent of how infinities are treated).
// What the intrinsic sees is then finite and within range, where round-half-to-even
// (down to the subnormals, -0 -> 0x80) is all there is to it.
#include <cuda_fp8.h>

#include "cuda/affine.cuh"
#include "cuda/common.cuh"
#include "cuda/fp8.cuh"

namespace lowbit::cuda {
namespace {

__host__ __device__ __forceinline__ uint32_t float_bits(float v) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(v);
#else
  uint32_t u;
  std::memcpy(&u, &v, 4);
  return u;
#endif
}

__host__ __device__ __forceinline__ float bits_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float v;
  std::memcpy(&v, &u, 4);
  return v;
#endif
}

template <bool E4M3> struct Fp8Spec;
template <> struct Fp8Spec<true> {
  static constexpr uint32_t kMaxBits = 0x43e00000u;  // 448.0f
  static constexpr uint8_t kMaxCode = 0x7e;
};
template <> struct Fp8Spec<false> {
  static constexpr uint32_t kMaxBits = 0x47600000u;  // 57344.0f
  static constexpr uint8_t kMaxCode = 0x7b;
};

// float32 -> float8 byte, the CPU rule (see the top of this file).
template <bool E4M3>
__host__ __device__ __forceinline__ uint8_t encode_fp8(float v) {
  const uint32_t u = float_bits(v);
  const uint8_t sign = static_cast<uint8_t>((u >> 24) & 0x80u);
  const uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return static_cast<uint8_t>(sign | 0x7fu);                     // NaN
  if (a > Fp8Spec<E4M3>::kMaxBits) return static_cast<uint8_t>(sign | Fp8Spec<E4M3>::kMaxCode);  // saturate
  return static_cast<uint8_t>(__nv_cvt_float_to_fp8(v, __NV_SATFINITE, E4M3 ? __NV_E4M3 : __NV_E5M2));
}

// float8 byte -> float32, exact; every NaN code gives sign | 0x7fc00000 and e5m2's
// infinities +-inf (the CPU's decode table, csrc/cpu/fp8.cpp).
template <bool E4M3>
__host__ __device__ __forceinline__ float decode_fp8(uint8_t b) {
  const uint32_t sign = static_cast<uint32_t>(b & 0x80u) << 24;
  if (E4M3) {
    const uint32_t e = (b >> 3) & 0xfu, m = b & 0x7u;
    if (e == 0xf && m == 0x7) return bits_float(sign | 0x7fc00000u);
    if (e == 0) {
      const float v = static_cast<float>(m) * 0.001953125f;  // m * 2^-9, exact
      return sign ? -v : v;
    }
    return bits_float(sign | ((e + 120u) << 23) | (m << 20));  // rebias 7 -> 127
  }
  const uint32_t e = (b >> 2) & 0x1fu, m = b & 0x3u;
  if (e == 0x1f) return bits_float(sign | (m == 0 ? 0x7f800000u : 0x7fc00000u));
  if (e == 0) {
    const float v = static_cast<float>(m) * 1.52587890625e-05f;  // m * 2^-16, exact
    return sign ? -v : v;
  }
  return bits_float(sign | ((e + 112u) << 23) | (m << 21));  // rebias 15 -> 127
}

template <bool E4M3>
struct Fp8QuantOp {
  const float* scale;
  __device__ __forceinline__ uint8_t operator()(float x, int64_t c) const {
    const float s = scale[c];
    const float v = __fdiv_rn(x, s);
    if (v != v) {
      // A GPU division returns one canonical NaN; the CPU op's (x86 divps) keeps the sign
      // of x's NaN, else of the scale's NaN, else gives the negative default NaN (0 / 0,
      // inf / inf). The code keeps that sign, as on the CPU.
      const uint32_t src = x != x ? float_bits(x) : (s != s ? float_bits(s) : 0x80000000u);
      return static_cast<uint8_t>(((src >> 24) & 0x80u) | 0x7fu);
    }
    return encode_fp8<E4M3>(v);
  }
};

template <bool E4M3>
struct Fp8DequantOp {
  const float* scale;
  __device__ __forceinline__ float operator()(uint8_t b, int64_t c) const {
    return __fmul_rn(decode_fp8<E4M3>(b), scale[c]);
  }
};

// One thread per channel: scale = absmax / max_finite, 1 where that is 0 (empty or
// all-zero channels, underflow), NaN where the channel holds NaN or +-inf.
__global__ void
fp8_scale_finalize_kernel(const uint32_t* __restrict__ kmin, const uint32_t* __restrict__ kmax, int64_t channels,
                          float max_finite, float* __restrict__ scale) {
  for (int64_t c = global_thread(); c < channels; c += grid_threads()) {
    const uint32_t a = kmin[c], b = kmax[c];
    const float mn = a > b ? 0.f : key_to_float(a);  // min key > max key: no element
    const float mx = a > b ? 0.f : key_to_float(b);
    if (!isfinite(mn) || !isfinite(mx)) {
      scale[c] = __int_as_float(0x7fc00000);
      continue;
    }
    const float s = __fdiv_rn(fmaxf(-mn, mx), max_finite);
    scale[c] = s > 0.f ? s : 1.f;
  }
}

}  // namespace

cudaError_t launch_choose_scale_fp8(const void* x, FloatType type, ScaleLayout L, Fp8Format kind, uint32_t* keys,
                                    float* scale, cudaStream_t stream) {
  if (L.channels <= 0) return cudaSuccess;
  uint32_t* kmin = keys;
  uint32_t* kmax = keys + L.channels;
  const cudaError_t err = launch_minmax_keys(x, type, L, kmin, kmax, stream);
  if (err != cudaSuccess) return err;
  const float max_finite = kind == Fp8Format::E4M3FN ? 448.f : 57344.f;
  fp8_scale_finalize_kernel<<<grid_for(L.channels), kThreads, 0, stream>>>(kmin, kmax, L.channels, max_finite,
                                                                           scale);
  return cudaGetLastError();
}

cudaError_t launch_quantize_fp8(const void* x, FloatType type, ScaleLayout L, const float* scale, Fp8Format kind,
                                uint8_t* q, cudaStream_t stream) {
  return with_float_type(type, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    const T* xt = static_cast<const T*>(x);
    if (kind == Fp8Format::E4M3FN) return launch_float_to_byte(xt, q, L.numel(), L, Fp8QuantOp<true>{scale}, stream);
    return launch_float_to_byte(xt, q, L.numel(), L, Fp8QuantOp<false>{scale}, stream);
  });
}

cudaError_t launch_dequantize_fp8(const uint8_t* q, Fp8Format kind, ScaleLayout L, const float* scale, void* y,
                                  FloatType type, cudaStream_t stream) {
  return with_float_type(type, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    T* yt = static_cast<T*>(y);
    if (kind == Fp8Format::E4M3FN) return launch_byte_to_float(q, yt, L.numel(), L, Fp8DequantOp<true>{scale}, stream);
    return launch_byte_to_float(q, yt, L.numel(), L, Fp8DequantOp<false>{scale}, stream);
  });
}

}  // namespace lowbit::cuda
