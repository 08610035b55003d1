// AVX2/FMA/F16C GGUF Q8_0 / Q4_0 kernels: one 32-element block is four 8-float
// registers. The arithmetic is the portable kernels' (csrc/cpu/gguf.cpp), lane by
// lane, so both paths write the same bytes.
#include <immintrin.h>

#include <cstring>

#include "cpu/avx2/vec_avx2.h"
#include "cpu/gguf.h"

namespace lowbit::cpu::avx2 {
namespace {

// Keeps a product in a register so that the compiler cannot fuse it with the
// following addition into an FMA (gguf-py rounds the product to float32 first).
inline __m256 pinned(__m256 v) {
  __asm__("" : "+x"(v));
  return v;
}

// A block as four registers plus its max |x| as the bit pattern of a non-negative
// float (integer order is float order there; NaN patterns sort above infinity).
struct Block {
  __m256 v[4];
  __m256i abs_bits[4];
  uint32_t amax_bits;
};

template <typename T>
inline Block load_block(const T* x) {
  Block b;
  const __m256i abs_mask = _mm256_set1_epi32(0x7fffffff);
  for (int k = 0; k < 4; ++k) {
    b.v[k] = load8(x + 8 * k);
    b.abs_bits[k] = _mm256_and_si256(_mm256_castps_si256(b.v[k]), abs_mask);
  }
  __m256i m = _mm256_max_epi32(_mm256_max_epi32(b.abs_bits[0], b.abs_bits[1]),
                               _mm256_max_epi32(b.abs_bits[2], b.abs_bits[3]));
  m = _mm256_max_epi32(m, _mm256_permute2x128_si256(m, m, 1));
  m = _mm256_max_epi32(m, _mm256_shuffle_epi32(m, 0x4E));
  m = _mm256_max_epi32(m, _mm256_shuffle_epi32(m, 0xB1));
  b.amax_bits = static_cast<uint32_t>(_mm256_cvtsi256_si32(m));
  return b;
}

inline float bits_to_f32(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }

inline void store_scale(uint8_t* out, float d) {
  const uint16_t h = _cvtss_sh(d, _MM_FROUND_TO_NEAREST_INT);
  std::memcpy(out, &h, 2);  // x86 is little-endian, as the format
}

inline float load_scale(const uint8_t* b) {
  uint16_t h;
  std::memcpy(&h, b, 2);
  return _cvtsh_ss(h);
}


}  // namespace

template <typename T>
int64_t quantize_q8_0(const T* x, uint8_t* blocks, int64_t nblocks) {
  int64_t bad = -1;
  const __m256 sign_mask = _mm256_set1_ps(-0.f);
  const __m256 almost_half = _mm256_set1_ps(0.49999997f);
  const __m256i low_byte = _mm256_set1_epi32(0xff);
  for (int64_t bi = 0; bi < nblocks; ++bi) {
    const Block b = load_block(x + bi * kGgufBlockElems);
    uint8_t* ob = blocks + bi * kQ8_0BlockBytes;
    if (b.amax_bits >= 0x7f800000u && bad < 0) bad = bi;
    const float d = bits_to_f32(b.amax_bits) / 127.f;
    const float id = d == 0.f ? 0.f : 1.f / d;
    store_scale(ob, d);
    const __m256 vid = _mm256_set1_ps(id);
    __m256i q[4];
    for (int k = 0; k < 4; ++k) {
      // Round half away from zero as in the portable kernel; the truncating
      // conversion turns NaN/inf/out-of-range into 0x80000000 like numpy on x86,
      // and the low byte is what numpy's cast to int8 keeps.
      const __m256 p = pinned(_mm256_mul_ps(b.v[k], vid));
      const __m256 r = _mm256_add_ps(p, _mm256_or_ps(_mm256_and_ps(p, sign_mask), almost_half));
      q[k] = _mm256_and_si256(_mm256_cvttps_epi32(r), low_byte);
    }
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(ob + 2), pack32_epu8(q[0], q[1], q[2], q[3]));
  }
  return bad;
}

template <typename T>
int64_t quantize_q4_0(const T* x, uint8_t* blocks, int64_t nblocks) {
  int64_t bad = -1;
  const __m256 eight_half = _mm256_set1_ps(8.5f);
  const __m256i low_byte = _mm256_set1_epi32(0xff);
  const __m256i fifteen = _mm256_set1_epi32(15);
  for (int64_t bi = 0; bi < nblocks; ++bi) {
    const Block b = load_block(x + bi * kGgufBlockElems);
    uint8_t* ob = blocks + bi * kQ4_0BlockBytes;
    if (b.amax_bits >= 0x7f800000u && bad < 0) bad = bi;
    // The first element of largest magnitude (numpy argmax order) and its sign.
    const __m256i vmax = _mm256_set1_epi32(static_cast<int32_t>(b.amax_bits));
    uint32_t hit = 0, neg = 0;
    for (int k = 0; k < 4; ++k) {
      hit |= static_cast<uint32_t>(_mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(b.abs_bits[k], vmax)))) << (8 * k);
      neg |= static_cast<uint32_t>(_mm256_movemask_ps(b.v[k])) << (8 * k);
    }
    const int imax = __builtin_ctz(hit);  // hit != 0: amax_bits is one of the lanes
    const float amax = bits_to_f32(b.amax_bits);
    const float d = ((neg >> imax) & 1u ? -amax : amax) / -8.f;
    const float id = d == 0.f ? 0.f : 1.f / d;
    store_scale(ob, d);
    const __m256 vid = _mm256_set1_ps(id);
    __m256i q[4];
    for (int k = 0; k < 4; ++k) {
      const __m256 t = _mm256_add_ps(pinned(_mm256_mul_ps(b.v[k], vid)), eight_half);
      q[k] = _mm256_min_epi32(_mm256_and_si256(_mm256_cvttps_epi32(t), low_byte), fifteen);
    }
    // Byte j = q[j] | q[j + 16] << 4: registers 0/2 and 1/3 pair up.
    const __m256i lo = _mm256_or_si256(q[0], _mm256_slli_epi32(q[2], 4));
    const __m256i hi = _mm256_or_si256(q[1], _mm256_slli_epi32(q[3], 4));
    const __m256i t = _mm256_packus_epi32(lo, hi);  // lanes: lo0-3 hi0-3 | lo4-7 hi4-7
    const __m256i bytes = _mm256_packus_epi16(t, t);
    const __m256i ordered = _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 0, 4, 1, 5));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(ob + 2), _mm256_castsi256_si128(ordered));
  }
  return bad;
}

template <typename T>
void dequantize_q8_0(const uint8_t* blocks, T* y, int64_t nblocks, bool stream) {
  with_stream16(y, stream, [&](auto nt) {
    for (int64_t bi = 0; bi < nblocks; ++bi) {
      const uint8_t* ib = blocks + bi * kQ8_0BlockBytes;
      T* yb = y + bi * kGgufBlockElems;
      const __m256 d = _mm256_set1_ps(load_scale(ib));
      const __m128i lo = _mm_loadu_si128(reinterpret_cast<const __m128i*>(ib + 2));
      const __m128i hi = _mm_loadu_si128(reinterpret_cast<const __m128i*>(ib + 18));
      const __m128i parts[4] = {lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8)};
      auto at = [&](int k) { return _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(parts[k]))); };
      put16<decltype(nt)::value>(yb, at(0), at(1));
      put16<decltype(nt)::value>(yb + 16, at(2), at(3));
    }
  });
}

template <typename T>
void dequantize_q4_0(const uint8_t* blocks, T* y, int64_t nblocks, bool stream) {
  const __m128i nibble = _mm_set1_epi8(0x0f);
  const __m256i eight = _mm256_set1_epi32(8);
  with_stream16(y, stream, [&](auto nt) {
    for (int64_t bi = 0; bi < nblocks; ++bi) {
      const uint8_t* ib = blocks + bi * kQ4_0BlockBytes;
      T* yb = y + bi * kGgufBlockElems;
      const __m256 d = _mm256_set1_ps(load_scale(ib));
      const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(ib + 2));
      const __m128i lo = _mm_and_si128(raw, nibble);                      // elements 0..15
      const __m128i hi = _mm_and_si128(_mm_srli_epi16(raw, 4), nibble);   // elements 16..31
      const __m128i parts[4] = {lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8)};
      auto at = [&](int k) { return _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_cvtepu8_epi32(parts[k]), eight))); };
      put16<decltype(nt)::value>(yb, at(0), at(1));
      put16<decltype(nt)::value>(yb + 16, at(2), at(3));
    }
  });
}

#define LOWBIT_GGUF_INSTANTIATE(T)                                          \
  template int64_t quantize_q8_0<T>(const T*, uint8_t*, int64_t);           \
  template int64_t quantize_q4_0<T>(const T*, uint8_t*, int64_t);           \
  template void dequantize_q8_0<T>(const uint8_t*, T*, int64_t, bool);            \
  template void dequantize_q4_0<T>(const uint8_t*, T*, int64_t, bool);
LOWBIT_GGUF_INSTANTIATE(float)
LOWBIT_GGUF_INSTANTIATE(half_t)
LOWBIT_GGUF_INSTANTIATE(bf16_t)
#undef LOWBIT_GGUF_INSTANTIATE

}  // namespace lowbit::cpu::avx2
