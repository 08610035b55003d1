// AVX2/FMA/F16C affine kernels; same contracts as csrc/cpu/affine.h.
#include <cmath>

#include "cpu/affine.h"
#include "cpu/avx2/vec_avx2.h"

namespace lowbit::cpu::avx2 {
namespace {

// Scalar helpers for tails, instead of std::min / std::max: a template instantiated
// in this -mavx2 file is a weak symbol the linker could hand to portable code.
inline float fmin_(float a, float b) { return b < a ? b : a; }
inline float fmax_(float a, float b) { return a < b ? b : a; }

// 8 rounded, clamped floats (integral values in [-128, 127]) -> 8 int8 in memory.
inline void store_codes8(int8_t* q, __m256 v) {
  const __m256i i32 = _mm256_cvtps_epi32(v);  // exact: v is already integral
  const __m128i i16 = _mm_packs_epi32(_mm256_castsi256_si128(i32), _mm256_extracti128_si256(i32, 1));
  _mm_storel_epi64(reinterpret_cast<__m128i*>(q), _mm_packs_epi16(i16, i16));
}

inline __m256 codes8_to_float(const int8_t* q) {
  const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(q));
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b));
}

}  // namespace

template <class T> void minmax(const T* x, int64_t n, float* mn, float* mx) {
  __m256 lo0 = _mm256_set1_ps(INFINITY), hi0 = _mm256_set1_ps(-INFINITY), lo1 = lo0, hi1 = hi0;
  __m256 nan = _mm256_setzero_ps();
  int64_t j = 0;
  for (; j + 16 <= n; j += 16) {
    const __m256 a = load8(x + j), b = load8(x + j + 8);
    nan = _mm256_or_ps(nan, _mm256_cmp_ps(a, b, _CMP_UNORD_Q));
    lo0 = _mm256_min_ps(lo0, a); hi0 = _mm256_max_ps(hi0, a);
    lo1 = _mm256_min_ps(lo1, b); hi1 = _mm256_max_ps(hi1, b);
  }
  float lo = hmin8(_mm256_min_ps(lo0, lo1)), hi = hmax8(_mm256_max_ps(hi0, hi1));
  bool has_nan = _mm256_movemask_ps(nan) != 0;
  for (; j < n; ++j) {
    const float v = to_float(x[j]);
    has_nan |= v != v;
    lo = fmin_(lo, v);
    hi = fmax_(hi, v);
  }
  *mn = has_nan ? NAN : lo;
  *mx = has_nan ? NAN : hi;
}

template <class T> void minmax_columns(const T* x, int64_t rows, int64_t cols, float* mn, float* mx) {
  int64_t c = 0;
  for (; c + 8 <= cols; c += 8) {
    __m256 lo = _mm256_loadu_ps(mn + c), hi = _mm256_loadu_ps(mx + c);
    __m256 nan = _mm256_or_ps(_mm256_cmp_ps(lo, lo, _CMP_UNORD_Q), _mm256_cmp_ps(hi, hi, _CMP_UNORD_Q));
    for (int64_t r = 0; r < rows; ++r) {
      const __m256 v = load8(x + r * cols + c);
      nan = _mm256_or_ps(nan, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
      lo = _mm256_min_ps(lo, v);
      hi = _mm256_max_ps(hi, v);
    }
    _mm256_storeu_ps(mn + c, _mm256_blendv_ps(lo, _mm256_set1_ps(NAN), nan));
    _mm256_storeu_ps(mx + c, _mm256_blendv_ps(hi, _mm256_set1_ps(NAN), nan));
  }
  for (; c < cols; ++c)
    for (int64_t r = 0; r < rows; ++r) {
      const float v = to_float(x[r * cols + c]);
      if (v != v || mn[c] != mn[c]) { mn[c] = mx[c] = NAN; continue; }
      mn[c] = fmin_(mn[c], v);
      mx[c] = fmax_(mx[c], v);
    }
}

namespace {

// Rounded, clamped x[j..j+8) / scale (+ zero_point) as 8 floats holding integers.
template <class T>
inline __m256 quantize8(const T* x, int64_t j, const float* scale, const float* zero_point, int64_t stride,
                        __m256 lo, __m256 hi) {
  const __m256 s = stride ? _mm256_loadu_ps(scale + j) : _mm256_set1_ps(scale[0]);
  __m256 v = _mm256_div_ps(load8(x + j), s);  // true division: bit-exact with x / scale
  v = _mm256_blendv_ps(v, _mm256_setzero_ps(), _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
  if (zero_point) v = _mm256_add_ps(v, stride ? _mm256_loadu_ps(zero_point + j) : _mm256_set1_ps(zero_point[0]));
  v = _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  return _mm256_min_ps(_mm256_max_ps(v, lo), hi);
}

template <class T>
void quantize_scalar(const T* x, int8_t* codes, int64_t from, int64_t to, const float* scale,
                     const float* zero_point, int64_t stride, int qmin, int qmax) {
  for (int64_t j = from; j < to; ++j) {
    const int64_t k = j * stride;
    float v = to_float(x[j]) / scale[k];
    if (v != v) v = 0.f;
    if (zero_point) v += zero_point[k];
    v = std::nearbyint(v);
    codes[j] = static_cast<int8_t>(fmin_(fmax_(v, static_cast<float>(qmin)), static_cast<float>(qmax)));
  }
}

template <class T>
void dequantize_scalar(const int8_t* codes, T* y, int64_t from, int64_t to, const float* scale,
                       const float* zero_point, int64_t stride) {
  for (int64_t j = from; j < to; ++j) {
    const int64_t k = j * stride;
    const float zp = zero_point ? zero_point[k] : 0.f;
    y[j] = from_float<T>((static_cast<float>(codes[j]) - zp) * scale[k]);
  }
}

// The vector part of dequantize_affine from element j on; returns where it stopped.
// With Stream, y + j must be aligned to kPut16Align.
template <bool Stream, class T>
int64_t dequantize_vectors(const int8_t* codes, T* y, int64_t j, int64_t n, const float* scale,
                           const float* zero_point, int64_t stride) {
  // (q - zp) * s == q * s - zp * s only up to rounding; keep the stated order.
  if (stride == 0) {
    const __m256 s = _mm256_set1_ps(scale[0]);
    const __m256 zp = _mm256_set1_ps(zero_point ? zero_point[0] : 0.f);
    for (; j + 16 <= n; j += 16)
      put16<Stream>(y + j, _mm256_mul_ps(_mm256_sub_ps(codes8_to_float(codes + j), zp), s),
                    _mm256_mul_ps(_mm256_sub_ps(codes8_to_float(codes + j + 8), zp), s));
    for (; j + 8 <= n; j += 8) store8(y + j, _mm256_mul_ps(_mm256_sub_ps(codes8_to_float(codes + j), zp), s));
  } else {
    auto at = [&](int64_t i) {
      const __m256 zp = zero_point ? _mm256_loadu_ps(zero_point + i) : _mm256_setzero_ps();
      return _mm256_mul_ps(_mm256_sub_ps(codes8_to_float(codes + i), zp), _mm256_loadu_ps(scale + i));
    };
    for (; j + 16 <= n; j += 16) put16<Stream>(y + j, at(j), at(j + 8));
    for (; j + 8 <= n; j += 8) store8(y + j, at(j));
  }
  return j;
}

}  // namespace

template <class T>
void quantize_affine(const T* x, int8_t* codes, int64_t n, const float* scale, const float* zero_point,
                     int64_t stride, int qmin, int qmax, bool stream) {
  const __m256 lo = _mm256_set1_ps(static_cast<float>(qmin)), hi = _mm256_set1_ps(static_cast<float>(qmax));
  int64_t j = 0;
  if (stream) {
    // 32 codes per non-temporal 32-byte store, from the first aligned one on.
    j = elems_before_aligned(codes, n, 32);
    quantize_scalar(x, codes, 0, j, scale, zero_point, stride, qmin, qmax);
    for (; j + 32 <= n; j += 32) {
      __m256i q[4];
      for (int k = 0; k < 4; ++k)
        q[k] = _mm256_cvtps_epi32(quantize8(x, j + 8 * k, scale, zero_point, stride, lo, hi));
      _mm256_stream_si256(reinterpret_cast<__m256i*>(codes + j), pack32_epi8(q[0], q[1], q[2], q[3]));
    }
  }
  for (; j + 8 <= n; j += 8) store_codes8(codes + j, quantize8(x, j, scale, zero_point, stride, lo, hi));
  quantize_scalar(x, codes, j, n, scale, zero_point, stride, qmin, qmax);
}

template <class T>
void dequantize_affine(const int8_t* codes, T* y, int64_t n, const float* scale, const float* zero_point,
                       int64_t stride, bool stream) {
  int64_t j = 0;
  if (stream) {
    j = elems_before_aligned(y, n, kPut16Align);
    dequantize_scalar(codes, y, 0, j, scale, zero_point, stride);
    j = dequantize_vectors<true>(codes, y, j, n, scale, zero_point, stride);
  } else {
    j = dequantize_vectors<false>(codes, y, j, n, scale, zero_point, stride);
  }
  dequantize_scalar(codes, y, j, n, scale, zero_point, stride);
}

#define LOWBIT_INSTANTIATE(T)                                                                    \
  template void minmax<T>(const T*, int64_t, float*, float*);                                    \
  template void minmax_columns<T>(const T*, int64_t, int64_t, float*, float*);                   \
  template void quantize_affine<T>(const T*, int8_t*, int64_t, const float*, const float*, int64_t, int, int, bool); \
  template void dequantize_affine<T>(const int8_t*, T*, int64_t, const float*, const float*, int64_t, bool);
LOWBIT_INSTANTIATE(float)
LOWBIT_INSTANTIATE(half_t)
LOWBIT_INSTANTIATE(bf16_t)

}  // namespace lowbit::cpu::avx2
