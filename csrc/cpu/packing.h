// Bit packing of 2- and 4-bit integer codes (layout: docs/formats.md, "Packed 2- and
// 4-bit codes"). Kernels see `rows` rows of `n` codes each, stored back to back
// (row stride n codes in, ceil(n * bits / 8) bytes out); every row starts on a byte
// boundary. Only bits 2 and 4 are valid here; the torch glue checks everything else.
#pragma once
#include <cstdint>

namespace lowbit::cpu {

// Packs int8 codes in [-2^(bits-1), 2^(bits-1) - 1] as offset binary
// (code + 2^(bits-1)), element i of a row at bit position (i * bits) % 8 of byte
// (i * bits) / 8; padding bits of a row's last byte are 0. Returns false when some
// code is out of range: the output is then unspecified and the caller must raise.
bool pack_bits(const int8_t* codes, int64_t rows, int64_t n, int bits, uint8_t* packed);

// The inverse: every byte value is valid; padding bits are ignored.
void unpack_bits(const uint8_t* packed, int64_t rows, int64_t n, int bits, int8_t* codes);

// The two implementations behind the run-time dispatch above.
namespace portable {
bool pack_bits(const int8_t* codes, int64_t rows, int64_t n, int bits, uint8_t* packed);
void unpack_bits(const uint8_t* packed, int64_t rows, int64_t n, int bits, int8_t* codes);
}  // namespace portable

namespace avx2 {
bool pack_bits(const int8_t* codes, int64_t rows, int64_t n, int bits, uint8_t* packed);
void unpack_bits(const uint8_t* packed, int64_t rows, int64_t n, int bits, int8_t* codes);
}  // namespace avx2

}  // namespace lowbit::cpu
