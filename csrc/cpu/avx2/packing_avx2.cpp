// AVX2 bit packing: one 32-byte packed vector per step.
#include <immintrin.h>

#include <cstring>

#include "cpu/avx2/vec_avx2.h"
#include "cpu/packing.h"

namespace lowbit::cpu::avx2 {
namespace {

// One vector step of each kernel.

// 64 codes -> 32 bytes. maddubs(u, [1, 16]) forms lo + 16 * hi in each 16-bit lane
// (<= 255 for valid codes), packus narrows to bytes within 128-bit lanes and the
// 64-bit permute puts the two halves back in order.
void pack4_step(const int8_t* c, uint8_t* out, __m256i& seen) {
  const __m256i off = _mm256_set1_epi8(8);
  const __m256i w = _mm256_set1_epi16(0x1001);
  const __m256i u0 = _mm256_add_epi8(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(c)), off);
  const __m256i u1 = _mm256_add_epi8(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(c + 32)), off);
  seen = _mm256_or_si256(seen, _mm256_or_si256(u0, u1));
  const __m256i p = _mm256_packus_epi16(_mm256_maddubs_epi16(u0, w), _mm256_maddubs_epi16(u1, w));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), _mm256_permute4x64_epi64(p, 0xD8));
}

// 128 codes -> 32 bytes. maddubs(u, [1, 4]) then madd(., [1, 16]) gives
// u0 + 4 u1 + 16 u2 + 64 u3 in each 32-bit lane; two packus steps narrow to bytes
// (in 128-bit lane order), and a dword permute restores element order.
void pack2_step(const int8_t* c, uint8_t* out, __m256i& seen) {
  const __m256i off = _mm256_set1_epi8(2);
  const __m256i w8 = _mm256_set1_epi16(0x0401);
  const __m256i w16 = _mm256_set1_epi32(0x00100001);
  __m256i t[4];
  for (int k = 0; k < 4; ++k) {
    const __m256i u = _mm256_add_epi8(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(c + 32 * k)), off);
    seen = _mm256_or_si256(seen, u);
    t[k] = _mm256_madd_epi16(_mm256_maddubs_epi16(u, w8), w16);
  }
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), pack32_epu8(t[0], t[1], t[2], t[3]));
}

// 32 bytes -> 64 codes: split nibbles, interleave low/high within 128-bit lanes,
// then recombine the lanes in element order.
void unpack4_step(const uint8_t* p, int8_t* c) {
  const __m256i m = _mm256_set1_epi8(0x0F), off = _mm256_set1_epi8(8);
  const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  const __m256i lo = _mm256_sub_epi8(_mm256_and_si256(b, m), off);
  const __m256i hi = _mm256_sub_epi8(_mm256_and_si256(_mm256_srli_epi16(b, 4), m), off);
  const __m256i a = _mm256_unpacklo_epi8(lo, hi);  // codes 0..15 | 32..47
  const __m256i d = _mm256_unpackhi_epi8(lo, hi);  // codes 16..31 | 48..63
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(c), _mm256_permute2x128_si256(a, d, 0x20));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(c + 32), _mm256_permute2x128_si256(a, d, 0x31));
}

// 32 bytes -> 128 codes: four 2-bit fields, interleaved by bytes then by 16-bit
// pairs (each 128-bit lane then holds the codes of 4 consecutive bytes), then the
// lanes are recombined in element order.
void unpack2_step(const uint8_t* p, int8_t* c) {
  const __m256i m = _mm256_set1_epi8(0x03), off = _mm256_set1_epi8(2);
  const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  const __m256i v0 = _mm256_sub_epi8(_mm256_and_si256(b, m), off);
  const __m256i v1 = _mm256_sub_epi8(_mm256_and_si256(_mm256_srli_epi16(b, 2), m), off);
  const __m256i v2 = _mm256_sub_epi8(_mm256_and_si256(_mm256_srli_epi16(b, 4), m), off);
  const __m256i v3 = _mm256_sub_epi8(_mm256_and_si256(_mm256_srli_epi16(b, 6), m), off);
  const __m256i l01 = _mm256_unpacklo_epi8(v0, v1), l23 = _mm256_unpacklo_epi8(v2, v3);
  const __m256i h01 = _mm256_unpackhi_epi8(v0, v1), h23 = _mm256_unpackhi_epi8(v2, v3);
  const __m256i q0 = _mm256_unpacklo_epi16(l01, l23);  // bytes 0..3   | 16..19
  const __m256i q1 = _mm256_unpackhi_epi16(l01, l23);  // bytes 4..7   | 20..23
  const __m256i q2 = _mm256_unpacklo_epi16(h01, h23);  // bytes 8..11  | 24..27
  const __m256i q3 = _mm256_unpackhi_epi16(h01, h23);  // bytes 12..15 | 28..31
  __m256i* o = reinterpret_cast<__m256i*>(c);
  _mm256_storeu_si256(o + 0, _mm256_permute2x128_si256(q0, q1, 0x20));
  _mm256_storeu_si256(o + 1, _mm256_permute2x128_si256(q2, q3, 0x20));
  _mm256_storeu_si256(o + 2, _mm256_permute2x128_si256(q0, q1, 0x31));
  _mm256_storeu_si256(o + 3, _mm256_permute2x128_si256(q2, q3, 0x31));
}

// A step packs kStep codes into 32 bytes (64 codes for 4 bits, 128 for 2 bits).
// The tail of a row (fewer codes than one step) runs one more full step when the
// memory it touches lies inside this call's rows: it then reads the next row's
// first codes or bytes and writes over the start of the next row's output, which
// that row rewrites afterwards (rows are processed in order). Pack also ORs those
// foreign codes into `seen`, which is harmless: they are checked with their own row
// anyway. The last row of a call has no such room: its tail goes through stack
// buffers (pack) or the scalar kernel of packing.cpp (unpack), which is safe to call
// from here because it is compiled without -mavx2.
template <int Bits>
bool pack_row(const int8_t* c, int64_t n, uint8_t* out, bool room, __m256i& seen) {
  constexpr int64_t kStep = 256 / Bits;
  int64_t i = 0;
  for (; i + kStep <= n; i += kStep) Bits == 4 ? pack4_step(c + i, out + i * Bits / 8, seen)
                                               : pack2_step(c + i, out + i * Bits / 8, seen);
  if (i == n) return true;
  const int64_t rest = n - i;
  uint8_t* o = out + i * Bits / 8;
  const int64_t rest_bytes = (rest * Bits + 7) / 8;
  if (room) {
    Bits == 4 ? pack4_step(c + i, o, seen) : pack2_step(c + i, o, seen);
  } else if (rest <= 16) {
    return portable::pack_bits(c + i, 1, rest, Bits, o);
  } else {
    int8_t cb[kStep];
    uint8_t pb[32];
    std::memset(cb, -(1 << (Bits - 1)), sizeof cb);  // stored as 0
    std::memcpy(cb, c + i, static_cast<size_t>(rest));
    Bits == 4 ? pack4_step(cb, pb, seen) : pack2_step(cb, pb, seen);
    std::memcpy(o, pb, static_cast<size_t>(rest_bytes));
  }
  // Padding bits of the row's last byte are 0.
  const int used = static_cast<int>((rest * Bits) % 8);
  if (used) o[rest_bytes - 1] = static_cast<uint8_t>(o[rest_bytes - 1] & ((1u << used) - 1));
  return true;
}

template <int Bits>
void unpack_row(const uint8_t* p, int64_t n, int8_t* c, bool room) {
  constexpr int64_t kStep = 256 / Bits;
  int64_t i = 0;
  for (; i + kStep <= n; i += kStep) Bits == 4 ? unpack4_step(p + i * Bits / 8, c + i)
                                               : unpack2_step(p + i * Bits / 8, c + i);
  if (i == n) return;
  if (room) Bits == 4 ? unpack4_step(p + i * Bits / 8, c + i) : unpack2_step(p + i * Bits / 8, c + i);
  else portable::unpack_bits(p + i * Bits / 8, 1, n - i, Bits, c + i);
}

// Whether the full step at the tail of row r stays inside the call's rows: the
// tail starts at code n - n % kStep of the row, byte (that) * bits / 8.
bool tail_has_room(int64_t rows, int64_t r, int64_t n, int64_t nb, int bits) {
  const int64_t step = 256 / bits, tail = n - n % step;
  return tail + step <= (rows - r) * n && tail * bits / 8 + 32 <= (rows - r) * nb;
}

}  // namespace

bool pack_bits(const int8_t* codes, int64_t rows, int64_t n, int bits, uint8_t* packed) {
  const int64_t nb = (n * bits + 7) / 8;
  __m256i seen = _mm256_setzero_si256();
  bool ok = true;
  for (int64_t r = 0; r < rows; ++r) {
    const bool room = tail_has_room(rows, r, n, nb, bits);
    ok &= bits == 4 ? pack_row<4>(codes + r * n, n, packed + r * nb, room, seen)
                    : pack_row<2>(codes + r * n, n, packed + r * nb, room, seen);
  }
  // Any stored value with a bit above `bits` came from an out-of-range code.
  const __m256i high = _mm256_set1_epi8(static_cast<char>(bits == 4 ? 0xF0 : 0xFC));
  return ok && _mm256_testz_si256(seen, high);
}

void unpack_bits(const uint8_t* packed, int64_t rows, int64_t n, int bits, int8_t* codes) {
  const int64_t nb = (n * bits + 7) / 8;
  for (int64_t r = 0; r < rows; ++r) {
    const bool room = tail_has_room(rows, r, n, nb, bits);
    if (bits == 4) unpack_row<4>(packed + r * nb, n, codes + r * n, room);
    else unpack_row<2>(packed + r * nb, n, codes + r * n, room);
  }
}

}  // namespace lowbit::cpu::avx2
