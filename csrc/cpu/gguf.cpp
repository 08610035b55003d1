#include "cpu/gguf.h"

#include <cmath>
#include <cstring>

#include "cpu/isa.h"
#include "cpu/no_contract.h"

namespace lowbit::cpu {

namespace portable {
namespace {

// gguf-py rounds x * id to float32 and only then adds (Q4_0) or rounds; a compiler
// allowed to contract a*b+c into a fused multiply-add would skip that rounding and
// change codes: the products go through no_contract (cpu/no_contract.h).

// float -> int32 by truncation as x86's cvttss2si does it: NaN, infinities and
// values outside the int32 range give INT32_MIN (numpy's float -> int8/uint8 casts
// keep the low byte of that, which the callers reproduce).
inline int32_t trunc_i32(float v) {
  return (v >= -2147483648.f && v < 2147483648.f) ? static_cast<int32_t>(v) : INT32_MIN;
}

// max |x| of a block as the bit pattern of a non-negative float: integer order
// equals float order there, and NaN patterns sort above infinity.
template <typename T>
inline uint32_t block_amax_bits(const T* x) {
  uint32_t m = 0;
  for (int i = 0; i < kGgufBlockElems; ++i) {
    const uint32_t a = float_to_bits(to_float(x[i])) & 0x7fffffffu;
    m = a > m ? a : m;
  }
  return m;
}

inline void store_scale(uint8_t* out, float d) {
  const uint16_t h = float_to_half(d);
  out[0] = static_cast<uint8_t>(h & 0xff);
  out[1] = static_cast<uint8_t>(h >> 8);
}

inline float load_scale(const uint8_t* b) {
  return half_to_float(static_cast<uint16_t>(b[0] | (b[1] << 8)));
}

}  // namespace

template <typename T>
int64_t quantize_q8_0(const T* x, uint8_t* blocks, int64_t nblocks) {
  int64_t bad = -1;
  for (int64_t b = 0; b < nblocks; ++b) {
    const T* xb = x + b * kGgufBlockElems;
    uint8_t* ob = blocks + b * kQ8_0BlockBytes;
    const uint32_t amax_bits = block_amax_bits(xb);
    if (amax_bits >= 0x7f800000u && bad < 0) bad = b;
    const float d = bits_to_float(amax_bits) / 127.f;
    const float id = d == 0.f ? 0.f : 1.f / d;
    store_scale(ob, d);
    for (int i = 0; i < kGgufBlockElems; ++i) {
      const float p = no_contract(to_float(xb[i]) * id);
      // Half away from zero: adding 0.5 - 2^-25 (the float just below 0.5) reaches the
      // next integer magnitude exactly when the fraction of |p| is >= 0.5, so the
      // truncation below gives gguf-py's np_roundf for every finite p.
      const float r = p + std::copysign(0.49999997f, p);
      ob[2 + i] = static_cast<uint8_t>(trunc_i32(r) & 0xff);
    }
  }
  return bad;
}

template <typename T>
int64_t quantize_q4_0(const T* x, uint8_t* blocks, int64_t nblocks) {
  int64_t bad = -1;
  for (int64_t b = 0; b < nblocks; ++b) {
    const T* xb = x + b * kGgufBlockElems;
    uint8_t* ob = blocks + b * kQ4_0BlockBytes;
    // The first element of largest magnitude, with its sign (numpy argmax order).
    uint32_t amax_bits = float_to_bits(to_float(xb[0])) & 0x7fffffffu;
    int imax = 0;
    for (int i = 1; i < kGgufBlockElems; ++i) {
      const uint32_t a = float_to_bits(to_float(xb[i])) & 0x7fffffffu;
      if (a > amax_bits) { amax_bits = a; imax = i; }
    }
    if (amax_bits >= 0x7f800000u && bad < 0) bad = b;
    const float d = to_float(xb[imax]) / -8.f;
    const float id = d == 0.f ? 0.f : 1.f / d;
    store_scale(ob, d);
    uint8_t q[kGgufBlockElems];
    for (int i = 0; i < kGgufBlockElems; ++i) {
      const float t = no_contract(to_float(xb[i]) * id) + 8.5f;
      const uint32_t u = static_cast<uint32_t>(trunc_i32(t)) & 0xffu;
      q[i] = static_cast<uint8_t>(u < 15u ? u : 15u);
    }
    for (int j = 0; j < kGgufBlockElems / 2; ++j)
      ob[2 + j] = static_cast<uint8_t>(q[j] | (q[j + kGgufBlockElems / 2] << 4));
  }
  return bad;
}

template <typename T>
void dequantize_q8_0(const uint8_t* blocks, T* y, int64_t nblocks, bool /*stream*/) {
  for (int64_t b = 0; b < nblocks; ++b) {
    const uint8_t* ib = blocks + b * kQ8_0BlockBytes;
    T* yb = y + b * kGgufBlockElems;
    const float d = load_scale(ib);
    for (int i = 0; i < kGgufBlockElems; ++i)
      yb[i] = from_float<T>(d * static_cast<float>(static_cast<int8_t>(ib[2 + i])));
  }
}

template <typename T>
void dequantize_q4_0(const uint8_t* blocks, T* y, int64_t nblocks, bool /*stream*/) {
  for (int64_t b = 0; b < nblocks; ++b) {
    const uint8_t* ib = blocks + b * kQ4_0BlockBytes;
    T* yb = y + b * kGgufBlockElems;
    const float d = load_scale(ib);
    for (int j = 0; j < kGgufBlockElems / 2; ++j) {
      const int lo = (ib[2 + j] & 0x0f) - 8, hi = (ib[2 + j] >> 4) - 8;
      yb[j] = from_float<T>(d * static_cast<float>(lo));
      yb[j + kGgufBlockElems / 2] = from_float<T>(d * static_cast<float>(hi));
    }
  }
}

}  // namespace portable

template <typename T>
int64_t quantize_q8_0(const T* x, uint8_t* blocks, int64_t nblocks) {
  LOWBIT_CPU_DISPATCH(quantize_q8_0, x, blocks, nblocks);
}

template <typename T>
int64_t quantize_q4_0(const T* x, uint8_t* blocks, int64_t nblocks) {
  LOWBIT_CPU_DISPATCH(quantize_q4_0, x, blocks, nblocks);
}

template <typename T>
void dequantize_q8_0(const uint8_t* blocks, T* y, int64_t nblocks, bool stream) {
  LOWBIT_CPU_DISPATCH(dequantize_q8_0, blocks, y, nblocks, stream);
}

template <typename T>
void dequantize_q4_0(const uint8_t* blocks, T* y, int64_t nblocks, bool stream) {
  LOWBIT_CPU_DISPATCH(dequantize_q4_0, blocks, y, nblocks, stream);
}

#define LOWBIT_GGUF_INSTANTIATE(T)                                                      \
  template int64_t quantize_q8_0<T>(const T*, uint8_t*, int64_t);                       \
  template int64_t quantize_q4_0<T>(const T*, uint8_t*, int64_t);                       \
  template void dequantize_q8_0<T>(const uint8_t*, T*, int64_t, bool);                        \
  template void dequantize_q4_0<T>(const uint8_t*, T*, int64_t, bool);                        \
  template int64_t portable::quantize_q8_0<T>(const T*, uint8_t*, int64_t);             \
  template int64_t portable::quantize_q4_0<T>(const T*, uint8_t*, int64_t);             \
  template void portable::dequantize_q8_0<T>(const uint8_t*, T*, int64_t, bool);              \
  template void portable::dequantize_q4_0<T>(const uint8_t*, T*, int64_t, bool);
LOWBIT_GGUF_INSTANTIATE(float)
LOWBIT_GGUF_INSTANTIATE(half_t)
LOWBIT_GGUF_INSTANTIATE(bf16_t)
#undef LOWBIT_GGUF_INSTANTIATE

}  // namespace lowbit::cpu
