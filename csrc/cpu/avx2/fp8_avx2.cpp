// AVX2/FMA/F16C float8 kernels; same results as the portable ones in ../fp8.cpp,
// bit for bit. Tails shorter than a vector go through a small stack buffer so that
// every element takes the same vector code.
//
// No std:: algorithm templates here (std::max, std::fill): an instantiation compiled
// with -mavx2 is a weak symbol the linker may also hand to the portable code.
#include <immintrin.h>

#include <cstring>
#include <type_traits>

#include "cpu/avx2/vec_avx2.h"
#include "cpu/fp8.h"

namespace lowbit::cpu::avx2 {
namespace {

// ---- absmax ----
// (No namespace-scope vector constants: their initialisers would run AVX code at
// load time, on any CPU.)
inline __m256i abs_bits8(__m256 v) {
  return _mm256_and_si256(_mm256_castps_si256(v), _mm256_set1_epi32(0x7fffffff));
}

inline uint32_t hmax_epu32(__m256i v) {
  __m128i m = _mm_max_epu32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  m = _mm_max_epu32(m, _mm_shuffle_epi32(m, 0x4e));
  m = _mm_max_epu32(m, _mm_shuffle_epi32(m, 0xb1));
  return static_cast<uint32_t>(_mm_cvtsi128_si32(m));
}

inline uint16_t hmax_epu16(__m256i v) {
  __m128i m = _mm_max_epu16(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  m = _mm_max_epu16(m, _mm_shuffle_epi32(m, 0x4e));
  m = _mm_max_epu16(m, _mm_shuffle_epi32(m, 0xb1));
  m = _mm_max_epu16(m, _mm_srli_epi32(m, 16));
  return static_cast<uint16_t>(_mm_cvtsi128_si32(m));
}

// Integer max over absolute-value bits is a NaN-sticky absmax (see ../fp8.cpp).
float absmax_f32(const float* x, int64_t n) {
  __m256i m0 = _mm256_setzero_si256(), m1 = m0, m2 = m0, m3 = m0;
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    m0 = _mm256_max_epu32(m0, abs_bits8(_mm256_loadu_ps(x + i)));
    m1 = _mm256_max_epu32(m1, abs_bits8(_mm256_loadu_ps(x + i + 8)));
    m2 = _mm256_max_epu32(m2, abs_bits8(_mm256_loadu_ps(x + i + 16)));
    m3 = _mm256_max_epu32(m3, abs_bits8(_mm256_loadu_ps(x + i + 24)));
  }
  for (; i + 8 <= n; i += 8) m0 = _mm256_max_epu32(m0, abs_bits8(_mm256_loadu_ps(x + i)));
  uint32_t m = hmax_epu32(_mm256_max_epu32(_mm256_max_epu32(m0, m1), _mm256_max_epu32(m2, m3)));
  for (; i < n; ++i) {
    const uint32_t v = float_to_bits(x[i]) & 0x7fffffffu;
    m = v > m ? v : m;
  }
  return bits_to_float(m);
}

// 16-bit floats: the same order argument holds for their own bits.
template <typename T>
float absmax_16(const T* x, int64_t n) {
  const __m256i abs16 = _mm256_set1_epi16(0x7fff);
  __m256i m0 = _mm256_setzero_si256(), m1 = m0, m2 = m0, m3 = m0;
  auto ld = [&](int64_t k) {
    return _mm256_and_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + k)), abs16);
  };
  int64_t i = 0;
  for (; i + 64 <= n; i += 64) {
    m0 = _mm256_max_epu16(m0, ld(i));
    m1 = _mm256_max_epu16(m1, ld(i + 16));
    m2 = _mm256_max_epu16(m2, ld(i + 32));
    m3 = _mm256_max_epu16(m3, ld(i + 48));
  }
  for (; i + 16 <= n; i += 16) m0 = _mm256_max_epu16(m0, ld(i));
  uint16_t m = hmax_epu16(_mm256_max_epu16(_mm256_max_epu16(m0, m1), _mm256_max_epu16(m2, m3)));
  for (; i < n; ++i) {
    const uint16_t v = x[i].bits & 0x7fffu;
    m = v > m ? v : m;
  }
  return std::is_same_v<T, half_t> ? half_to_float(m) : bf16_to_float(m);
}

inline uint32_t abs_bits1(float v) { return float_to_bits(v) & 0x7fffffffu; }
inline uint32_t abs_bits1(half_t v) { return float_to_bits(half_to_float(v.bits)) & 0x7fffffffu; }
inline uint32_t abs_bits1(bf16_t v) { return (static_cast<uint32_t>(v.bits) << 16) & 0x7fffffffu; }

// ---- float32 -> float8, 8 lanes (constants of cpu::codec_of) ----
template <Fp8Format F>
struct Enc {
  static constexpr Fp8Codec C = codec_of(F);
  __m256i abs = _mm256_set1_epi32(0x7fffffff);
  __m256i sign = _mm256_set1_epi32(static_cast<int>(0x80000000u));
  __m256i rebias_round = _mm256_set1_epi32(static_cast<int>(C.rebias + ((1u << (C.shift - 1)) - 1u)));
  __m256i one = _mm256_set1_epi32(1);
  __m256i min_normal = _mm256_set1_epi32(static_cast<int>(C.min_normal_bits));
  __m256i max_bits = _mm256_set1_epi32(static_cast<int>(C.max_bits));
  __m256i max_code = _mm256_set1_epi32(C.max_code);
  __m256i inf_bits = _mm256_set1_epi32(0x7f800000);
  __m256i nan_code = _mm256_set1_epi32(kFp8NanCode);
  __m256i magic_bits = _mm256_set1_epi32(static_cast<int>(C.magic_bits));
  __m256 magic = _mm256_castsi256_ps(_mm256_set1_epi32(static_cast<int>(C.magic_bits)));

  // Codes in the low byte of each int32 lane; the same steps as encode() in ../fp8.cpp.
  inline __m256i operator()(__m256 v) const {
    const __m256i u = _mm256_castps_si256(v);
    const __m256i a = _mm256_and_si256(u, abs);
    const __m256i s = _mm256_srli_epi32(_mm256_and_si256(u, sign), 24);
    const __m256i odd = _mm256_and_si256(_mm256_srli_epi32(a, C.shift), one);
    const __m256i normal = _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(a, rebias_round), odd), C.shift);
    const __m256i sub =
        _mm256_sub_epi32(_mm256_castps_si256(_mm256_add_ps(_mm256_castsi256_ps(a), magic)), magic_bits);
    __m256i r = _mm256_blendv_epi8(normal, sub, _mm256_cmpgt_epi32(min_normal, a));
    r = _mm256_blendv_epi8(r, max_code, _mm256_cmpgt_epi32(a, max_bits));
    r = _mm256_blendv_epi8(r, nan_code, _mm256_cmpgt_epi32(a, inf_bits));
    return _mm256_or_si256(r, s);
  }
};

// 8 codes (low bytes of int32 lanes) -> 8 consecutive bytes.
inline __m128i pack8(__m256i r) {
  const __m256i w = _mm256_packus_epi16(_mm256_packs_epi32(r, r), _mm256_setzero_si256());
  return _mm_unpacklo_epi32(_mm256_castsi256_si128(w), _mm256_extracti128_si256(w, 1));
}


template <Fp8Format F, typename T, bool PerElementScale>
void quantize_impl(const T* x, uint8_t* q, int64_t n, const float* scale) {
  const Enc<F> enc;
  const __m256 s1 = _mm256_set1_ps(scale[0]);
  auto sc = [&](int64_t k) { return PerElementScale ? _mm256_loadu_ps(scale + k) : s1; };
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    const __m256i r0 = enc(_mm256_div_ps(load8(x + i), sc(i)));
    const __m256i r1 = enc(_mm256_div_ps(load8(x + i + 8), sc(i + 8)));
    const __m256i r2 = enc(_mm256_div_ps(load8(x + i + 16), sc(i + 16)));
    const __m256i r3 = enc(_mm256_div_ps(load8(x + i + 24), sc(i + 24)));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + i), pack32_epu8(r0, r1, r2, r3));
  }
  for (; i + 8 <= n; i += 8)
    _mm_storel_epi64(reinterpret_cast<__m128i*>(q + i), pack8(enc(_mm256_div_ps(load8(x + i), sc(i)))));
  if (i < n) {
    const int64_t rest = n - i;
    T xb[8];
    float sb[8];
    std::memset(static_cast<void*>(xb), 0, sizeof(xb));
    for (float& v : sb) v = 1.f;
    std::memcpy(static_cast<void*>(xb), x + i, rest * sizeof(T));
    if (PerElementScale) std::memcpy(sb, scale + i, rest * sizeof(float));
    const __m256 s = PerElementScale ? _mm256_loadu_ps(sb) : s1;
    alignas(16) uint8_t qb[16];
    _mm_storel_epi64(reinterpret_cast<__m128i*>(qb), pack8(enc(_mm256_div_ps(load8(xb), s))));
    std::memcpy(q + i, qb, rest);
  }
}

// ---- float8 -> float through binary16 and F16C ----
// e5m2 is the top byte of a binary16. An e4m3fn byte S.EEEE.MMM moved to bits
// S.0EEEE.MMM0000000 of a binary16 is the code's value times 2^-8 (normals and
// subnormals alike), so one F16C conversion and an exact *256 decode it. NaN codes
// are patched to the binary16 NaN S.11111.1000000000 first, which converts to the
// float32 sign | 0x7fc00000 of ../fp8.cpp's decoding table: the results agree bit
// for bit, NaN payloads included.
template <Fp8Format F>
inline void decode16(const uint8_t* p, __m256& lo, __m256& hi) {
  const __m256i b = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  __m256i h;
  if constexpr (F == Fp8Format::E5M2) {
    h = _mm256_slli_epi16(b, 8);
    const __m256i nan = _mm256_cmpgt_epi16(_mm256_and_si256(h, _mm256_set1_epi16(0x7fff)), _mm256_set1_epi16(0x7c00));
    const __m256i canonical = _mm256_or_si256(_mm256_and_si256(h, _mm256_set1_epi16(static_cast<short>(0x8000))),
                                              _mm256_set1_epi16(0x7e00));
    h = _mm256_blendv_epi8(h, canonical, nan);
  } else {
    h = _mm256_and_si256(_mm256_srai_epi16(_mm256_slli_epi16(b, 8), 1), _mm256_set1_epi16(static_cast<short>(0xbfff)));
    const __m256i body = _mm256_set1_epi16(0x3f80);
    const __m256i nan = _mm256_cmpeq_epi16(_mm256_and_si256(h, body), body);
    h = _mm256_xor_si256(h, _mm256_and_si256(nan, _mm256_set1_epi16(0x4180)));  // 0x3f80 -> 0x7e00
  }
  lo = _mm256_cvtph_ps(_mm256_castsi256_si128(h));
  hi = _mm256_cvtph_ps(_mm256_extracti128_si256(h, 1));
  if constexpr (F == Fp8Format::E4M3FN) {
    const __m256 k256 = _mm256_set1_ps(256.f);
    lo = _mm256_mul_ps(lo, k256);
    hi = _mm256_mul_ps(hi, k256);
  }
}

template <Fp8Format F, typename T, bool PerElementScale>
void dequantize_impl(const uint8_t* q, T* y, int64_t n, const float* scale, bool stream) {
  const __m256 s1 = _mm256_set1_ps(scale[0]);
  auto sc = [&](const float* p) { return PerElementScale ? _mm256_loadu_ps(p) : s1; };
  int64_t i = 0;
  with_stream16(y, stream, [&](auto nt) {
    for (; i + 32 <= n; i += 32) {
      __m256 v0, v1, v2, v3;
      decode16<F>(q + i, v0, v1);
      decode16<F>(q + i + 16, v2, v3);
      put16<decltype(nt)::value>(y + i, _mm256_mul_ps(v0, sc(scale + i)), _mm256_mul_ps(v1, sc(scale + i + 8)));
      put16<decltype(nt)::value>(y + i + 16, _mm256_mul_ps(v2, sc(scale + i + 16)),
                                 _mm256_mul_ps(v3, sc(scale + i + 24)));
    }
  });
  // Tail (< 32): through zero-padded buffers, same code.
  if (i < n) {
    const int64_t rest = n - i;
    alignas(32) uint8_t qb[32] = {};
    alignas(32) float sb[32];
    T yb[32];
    for (float& v : sb) v = 1.f;
    std::memcpy(qb, q + i, rest);
    if (PerElementScale) std::memcpy(sb, scale + i, rest * sizeof(float));
    for (int k = 0; k < 32; k += 16) {
      if (k >= rest) break;
      __m256 v0, v1;
      decode16<F>(qb + k, v0, v1);
      put16<false>(yb + k, _mm256_mul_ps(v0, sc(sb + k)), _mm256_mul_ps(v1, sc(sb + k + 8)));
    }
    std::memcpy(static_cast<void*>(y + i), yb, rest * sizeof(T));
  }
}

}  // namespace

template <typename T>
void fp8_absmax_row(const T* x, int64_t n, float* mn, float* mx) {
  float a;
  if constexpr (std::is_same_v<T, float>) a = absmax_f32(x, n);
  else a = absmax_16(x, n);
  *mn = -a;
  *mx = a;
}

template <typename T>
void fp8_absmax_cols(const T* x, int64_t rows, int64_t cols, float* mn, float* mx) {
  // Running results compared as signed int32 bits: the initial -inf is negative,
  // absmax values (NaN included) are non-negative and ordered.
  for (int64_t r = 0; r < rows; ++r) {
    const T* row = x + r * cols;
    int64_t c = 0;
    for (; c + 8 <= cols; c += 8) {
      __m256i* acc = reinterpret_cast<__m256i*>(mx + c);
      _mm256_storeu_si256(acc, _mm256_max_epi32(_mm256_loadu_si256(acc), abs_bits8(load8(row + c))));
    }
    for (; c < cols; ++c) {
      int32_t cur;
      std::memcpy(&cur, mx + c, 4);
      const int32_t v = static_cast<int32_t>(abs_bits1(row[c]));
      if (v > cur) std::memcpy(mx + c, &v, 4);
    }
  }
  for (int64_t c = 0; c < cols; ++c) mn[c] = -mx[c];
}

template <typename T>
void quantize_fp8_span(const T* x, uint8_t* q, int64_t n, const float* scale, int64_t scale_stride,
                       Fp8Format fmt) {
  if (fmt == Fp8Format::E4M3FN) {
    if (scale_stride) quantize_impl<Fp8Format::E4M3FN, T, true>(x, q, n, scale);
    else quantize_impl<Fp8Format::E4M3FN, T, false>(x, q, n, scale);
  } else {
    if (scale_stride) quantize_impl<Fp8Format::E5M2, T, true>(x, q, n, scale);
    else quantize_impl<Fp8Format::E5M2, T, false>(x, q, n, scale);
  }
}

template <typename T>
void dequantize_fp8_span(const uint8_t* q, T* y, int64_t n, const float* scale, int64_t scale_stride,
                         Fp8Format fmt, bool stream) {
  if (fmt == Fp8Format::E4M3FN) {
    if (scale_stride) dequantize_impl<Fp8Format::E4M3FN, T, true>(q, y, n, scale, stream);
    else dequantize_impl<Fp8Format::E4M3FN, T, false>(q, y, n, scale, stream);
  } else {
    if (scale_stride) dequantize_impl<Fp8Format::E5M2, T, true>(q, y, n, scale, stream);
    else dequantize_impl<Fp8Format::E5M2, T, false>(q, y, n, scale, stream);
  }
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

}  // namespace lowbit::cpu::avx2
