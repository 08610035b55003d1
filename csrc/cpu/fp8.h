// Float8 kernels (OCP e4m3fn and e5m2) on raw pointers; no torch header.
//
// Byte layouts (docs/formats.md, float8 section):
//   e4m3fn: sign | 4 exponent bits (bias 7) | 3 mantissa bits. No infinity;
//           S.1111.111 is NaN; max finite 448 (S.1111.110); subnormals m * 2^-9.
//   e5m2:   sign | 5 exponent bits (bias 15) | 2 mantissa bits, IEEE-like:
//           S.11111.00 is infinity, S.11111.{01,10,11} NaN; max finite 57344;
//           subnormals m * 2^-16.
// Encoding from float32 rounds half to even and saturates: finite values beyond the
// max finite, and +-inf, become +-max finite; NaN becomes sign | 0x7f (what torch
// writes for both formats).
#pragma once
#include <cstdint>

#include "lowbit/float_types.h"

namespace lowbit::cpu {

// Constants of the float32 -> float8 encoders (portable and AVX2 share them).
// A float32 |v| (as bits `a`) in [min_normal, max] encodes as
//   (a + rebias + (1 << (shift - 1)) - 1 + ((a >> shift) & 1)) >> shift
// (round half to even, carries into the exponent); below min_normal as
//   bits(|v| + magic) - bits(magic), magic being the power of two whose float32 ulp
// is the format's subnormal step, so that the FPU's own round-half-to-even rounds.
struct Fp8Codec {
  uint32_t max_bits;         // float32 bits of the largest finite value
  uint32_t min_normal_bits;  // float32 bits of the smallest normal value
  uint32_t rebias;           // (bias - 127) << 23, modulo 2^32
  int shift;                 // 23 - mantissa bits
  uint32_t magic_bits;       // float32 bits of 2^(subnormal step exponent + 23)
  uint8_t max_code;          // code of +max finite
};

// static: every translation unit gets its own copy (no ODR sharing with AVX2 code).
static constexpr Fp8Codec codec_of(Fp8Format fmt) {
  return fmt == Fp8Format::E4M3FN
             ? Fp8Codec{0x43e00000u /*448*/, 0x3c800000u /*2^-6*/, static_cast<uint32_t>(-120) << 23, 20,
                        0x46800000u /*2^14*/, 0x7e}
             : Fp8Codec{0x47600000u /*57344*/, 0x38800000u /*2^-14*/, static_cast<uint32_t>(-112) << 23, 21,
                        0x43000000u /*2^7*/, 0x7b};
}

// Code written for NaN input (both formats; sign kept), as torch does.
constexpr uint8_t kFp8NanCode = 0x7f;

// Largest finite value of a format: 448 or 57344.
float fp8_max_finite(Fp8Format fmt);

// Scalar conversions (exact decode; encode as described above).
uint8_t float_to_fp8(float v, Fp8Format fmt);
float fp8_to_float(uint8_t code, Fp8Format fmt);

// Absolute-maximum reductions in the shape reduce_minmax (csrc/ops/cpu_driver.h)
// expects from min/max kernels: the absmax a is returned as min = -a, max = a,
// so that folding partial results with min/max stays correct. A NaN read makes
// both results NaN; an infinity makes them -inf / +inf.
//
// Row: n contiguous elements -> *mn, *mx (n == 0 gives -0 / 0).
template <typename T>
void fp8_absmax_row(const T* x, int64_t n, float* mn, float* mx);
// Columns: folds a row-major [rows, cols] block into running per-column results
// mn[c], mx[c] (each either +inf / -inf initially, or a previous -a / a pair).
template <typename T>
void fp8_absmax_cols(const T* x, int64_t rows, int64_t cols, float* mn, float* mx);

// q[j] = float_to_fp8(float(x[j]) / scale[j * scale_stride]) for j < n, with
// scale_stride 0 (one scale for the span) or 1 (one scale per element).
template <typename T>
void quantize_fp8_span(const T* x, uint8_t* q, int64_t n, const float* scale, int64_t scale_stride,
                       Fp8Format fmt);

// y[j] = from_float<T>(fp8_to_float(q[j]) * scale[j * scale_stride]). `stream`: write y
// with non-temporal stores (cpu/streaming.h); the result is the same either way.
template <typename T>
void dequantize_fp8_span(const uint8_t* q, T* y, int64_t n, const float* scale, int64_t scale_stride,
                         Fp8Format fmt, bool stream);

// Decoding tables: every code of a format as float32 (256 entries each).
const float* fp8_decode_table(Fp8Format fmt);

namespace avx2 {
template <typename T>
void fp8_absmax_row(const T* x, int64_t n, float* mn, float* mx);
template <typename T>
void fp8_absmax_cols(const T* x, int64_t rows, int64_t cols, float* mn, float* mx);
template <typename T>
void quantize_fp8_span(const T* x, uint8_t* q, int64_t n, const float* scale, int64_t scale_stride,
                       Fp8Format fmt);
template <typename T>
void dequantize_fp8_span(const uint8_t* q, T* y, int64_t n, const float* scale, int64_t scale_stride,
                         Fp8Format fmt, bool stream);
}  // namespace avx2

}  // namespace lowbit::cpu
