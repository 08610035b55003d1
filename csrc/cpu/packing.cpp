#include "cpu/packing.h"

#include "cpu/isa.h"

#include <cstring>

namespace lowbit::cpu {

namespace portable {
namespace {

// Offset binary turns the valid codes into exactly the bytes 0 .. 2^bits - 1 (mod 256
// arithmetic), so one OR over every stored value tells whether any code was out of
// range: its bits above `bits` are then set.
bool pack_row4(const int8_t* c, int64_t n, uint8_t* out) {
  uint8_t seen = 0;
  const int64_t pairs = n / 2;
  for (int64_t j = 0; j < pairs; ++j) {
    const uint8_t a = static_cast<uint8_t>(c[2 * j] + 8), b = static_cast<uint8_t>(c[2 * j + 1] + 8);
    seen |= a | b;
    out[j] = static_cast<uint8_t>(a | (b << 4));
  }
  if (n & 1) {
    const uint8_t a = static_cast<uint8_t>(c[n - 1] + 8);
    seen |= a;
    out[pairs] = static_cast<uint8_t>(a & 0x0F);
  }
  return (seen & 0xF0) == 0;
}

bool pack_row2(const int8_t* c, int64_t n, uint8_t* out) {
  uint8_t seen = 0;
  const int64_t quads = n / 4;
  for (int64_t j = 0; j < quads; ++j) {
    const uint8_t a = static_cast<uint8_t>(c[4 * j] + 2), b = static_cast<uint8_t>(c[4 * j + 1] + 2);
    const uint8_t d = static_cast<uint8_t>(c[4 * j + 2] + 2), e = static_cast<uint8_t>(c[4 * j + 3] + 2);
    seen |= a | b | d | e;
    out[j] = static_cast<uint8_t>(a | (b << 2) | (d << 4) | (e << 6));
  }
  const int64_t rest = n - 4 * quads;
  if (rest) {
    uint8_t byte = 0;
    for (int64_t i = 0; i < rest; ++i) {
      const uint8_t a = static_cast<uint8_t>(c[4 * quads + i] + 2);
      seen |= a;
      byte = static_cast<uint8_t>(byte | ((a & 3) << (2 * i)));
    }
    out[quads] = byte;
  }
  return (seen & 0xFC) == 0;
}

void unpack_row4(const uint8_t* p, int64_t n, int8_t* c) {
  const int64_t pairs = n / 2;
  for (int64_t j = 0; j < pairs; ++j) {
    c[2 * j] = static_cast<int8_t>((p[j] & 0x0F) - 8);
    c[2 * j + 1] = static_cast<int8_t>((p[j] >> 4) - 8);
  }
  if (n & 1) c[n - 1] = static_cast<int8_t>((p[pairs] & 0x0F) - 8);
}

// Four codes per byte: a 256-entry table of the four code bytes keeps this loop at
// one load and one 4-byte copy per packed byte.
struct Unpack2Table {
  int8_t v[256][4];
  constexpr Unpack2Table() : v() {
    for (int b = 0; b < 256; ++b)
      for (int i = 0; i < 4; ++i) v[b][i] = static_cast<int8_t>(((b >> (2 * i)) & 3) - 2);
  }
};
constexpr Unpack2Table kUnpack2{};

void unpack_row2(const uint8_t* p, int64_t n, int8_t* c) {
  const int64_t quads = n / 4;
  for (int64_t j = 0; j < quads; ++j) std::memcpy(c + 4 * j, kUnpack2.v[p[j]], 4);
  if (n > 4 * quads) std::memcpy(c + 4 * quads, kUnpack2.v[p[quads]], static_cast<size_t>(n - 4 * quads));
}

}  // namespace

bool pack_bits(const int8_t* codes, int64_t rows, int64_t n, int bits, uint8_t* packed) {
  const int64_t nb = (n * bits + 7) / 8;
  bool ok = true;
  for (int64_t r = 0; r < rows; ++r)
    ok &= bits == 4 ? pack_row4(codes + r * n, n, packed + r * nb) : pack_row2(codes + r * n, n, packed + r * nb);
  return ok;
}

void unpack_bits(const uint8_t* packed, int64_t rows, int64_t n, int bits, int8_t* codes) {
  const int64_t nb = (n * bits + 7) / 8;
  for (int64_t r = 0; r < rows; ++r) {
    if (bits == 4) unpack_row4(packed + r * nb, n, codes + r * n);
    else unpack_row2(packed + r * nb, n, codes + r * n);
  }
}

}  // namespace portable

bool pack_bits(const int8_t* codes, int64_t rows, int64_t n, int bits, uint8_t* packed) {
  LOWBIT_CPU_DISPATCH(pack_bits, codes, rows, n, bits, packed);
}

void unpack_bits(const uint8_t* packed, int64_t rows, int64_t n, int bits, int8_t* codes) {
  LOWBIT_CPU_DISPATCH(unpack_bits, packed, rows, n, bits, codes);
}

}  // namespace lowbit::cpu
