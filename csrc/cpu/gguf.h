// GGUF Q8_0 / Q4_0 block kernels on raw pointers; no torch header.
//
// Byte layouts (docs/formats.md, GGUF section; llama.cpp's block_q8_0 / block_q4_0):
//   Q8_0, 34 bytes per 32 elements: fp16 scale d (little-endian), then 32 int8 codes.
//   Q4_0, 18 bytes per 32 elements: fp16 scale d, then 16 bytes; byte j holds
//         element j in its low nibble and element j + 16 in its high nibble, each
//         stored as code + 8 (codes -8 .. 7).
//
// Quantization reproduces gguf-py (gguf/quants.py) bit for bit, in float32:
//   Q8_0: amax = max |x|, d = amax / 127, id = d == 0 ? 0 : 1 / d,
//         code = round_half_away_from_zero(x * id).
//   Q4_0: m = the x of largest |x| (first one on ties), d = m / -8,
//         id = d == 0 ? 0 : 1 / d, code = min(trunc(x * id + 8.5), 15), the
//         product rounded to float32 before the addition (no fused multiply-add).
//   The stored scale is d rounded to fp16 (half to even; too large -> inf), while
//   the codes use the float32 d. A code that is not a finite value in int32 range
//   (only possible when 1 / d overflows, i.e. |x| < ~4e-37 for the whole block) is
//   stored as the low byte of x86's "integer indefinite" 0x80000000, i.e. 0; finite
//   out-of-range values keep their low byte. That is what numpy does on x86-64.
// Dequantization: float32(d) * float32(code), then rounded to the output type.
#pragma once
#include <cstdint>

#include "lowbit/float_types.h"

namespace lowbit::cpu {

constexpr int64_t kGgufBlockElems = 32;
constexpr int64_t kQ8_0BlockBytes = 34;
constexpr int64_t kQ4_0BlockBytes = 18;

// Quantize nblocks consecutive blocks of 32 elements. Returns the index of the
// first block that holds a NaN or an infinity (its output bytes are then
// unspecified and the caller must raise), or -1 when every value is finite.
template <typename T>
int64_t quantize_q8_0(const T* x, uint8_t* blocks, int64_t nblocks);
template <typename T>
int64_t quantize_q4_0(const T* x, uint8_t* blocks, int64_t nblocks);

// Every byte pattern is valid input: non-finite fp16 scales propagate per IEEE.
// `stream`: write y with non-temporal stores (cpu/streaming.h says when); the
// values are the same either way.
template <typename T>
void dequantize_q8_0(const uint8_t* blocks, T* y, int64_t nblocks, bool stream);
template <typename T>
void dequantize_q4_0(const uint8_t* blocks, T* y, int64_t nblocks, bool stream);

// The two implementations behind the run-time dispatch above.
namespace portable {
template <typename T>
int64_t quantize_q8_0(const T* x, uint8_t* blocks, int64_t nblocks);
template <typename T>
int64_t quantize_q4_0(const T* x, uint8_t* blocks, int64_t nblocks);
template <typename T>
void dequantize_q8_0(const uint8_t* blocks, T* y, int64_t nblocks, bool stream);
template <typename T>
void dequantize_q4_0(const uint8_t* blocks, T* y, int64_t nblocks, bool stream);
}  // namespace portable

namespace avx2 {
template <typename T>
int64_t quantize_q8_0(const T* x, uint8_t* blocks, int64_t nblocks);
template <typename T>
int64_t quantize_q4_0(const T* x, uint8_t* blocks, int64_t nblocks);
template <typename T>
void dequantize_q8_0(const uint8_t* blocks, T* y, int64_t nblocks, bool stream);
template <typename T>
void dequantize_q4_0(const uint8_t* blocks, T* y, int64_t nblocks, bool stream);
}  // namespace avx2

}  // namespace lowbit::cpu
