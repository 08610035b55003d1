// Portable affine kernels and the run-time switch to the AVX2 ones.
#include "cpu/affine.h"

#include <algorithm>
#include <cmath>

#include "cpu/isa.h"

namespace lowbit::cpu {
namespace portable {

template <class T> void minmax(const T* x, int64_t n, float* mn, float* mx) {
  float lo = INFINITY, hi = -INFINITY;
  bool nan = false;
  for (int64_t j = 0; j < n; ++j) {
    const float v = to_float(x[j]);
    nan |= v != v;
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  }
  *mn = nan ? NAN : lo;
  *mx = nan ? NAN : hi;
}

template <class T> void minmax_columns(const T* x, int64_t rows, int64_t cols, float* mn, float* mx) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      const float v = to_float(x[r * cols + c]);
      if (v != v || mn[c] != mn[c]) { mn[c] = mx[c] = NAN; continue; }
      mn[c] = std::min(mn[c], v);
      mx[c] = std::max(mx[c], v);
    }
}

template <class T>
void quantize_affine(const T* x, int8_t* codes, int64_t n, const float* scale, const float* zero_point,
                     int64_t stride, int qmin, int qmax, bool /*stream*/) {
  const float lo = static_cast<float>(qmin), hi = static_cast<float>(qmax);
  for (int64_t j = 0; j < n; ++j) {
    const int64_t k = j * stride;
    float v = to_float(x[j]) / scale[k];
    if (v != v) v = 0.f;
    if (zero_point) v += zero_point[k];
    v = std::nearbyint(v);  // default rounding mode: half to even
    codes[j] = static_cast<int8_t>(std::min(std::max(v, lo), hi));
  }
}

template <class T>
void dequantize_affine(const int8_t* codes, T* y, int64_t n, const float* scale, const float* zero_point,
                       int64_t stride, bool /*stream*/) {
  for (int64_t j = 0; j < n; ++j) {
    const int64_t k = j * stride;
    const float zp = zero_point ? zero_point[k] : 0.f;
    y[j] = from_float<T>((static_cast<float>(codes[j]) - zp) * scale[k]);
  }
}

}  // namespace portable


template <class T> void minmax(const T* x, int64_t n, float* mn, float* mx) {
  LOWBIT_CPU_DISPATCH(minmax, x, n, mn, mx);
}
template <class T> void minmax_columns(const T* x, int64_t rows, int64_t cols, float* mn, float* mx) {
  LOWBIT_CPU_DISPATCH(minmax_columns, x, rows, cols, mn, mx);
}
template <class T>
void quantize_affine(const T* x, int8_t* codes, int64_t n, const float* scale, const float* zero_point,
                     int64_t stride, int qmin, int qmax, bool stream) {
  LOWBIT_CPU_DISPATCH(quantize_affine, x, codes, n, scale, zero_point, stride, qmin, qmax, stream);
}
template <class T>
void dequantize_affine(const int8_t* codes, T* y, int64_t n, const float* scale, const float* zero_point,
                       int64_t stride, bool stream) {
  LOWBIT_CPU_DISPATCH(dequantize_affine, codes, y, n, scale, zero_point, stride, stream);
}

#define LOWBIT_INSTANTIATE(T)                                                                    \
  template void minmax<T>(const T*, int64_t, float*, float*);                                    \
  template void minmax_columns<T>(const T*, int64_t, int64_t, float*, float*);                   \
  template void quantize_affine<T>(const T*, int8_t*, int64_t, const float*, const float*, int64_t, int, int, bool); \
  template void dequantize_affine<T>(const int8_t*, T*, int64_t, const float*, const float*, int64_t, bool);
LOWBIT_INSTANTIATE(float)
LOWBIT_INSTANTIATE(half_t)
LOWBIT_INSTANTIATE(bf16_t)

}  // namespace lowbit::cpu
