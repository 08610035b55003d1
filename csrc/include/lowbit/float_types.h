// 16-bit float storage types and scalar conversions, shared by every kernel.
// Kernels never include torch headers, so c10::Half / c10::BFloat16 are replaced
// by these layout-compatible structs (one uint16_t each).
#pragma once
#include <cstdint>
#include <cstring>

namespace lowbit {

struct half_t { uint16_t bits; };
struct bf16_t { uint16_t bits; };

// Internal linkage on purpose: these are compiled both into portable files and
// into -mavx2 files; one shared (weak) copy could hand AVX2 code to a portable caller.
namespace {

static inline float bits_to_float(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }
static inline uint32_t float_to_bits(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }

// IEEE binary16 -> binary32, exact (subnormals, inf and NaN included).
static inline float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  if (exp == 0x1f) return bits_to_float(sign | 0x7f800000u | (mant << 13));
  if (exp == 0) {
    if (mant == 0) return bits_to_float(sign);
    // subnormal: value = mant * 2^-24, exactly representable in float32
    float v = static_cast<float>(mant) * 5.9604644775390625e-08f;
    return sign ? -v : v;
  }
  return bits_to_float(sign | ((exp + 112u) << 23) | (mant << 13));
}

// binary32 -> binary16 with round-half-to-even; overflow gives inf, NaN stays NaN.
static inline uint16_t float_to_half(float f) {
  const uint32_t u = float_to_bits(f);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const uint32_t au = u & 0x7fffffffu;
  if (au >= 0x7f800000u) return sign | (au > 0x7f800000u ? 0x7e00u : 0x7c00u);
  if (au >= 0x477ff000u) return sign | 0x7c00u;  // rounds to >= 65520 -> inf
  if (au < 0x38800000u) {                         // below 2^-14: subnormal half
    // add 0.5 (as float) so that the FPU's round-to-nearest-even does the rounding
    float v = bits_to_float(au) + 0.5f;
    return sign | static_cast<uint16_t>(float_to_bits(v) - 0x3f000000u);
  }
  const uint32_t mant_odd = (au >> 13) & 1u;
  uint32_t r = au + 0xc8000fffu + mant_odd;  // rebias exponent (-112 << 23) and round
  return sign | static_cast<uint16_t>(r >> 13);
}

static inline float bf16_to_float(uint16_t b) { return bits_to_float(static_cast<uint32_t>(b) << 16); }

// binary32 -> bfloat16 with round-half-to-even; NaN stays a (quiet) NaN.
static inline uint16_t float_to_bf16(float f) {
  uint32_t u = float_to_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

static inline float to_float(float v) { return v; }
static inline float to_float(half_t v) { return half_to_float(v.bits); }
static inline float to_float(bf16_t v) { return bf16_to_float(v.bits); }

template <typename T> static inline T from_float(float v);
template <> inline float from_float<float>(float v) { return v; }
template <> inline half_t from_float<half_t>(float v) { return half_t{float_to_half(v)}; }
template <> inline bf16_t from_float<bf16_t>(float v) { return bf16_t{float_to_bf16(v)}; }

}  // namespace

// The float element types a kernel can read or write.
enum class FloatType : int { F32 = 0, F16 = 1, BF16 = 2 };

// The float8 formats (OCP e4m3fn and e5m2; docs/formats.md), for the CPU and CUDA kernels.
enum class Fp8Format : int { E4M3FN = 0, E5M2 = 1 };

}  // namespace lowbit
