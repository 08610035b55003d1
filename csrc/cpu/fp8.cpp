// Portable float8 kernels and the run-time choice of the AVX2 ones (cpu/isa.h).
#include "cpu/fp8.h"

#include <algorithm>
#include <cstring>
#include <type_traits>

#include "cpu/isa.h"

namespace lowbit::cpu {

namespace {

template <Fp8Format F>
inline uint8_t encode(float v) {
  constexpr Fp8Codec C = codec_of(F);
  const uint32_t u = float_to_bits(v);
  const uint8_t sign = static_cast<uint8_t>(u >> 24) & 0x80u;
  const uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return sign | kFp8NanCode;
  if (a > C.max_bits) return sign | C.max_code;  // saturate, +-inf included
  if (a < C.min_normal_bits) {
    const float magic = bits_to_float(C.magic_bits);
    return sign | static_cast<uint8_t>(float_to_bits(bits_to_float(a) + magic) - C.magic_bits);
  }
  const uint32_t r = a + C.rebias + ((1u << (C.shift - 1)) - 1u) + ((a >> C.shift) & 1u);
  return sign | static_cast<uint8_t>(r >> C.shift);
}

template <Fp8Format F>
float decode_scalar(uint8_t b) {
  const uint32_t sign = static_cast<uint32_t>(b & 0x80u) << 24;
  if (F == Fp8Format::E4M3FN) {
    const uint32_t e = (b >> 3) & 0xfu, m = b & 0x7u;
    if (e == 0xf && m == 0x7) return bits_to_float(sign | 0x7fc00000u);
    if (e == 0) {
      const float v = static_cast<float>(m) * 0.001953125f;  // m * 2^-9
      return sign ? -v : v;
    }
    return bits_to_float(sign | ((e + 120u) << 23) | (m << 20));
  }
  const uint32_t e = (b >> 2) & 0x1fu, m = b & 0x3u;
  if (e == 0x1f) return bits_to_float(sign | (m == 0 ? 0x7f800000u : 0x7fc00000u));
  if (e == 0) {
    const float v = static_cast<float>(m) * 1.52587890625e-05f;  // m * 2^-16
    return sign ? -v : v;
  }
  return bits_to_float(sign | ((e + 112u) << 23) | (m << 21));
}

// Every NaN code decodes to the quiet NaN sign | 0x7fc00000, which float16 and
// bfloat16 conversions (portable or F16C) map to the same bits.
struct DecodeTables {
  float e4m3fn[256];
  float e5m2[256];
  DecodeTables() {
    for (int b = 0; b < 256; ++b) {
      e4m3fn[b] = decode_scalar<Fp8Format::E4M3FN>(static_cast<uint8_t>(b));
      e5m2[b] = decode_scalar<Fp8Format::E5M2>(static_cast<uint8_t>(b));
    }
  }
};

const DecodeTables& tables() {
  static const DecodeTables t;
  return t;
}

// Absolute value of an element as the bits of a float32: for non-negative floats
// (NaN included) the integer order of the bits is the numeric order, with every
// NaN above +inf, so an integer max is a NaN-sticky absmax.
inline uint32_t abs_bits(float v) { return float_to_bits(v) & 0x7fffffffu; }
inline uint32_t abs_bits(half_t v) { return float_to_bits(half_to_float(v.bits)) & 0x7fffffffu; }
inline uint32_t abs_bits(bf16_t v) { return (static_cast<uint32_t>(v.bits) << 16) & 0x7fffffffu; }

template <typename T>
void absmax_row_portable(const T* x, int64_t n, float* mn, float* mx) {
  float a;
  if constexpr (std::is_same_v<T, float>) {
    uint32_t m = 0;
    const auto* u = reinterpret_cast<const uint32_t*>(static_cast<const void*>(x));
    for (int64_t i = 0; i < n; ++i) m = std::max(m, u[i] & 0x7fffffffu);
    a = bits_to_float(m);
  } else {
    // 16-bit floats: the same order argument holds for their own bits.
    uint16_t m = 0;
    for (int64_t i = 0; i < n; ++i) m = std::max<uint16_t>(m, x[i].bits & 0x7fffu);
    a = std::is_same_v<T, half_t> ? half_to_float(m) : bf16_to_float(m);
  }
  *mn = -a;
  *mx = a;
}

template <typename T>
void absmax_cols_portable(const T* x, int64_t rows, int64_t cols, float* mn, float* mx) {
  // Running results are compared as signed int32 bits: the initial -inf is negative,
  // absmax values (NaN included) are non-negative and ordered.
  for (int64_t r = 0; r < rows; ++r) {
    const T* row = x + r * cols;
    for (int64_t c = 0; c < cols; ++c) {
      int32_t cur;
      std::memcpy(&cur, mx + c, 4);
      const int32_t v = static_cast<int32_t>(abs_bits(row[c]));
      if (v > cur) std::memcpy(mx + c, &v, 4);
    }
  }
  for (int64_t c = 0; c < cols; ++c) mn[c] = -mx[c];
}

template <Fp8Format F, typename T>
void quantize_portable(const T* x, uint8_t* q, int64_t n, const float* scale, int64_t stride) {
  if (stride == 0) {
    const float s = scale[0];
    for (int64_t i = 0; i < n; ++i) q[i] = encode<F>(to_float(x[i]) / s);
  } else {
    for (int64_t i = 0; i < n; ++i) q[i] = encode<F>(to_float(x[i]) / scale[i]);
  }
}

template <typename T>
void dequantize_portable(const uint8_t* q, T* y, int64_t n, const float* scale, int64_t stride,
                         Fp8Format fmt) {
  const float* lut = fp8_decode_table(fmt);
  if (stride == 0) {
    const float s = scale[0];
    for (int64_t i = 0; i < n; ++i) y[i] = from_float<T>(lut[q[i]] * s);
  } else {
    for (int64_t i = 0; i < n; ++i) y[i] = from_float<T>(lut[q[i]] * scale[i]);
  }
}

}  // namespace

float fp8_max_finite(Fp8Format fmt) { return bits_to_float(codec_of(fmt).max_bits); }

uint8_t float_to_fp8(float v, Fp8Format fmt) {
  return fmt == Fp8Format::E4M3FN ? encode<Fp8Format::E4M3FN>(v) : encode<Fp8Format::E5M2>(v);
}

float fp8_to_float(uint8_t code, Fp8Format fmt) { return fp8_decode_table(fmt)[code]; }

const float* fp8_decode_table(Fp8Format fmt) {
  return fmt == Fp8Format::E4M3FN ? tables().e4m3fn : tables().e5m2;
}

template <typename T>
void fp8_absmax_row(const T* x, int64_t n, float* mn, float* mx) {
#if defined(LOWBIT_HAVE_AVX2)
  if (use_avx2()) return avx2::fp8_absmax_row(x, n, mn, mx);
#endif
  absmax_row_portable(x, n, mn, mx);
}

template <typename T>
void fp8_absmax_cols(const T* x, int64_t rows, int64_t cols, float* mn, float* mx) {
#if defined(LOWBIT_HAVE_AVX2)
  if (use_avx2()) return avx2::fp8_absmax_cols(x, rows, cols, mn, mx);
#endif
  absmax_cols_portable(x, rows, cols, mn, mx);
}

template <typename T>
void quantize_fp8_span(const T* x, uint8_t* q, int64_t n, const float* scale, int64_t scale_stride,
                       Fp8Format fmt) {
#if defined(LOWBIT_HAVE_AVX2)
  if (use_avx2()) return avx2::quantize_fp8_span(x, q, n, scale, scale_stride, fmt);
#endif
  if (fmt == Fp8Format::E4M3FN) quantize_portable<Fp8Format::E4M3FN>(x, q, n, scale, scale_stride);
  else quantize_portable<Fp8Format::E5M2>(x, q, n, scale, scale_stride);
}

template <typename T>
void dequantize_fp8_span(const uint8_t* q, T* y, int64_t n, const float* scale, int64_t scale_stride,
                         Fp8Format fmt, bool stream) {
#if defined(LOWBIT_HAVE_AVX2)
  if (use_avx2()) return avx2::dequantize_fp8_span(q, y, n, scale, scale_stride, fmt, stream);
#endif
  dequantize_portable(q, y, n, scale, scale_stride, fmt);
}

#define LOWBIT_FP8_INSTANTIATE(T)                                                                     \
  template void fp8_absmax_row<T>(const T*, int64_t, float*, float*);                                 \
  template void fp8_absmax_cols<T>(const T*, int64_t, int64_t, float*, float*);                       \
  template void quantize_fp8_span<T>(const T*, uint8_t*, int64_t, const float*, int64_t, Fp8Format);  \
  template void dequantize_fp8_span<T>(const uint8_t*, T*, int64_t, const float*, int64_t, Fp8Format, bool);
LOWBIT_FP8_INSTANTIATE(float)
LOWBIT_FP8_INSTANTIATE(half_t)
LOWBIT_FP8_INSTANTIATE(bf16_t)
#undef LOWBIT_FP8_INSTANTIATE

}  // namespace lowbit::cpu
