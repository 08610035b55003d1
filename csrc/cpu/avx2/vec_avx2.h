// Load / store helpers between 8-element float vectors and float, fp16, bf16
// memory. Only for files compiled with -mavx2 -mfma -mf16c (csrc/cpu/avx2/);
// every function is `static inline` so no copy with AVX2 code can be picked
// by the linker for a portable caller.
#pragma once
#include <immintrin.h>

#include <cstdint>
#include <type_traits>

#include "lowbit/float_types.h"

namespace lowbit::cpu::avx2 {

static inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
static inline __m256 load8(const half_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
static inline __m256 load8(const bf16_t* p) {
  const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
}

static inline void store8(float* p, __m256 v) { _mm256_storeu_ps(p, v); }
// 8 floats -> 8 fp16 values (round half to even).
static inline __m128i half8_bits(__m256 v) { return _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
static inline void store8(half_t* p, __m256 v) { _mm_storeu_si128(reinterpret_cast<__m128i*>(p), half8_bits(v)); }
// float32 -> bfloat16 bits in the low half of each int32 lane, round half to even,
// for lanes that are not NaN (a NaN's payload can carry into its sign).
static inline __m256i bf16_round_bits(__m256 v) {
  const __m256i u = _mm256_castps_si256(v);
  const __m256i odd = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
  return _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7fff)), odd), 16);
}
// The same for any lane: NaN keeps its top bits and becomes quiet (as lowbit::float_to_bf16).
static inline __m256i bf16_bits(__m256 v) {
  const __m256i top = _mm256_srli_epi32(_mm256_castps_si256(v), 16);
  const __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q));
  return _mm256_blendv_epi8(bf16_round_bits(v), _mm256_or_si256(top, _mm256_set1_epi32(0x40)), nan);
}
// 8 floats -> 8 bfloat16 values: pack 8 x u32 (values < 65536) into 8 x u16, keeping
// order across lanes.
static inline __m128i bf16x8_bits(__m256 v) {
  const __m256i r = bf16_bits(v);
  return _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
}
static inline void store8(bf16_t* p, __m256 v) { _mm_storeu_si128(reinterpret_cast<__m128i*>(p), bf16x8_bits(v)); }

// Non-temporal versions of store8, for outputs larger than the last-level cache
// (csrc/cpu/streaming.h). p must be aligned to the store: 32 bytes for float, 16 for
// fp16 / bf16 (see elems_before_aligned). The op glue fences after its parallel
// task (cpu::streaming_fence), not the kernel.
static inline void stream8(float* p, __m256 v) { _mm256_stream_ps(p, v); }
static inline void stream8(half_t* p, __m256 v) { _mm_stream_si128(reinterpret_cast<__m128i*>(p), half8_bits(v)); }
static inline void stream8(bf16_t* p, __m256 v) { _mm_stream_si128(reinterpret_cast<__m128i*>(p), bf16x8_bits(v)); }
template <bool Stream, class T> static inline void put8(T* p, __m256 v) {
  if constexpr (Stream) stream8(p, v); else store8(p, v);
}
// The alignment put16 needs to stream: a 32-byte store for bfloat16, two for float.
constexpr uintptr_t kPut16Align = 32;
// How many of the n elements at p come before the first address aligned to
// `bytes` (n when none is).
template <class T> static inline int64_t elems_before_aligned(const T* p, int64_t n, uintptr_t bytes) {
  const uintptr_t mis = reinterpret_cast<uintptr_t>(p) & (bytes - 1);
  if (mis == 0) return 0;
  if (mis % sizeof(T)) return n;
  const int64_t k = static_cast<int64_t>((bytes - mis) / sizeof(T));
  return k < n ? k : n;
}

// Runs body(std::true_type{}) (streaming stores) when asked to and p is aligned for
// put16, else body(std::false_type{}); for kernels whose every 16-element store is at a
// multiple of 16 elements from p.
template <class T, class Body> static inline void with_stream16(const T* p, bool stream, Body body) {
  if (stream && elems_before_aligned(p, 1, kPut16Align) == 0) body(std::true_type{});
  else body(std::false_type{});
}

// Four vectors of 8 int32 -> 32 bytes in element order. The packs work per 128-bit lane
// (4-byte chunks come out as a0 b0 c0 d0 | a1 b1 c1 d1); the permute restores the order.
// pack32_epi8: signed saturation to int8; pack32_epu8: values already in 0..255.
static inline __m256i pack32_epi8(__m256i a, __m256i b, __m256i c, __m256i d) {
  const __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(a, b), _mm256_packs_epi32(c, d));
  return _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}
static inline __m256i pack32_epu8(__m256i a, __m256i b, __m256i c, __m256i d) {
  const __m256i p = _mm256_packus_epi16(_mm256_packus_epi32(a, b), _mm256_packus_epi32(c, d));
  return _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

// 16 floats -> 16 bfloat16 values in element order, bit for bit as bf16_bits. The NaN
// fix-up is a third of bf16_bits' instructions and bfloat16 outputs of the dequantizers
// are compute-bound on it, so one compare per pair decides whether it is needed.
static inline __m256i bf16x16_bits(__m256 a, __m256 b) {
  __m256i ra, rb;
  if (_mm256_movemask_ps(_mm256_cmp_ps(a, b, _CMP_UNORD_Q)) == 0) {
    ra = bf16_round_bits(a);
    rb = bf16_round_bits(b);
  } else {
    ra = bf16_bits(a);
    rb = bf16_bits(b);
  }
  return _mm256_permute4x64_epi64(_mm256_packus_epi32(ra, rb), 0xd8);
}

// 16 consecutive outputs from two vectors (bfloat16: one pack and one 32-byte store for
// both). Streaming needs p aligned to kPut16Align bytes.
template <bool Stream, class T> static inline void put16(T* p, __m256 a, __m256 b) {
  put8<Stream>(p, a);
  put8<Stream>(p + 8, b);
}
template <bool Stream> static inline void put16(bf16_t* p, __m256 a, __m256 b) {
  const __m256i v = bf16x16_bits(a, b);
  if constexpr (Stream) _mm256_stream_si256(reinterpret_cast<__m256i*>(p), v);
  else _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), v);
}

static inline float hmin8(__m256 v) {
  __m128 m = _mm_min_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_min_ps(m, _mm_movehl_ps(m, m));
  m = _mm_min_ss(m, _mm_shuffle_ps(m, m, 1));
  return _mm_cvtss_f32(m);
}
// Horizontal sums of 8 lanes.
static inline float hsum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
static inline int32_t hsum8_epi32(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 1));
  return _mm_cvtsi128_si32(s);
}

static inline float hmax8(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
  return _mm_cvtss_f32(m);
}

}  // namespace lowbit::cpu::avx2
