// Affine integer quantization kernels (2, 4 and 8 bits, codes stored as int8).
// Raw pointers only; the glue in csrc/ops/cpu_affine.cpp splits tensors into
// contiguous spans (csrc/ops/cpu_driver.h) and runs these in parallel.
//
// Scales: `scale_stride` 0 means scale[0] / zero_point[0] apply to the whole
// span, 1 means element j uses scale[j] / zero_point[j]. zero_point may be null
// (symmetric quantization).
#pragma once
#include <cstdint>

#include "lowbit/float_types.h"

namespace lowbit::cpu {

// min and max of n contiguous values; both are NaN if any value is NaN.
template <class T> void minmax(const T* x, int64_t n, float* mn, float* mx);

// Folds a row-major [rows, cols] block into running per-column min / max
// (mn / mx hold cols values each, already initialised). NaN is sticky.
template <class T> void minmax_columns(const T* x, int64_t rows, int64_t cols, float* mn, float* mx);

// codes[j] = clamp(round_half_even(x[j] / scale + zero_point), qmin, qmax);
// a NaN input maps to the code of 0.0 and +-inf to qmax / qmin.
// `stream`: write the output with non-temporal stores (cpu/streaming.h says when);
// the result is the same either way.
template <class T>
void quantize_affine(const T* x, int8_t* codes, int64_t n, const float* scale, const float* zero_point,
                     int64_t scale_stride, int qmin, int qmax, bool stream);

// y[j] = (codes[j] - zero_point) * scale, computed in float32 and rounded to T;
// `stream` as for quantize_affine.
template <class T>
void dequantize_affine(const int8_t* codes, T* y, int64_t n, const float* scale, const float* zero_point,
                       int64_t scale_stride, bool stream);

namespace avx2 {
template <class T> void minmax(const T* x, int64_t n, float* mn, float* mx);
template <class T> void minmax_columns(const T* x, int64_t rows, int64_t cols, float* mn, float* mx);
template <class T>
void quantize_affine(const T* x, int8_t* codes, int64_t n, const float* scale, const float* zero_point,
                     int64_t scale_stride, int qmin, int qmax, bool stream);
template <class T>
void dequantize_affine(const int8_t* codes, T* y, int64_t n, const float* scale, const float* zero_point,
                       int64_t scale_stride, bool stream);
}  // namespace avx2

}  // namespace lowbit::cpu
