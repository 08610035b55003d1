// The small-M mixed-precision GEMM kernel: y = x @ W^T with W dequantized in registers from
// its canonical layout, on tensor cores (mma.sync.m16n8k16, f16 or bf16 inputs, float32
// accumulation). Included only by gemm_wx_<kind>.cu, which instantiate it.
//
// ---- Work decomposition --------------------------------------------------------------
// Block: 4 warps (128 threads). Warp w owns 32 output channels (4 "n-tiles" of 8, one
// mma.m16n8k16 each) and runs over a range of K in "k-steps". kw warps of a block split
// K (warp_k = w % kw) and 4 / kw groups of warps split N (warp_n = w / kw), so a block owns
// 32 * 4 / kw channels; kw > 1 warps are summed through shared memory at the end, in a
// fixed order. blockIdx.x: block of channels, blockIdx.y: split of K ("split-K": float32
// partial sums to a workspace, finished by launch_finish_f32acc), blockIdx.z: chunk of
// 16 * MT rows of x (MT mma row tiles per block).
//
// ---- One k-step of one warp --------------------------------------------------------------
// Lane l: g = l / 4 (0..7), c = l % 4 (0..3). For every n-tile t the lane loads the 16 bytes
// of weight row n = n0 + 8 t + g that start at element k0 = kbase + c * S (S = elements per
// 16 bytes: 32 for int4, 64 for int2, 16 for int8 / float8): the four lanes of a row read 64
// consecutive bytes, so a warp reads 8 rows x 64 bytes. A k-step covers 4 S elements of K.
//
// ---- The mma fragments and why the canonical layout needs no repacking -------------------
// PTX ISA, mma.m16n8k16 with .f16 / .bf16 inputs (groupID = lane >> 2, tig = lane % 4):
//   A (16 x 16, row-major), four .b32 registers {a0,a1} {a2,a3} {a4,a5} {a6,a7}:
//     a0,a1: row groupID,     cols 2 tig, 2 tig + 1
//     a2,a3: row groupID + 8, cols 2 tig, 2 tig + 1
//     a4,a5: row groupID,     cols 2 tig + 8, 2 tig + 9
//     a6,a7: row groupID + 8, cols 2 tig + 8, 2 tig + 9
//   B (16 x 8, "col"), two .b32 registers {b0,b1} {b2,b3}: col groupID,
//     b0,b1: rows 2 tig, 2 tig + 1;   b2,b3: rows 2 tig + 8, 2 tig + 9
//   C/D (16 x 8, float32): c0,c1: row groupID, cols 2 tig, 2 tig + 1; c2,c3: row groupID + 8.
//   The lower-numbered element of a pair sits in the low 16 bits of its register.
// So the lane with tig = c holds, in A and in B alike, the logical k slots {2c, 2c+1} ("lo
// pair") and {2c+8, 2c+9} ("hi pair"). D = sum over the 16 logical k of A * B, and a sum does
// not care which physical k each logical slot stands for, as long as A and B use the same
// bijection. We let the lane with tig = c stand for 4 physical k of ITS OWN weight chunk:
// mma j of the k-step reads physical k = k0 + (4 elements of unit j/2, see below), so every
// lane's B fragment comes from the 16 bytes it loaded itself (no shuffles), and the A
// fragment must hold x at those same physical k. Because groupID is also the weight row
// (B's column) and A's row, the lane's A row is x row groupID (+8), at ITS k (same c).
//
// Which 4 physical k a lane's pairs hold depends on how the weight bytes decode fastest:
//   int4, one 32-bit word = elements e0..e7 (element 2i in the low nibble of byte i):
//     masks on the word and on word >> 8 give the pairs (e0,e4) (e1,e5) (e2,e6) (e3,e7);
//     mma 2i (word i): lo = (e0,e4), hi = (e1,e5); mma 2i+1: lo = (e2,e6), hi = (e3,e7).
//   int2, one word = e0..e15 (element 4i + f at bits 2f of byte i): the pairs are
//     (e_f, e_f+8) for f = 0..3 from the word and (e_f+4, e_f+12) from word >> 8;
//     mma: lo = (e0,e8), hi = (e1,e9); next: lo = (e2,e10), hi = (e3,e11); then the >> 8 half.
//   int8 / float8: byte order, pairs (e0,e1) (e2,e3) of each word; lo = (e0,e1), hi = (e2,e3).
// We call 8 elements of a chunk that feed two consecutive mmas a "unit"; a unit gives the
// four B registers {mma0 lo, mma0 hi, mma1 lo, mma1 hi}. The activations are staged in
// shared memory once per block and k-tile, permuted the same way, so that ONE 16-byte load
// per row gives the four A registers of the unit for that row:
//   int4: out[2p + q] = in[p + 4 q] within 8 elements  ([x0 x4 x1 x5 x2 x6 x3 x7])
//   int2: out[2p + q] = in[p + 8 q] within 16 elements ([x0 x8 x1 x9 ... x7 x15])
//   8-bit: identity.
// With row words ar (row g) and br (row g + 8) of a unit: mma h (0, 1) takes
//   A = {ar[2h], br[2h], ar[2h+1], br[2h+1]}, B = {b[2h], b[2h+1]}.
// Shared-memory layout of a k-tile: 16-byte entries indexed (((ksl * U + u) * R + m) * 4 + c)
// (ksl: k-step in the tile, u: unit in the chunk, U = S / 8 units, m: row of the block's
// row chunk, R = the rows of x that exist in this chunk, <= 16 MT, c: lane chunk). Only
// those R rows are staged; lanes whose row is >= R use zeros instead of reading. Lane (g, c)
// reads entry base + 64 mt + l and, for row g + 8, base + 64 mt + 32 + l: 32 consecutive
// 16-byte entries, conflict-free. With few rows the same 48 KB hold a longer k-tile
// (M = 1: 24576 elements), so small M stages x once or a few times per block.
//
// ---- Dequantization in registers -------------------------------------------------------
// 4/2-bit fields are turned into 16-bit floats with the "magic number" trick: OR-ing a field
// into the mantissa of 1024.0 (fp16 0x6400) or 128.0 (bf16 0x4300) gives 1024 + u (or
// 1024 + 16u etc. for a field not at bit 0, scaled back with an exact fma), and subtracting
// 1024 + 2^(bits-1) gives the signed code exactly. Then w = fma(code, scale, -zero_point *
// scale) in the 16-bit type with scale and -zp*scale rounded from float32 once per chunk
// (groups are multiples of 32 elements, so a chunk's 32-element halves each lie in one group).
// int8 and float8 codes are converted exactly (every value fits f16 and bf16) and the per-
// channel / per-tensor scale is applied to the float32 result instead, so those paths only
// round x, the products being exact.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "cuda/gemm.cuh"
#include "cuda/gemm_wx.cuh"

namespace lowbit::cuda::gemm::wx {

constexpr int kSmemBytes = 48 * 1024;  // static shared memory per block (no opt-in needed)

template <WeightKind KIND>
struct Kind {
  static constexpr int kBits = KIND == WeightKind::Int4 ? 4 : (KIND == WeightKind::Int2 ? 2 : 8);
  static constexpr int kS = 128 / kBits;      // elements per 16-byte chunk
  static constexpr int kUnits = kS / 8;       // units (8 elements, 2 mmas) per chunk
  static constexpr int kStep = 4 * kS;        // elements of K per warp k-step
  static constexpr bool kGrouped = kBits < 8; // scale / zero-point applied while dequantizing
  static constexpr int kSets = KIND == WeightKind::Int2 ? 2 : 1;  // 32-element halves of a chunk
};

template <WeightKind KIND, int MT>
struct Tile {
  static constexpr int kMR = 16 * MT;              // rows of x per block (at most)
  static constexpr int kSmemU4 = kSmemBytes / 16;  // 16-byte entries of the k-tile buffer
  // k-steps per staged k-tile when `rows` rows of x exist (>= 1: one k-step of 64 rows of
  // int2 is 64 * 256 * 2 bytes = 32 KB).
  static __device__ __forceinline__ int ksteps_for(int rows) {
    const int k = kSmemU4 / (Kind<KIND>::kUnits * rows * 4);
    return k > 0 ? k : 1;
  }
  static_assert(Kind<KIND>::kUnits * kMR * 4 <= kSmemU4, "one k-step of x does not fit the shared memory");
};

// ---- small device helpers ----------------------------------------------------------------
template <typename T>
constexpr bool kIsHalf = std::is_same<T, __half>::value;

__device__ __forceinline__ uint32_t prmt(uint32_t a, uint32_t b, uint32_t sel) {
  uint32_t d;
  asm("prmt.b32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(sel));
  return d;
}

// 16-byte streaming load of weights: read once, do not keep in L1.
__device__ __forceinline__ uint4 ld_stream(const void* p) {
  uint4 r;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
               : "l"(p));
  return r;
}

template <typename T>
__device__ __forceinline__ uint32_t h2_sub(uint32_t a, uint32_t b) {
  if constexpr (kIsHalf<T>) {
    const __half2 r = __hsub2(*reinterpret_cast<const __half2*>(&a), *reinterpret_cast<const __half2*>(&b));
    return *reinterpret_cast<const uint32_t*>(&r);
  } else {
    const __nv_bfloat162 r =
        __hsub2(*reinterpret_cast<const __nv_bfloat162*>(&a), *reinterpret_cast<const __nv_bfloat162*>(&b));
    return *reinterpret_cast<const uint32_t*>(&r);
  }
}

template <typename T>
__device__ __forceinline__ uint32_t h2_fma(uint32_t a, uint32_t b, uint32_t c) {
  if constexpr (kIsHalf<T>) {
    const __half2 r = __hfma2(*reinterpret_cast<const __half2*>(&a), *reinterpret_cast<const __half2*>(&b),
                              *reinterpret_cast<const __half2*>(&c));
    return *reinterpret_cast<const uint32_t*>(&r);
  } else {
    const __nv_bfloat162 r =
        __hfma2(*reinterpret_cast<const __nv_bfloat162*>(&a), *reinterpret_cast<const __nv_bfloat162*>(&b),
                *reinterpret_cast<const __nv_bfloat162*>(&c));
    return *reinterpret_cast<const uint32_t*>(&r);
  }
}

// (v, v) in the 16-bit type, rounded to nearest even from float32.
template <typename T>
__device__ __forceinline__ uint32_t h2_splat(float v) {
  if constexpr (kIsHalf<T>) {
    const __half2 r = __float2half2_rn(v);
    return *reinterpret_cast<const uint32_t*>(&r);
  } else {
    const __nv_bfloat162 r = __float2bfloat162_rn(v);
    return *reinterpret_cast<const uint32_t*>(&r);
  }
}

// (lo, hi) floats -> bf16x2 bits, round to nearest even (exact for the codes we pass).
__device__ __forceinline__ uint32_t bf2_from_floats(float lo, float hi) {
  const __nv_bfloat162 r = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&r);
}

// f16x2 bits -> bf16x2 bits (exact for float8 values: both types hold them).
__device__ __forceinline__ uint32_t bf2_from_h2(uint32_t h) {
  const float2 f = __half22float2(*reinterpret_cast<const __half2*>(&h));
  return bf2_from_floats(f.x, f.y);
}

// D += A * B on tensor cores; d: c0..c3 of the C/D fragment.
template <typename T>
__device__ __forceinline__ void mma16816(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                         uint32_t b0, uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  if constexpr (kIsHalf<T>) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
  } else {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
  }
#else
  __trap();  // the glue refuses devices below sm_80 before launching
#endif
}

// ---- dequantization of one unit (8 elements of a lane's chunk) into 4 B registers -------
// b = {mma0 lo pair, mma0 hi pair, mma1 lo pair, mma1 hi pair} (pairing in the file comment).

// int4: unit u is word u of the chunk. s2 / z2: (scale, scale) and (-zp*scale, -zp*scale).
template <typename T>
__device__ __forceinline__ void decode_int4(uint32_t q, uint32_t s2, uint32_t z2, uint32_t (&b)[4]) {
  uint32_t c0, c1, c2, c3;  // signed codes, exact
  if constexpr (kIsHalf<T>) {
    const uint32_t q8 = q >> 8;
    c0 = h2_sub<T>((q & 0x000f000fu) | 0x64006400u, 0x64086408u);                // (1024+u) - 1032
    c1 = h2_fma<T>((q & 0x00f000f0u) | 0x64006400u, 0x2c002c00u, 0xd480d480u);   // (1024+16u)/16 - 72
    c2 = h2_sub<T>((q8 & 0x000f000fu) | 0x64006400u, 0x64086408u);
    c3 = h2_fma<T>((q8 & 0x00f000f0u) | 0x64006400u, 0x2c002c00u, 0xd480d480u);
  } else {
    // bf16 has 7 mantissa bits: a nibble at bits 4..7 would reach the exponent, so shift first.
    c0 = h2_sub<T>((q & 0x000f000fu) | 0x43004300u, 0x43084308u);                // (128+u) - 136
    c1 = h2_sub<T>(((q >> 4) & 0x000f000fu) | 0x43004300u, 0x43084308u);
    c2 = h2_sub<T>(((q >> 8) & 0x000f000fu) | 0x43004300u, 0x43084308u);
    c3 = h2_sub<T>(((q >> 12) & 0x000f000fu) | 0x43004300u, 0x43084308u);
  }
  b[0] = h2_fma<T>(c0, s2, z2);  // (e0, e4)
  b[1] = h2_fma<T>(c1, s2, z2);  // (e1, e5)
  b[2] = h2_fma<T>(c2, s2, z2);  // (e2, e6)
  b[3] = h2_fma<T>(c3, s2, z2);  // (e3, e7)
}

// int2: q is the chunk word (unit even) or the word >> 8 (unit odd).
template <typename T>
__device__ __forceinline__ void decode_int2(uint32_t q, uint32_t s2, uint32_t z2, uint32_t (&b)[4]) {
  uint32_t c0, c1, c2, c3;
  if constexpr (kIsHalf<T>) {
    c0 = h2_sub<T>((q & 0x00030003u) | 0x64006400u, 0x64026402u);               // (1024+u) - 1026
    c1 = h2_fma<T>((q & 0x000c000cu) | 0x64006400u, 0x34003400u, 0xdc08dc08u);  // (1024+4u)/4 - 258
    c2 = h2_fma<T>((q & 0x00300030u) | 0x64006400u, 0x2c002c00u, 0xd420d420u);  // (1024+16u)/16 - 66
    c3 = h2_fma<T>((q & 0x00c000c0u) | 0x64006400u, 0x24002400u, 0xcc80cc80u);  // (1024+64u)/64 - 18
  } else {
    c0 = h2_sub<T>((q & 0x00030003u) | 0x43004300u, 0x43024302u);  // (128+u) - 130
    c1 = h2_sub<T>(((q >> 2) & 0x00030003u) | 0x43004300u, 0x43024302u);
    c2 = h2_sub<T>(((q >> 4) & 0x00030003u) | 0x43004300u, 0x43024302u);
    c3 = h2_sub<T>(((q >> 6) & 0x00030003u) | 0x43004300u, 0x43024302u);
  }
  b[0] = h2_fma<T>(c0, s2, z2);  // (e0, e8)  [or (e4, e12) for the >> 8 half]
  b[1] = h2_fma<T>(c1, s2, z2);  // (e1, e9)
  b[2] = h2_fma<T>(c2, s2, z2);  // (e2, e10)
  b[3] = h2_fma<T>(c3, s2, z2);  // (e3, e11)
}

// int8 codes of one word -> (e0,e1), (e2,e3), exact.
template <typename T>
__device__ __forceinline__ void decode_int8_word(uint32_t w, uint32_t& lo, uint32_t& hi) {
  const uint32_t v = w ^ 0x80808080u;  // offset binary: byte = code + 128
  if constexpr (kIsHalf<T>) {
    lo = h2_sub<T>(prmt(v, 0x64646464u, 0x5140u), 0x64806480u);  // (1024 + u) - 1152
    hi = h2_sub<T>(prmt(v, 0x64646464u, 0x7362u), 0x64806480u);
  } else {
    // float32 2^23 + u, minus 2^23 + 128: exact; then pairs to bf16 (exact, |code| <= 128).
    const float f0 = __int_as_float(prmt(v, 0x4b000000u, 0x7440u)) - 8388736.0f;
    const float f1 = __int_as_float(prmt(v, 0x4b000000u, 0x7441u)) - 8388736.0f;
    const float f2 = __int_as_float(prmt(v, 0x4b000000u, 0x7442u)) - 8388736.0f;
    const float f3 = __int_as_float(prmt(v, 0x4b000000u, 0x7443u)) - 8388736.0f;
    lo = bf2_from_floats(f0, f1);
    hi = bf2_from_floats(f2, f3);
  }
}

// float8 e5m2 of one word -> (e0,e1), (e2,e3), exact (an e5m2 byte is the high byte of a binary16).
template <typename T>
__device__ __forceinline__ void decode_e5m2_word(uint32_t w, uint32_t& lo, uint32_t& hi) {
  const uint32_t h01 = prmt(w, 0u, 0x1404u);  // bytes [0, b0, 0, b1]
  const uint32_t h23 = prmt(w, 0u, 0x3424u);  // bytes [0, b2, 0, b3]
  if constexpr (kIsHalf<T>) {
    lo = h01;
    hi = h23;
  } else {
    lo = bf2_from_h2(h01);
    hi = bf2_from_h2(h23);
  }
}

// float8 e4m3fn of one word -> (e0,e1), (e2,e3), exact, NaN codes (0x7f, 0xff) -> NaN.
// Byte s.eeee.mmm placed as binary16 s.0eeee.mmm0000000 is the value * 2^-8 (subnormals too:
// an e4m3 subnormal m * 2^-9 becomes the binary16 subnormal m * 2^-17); * 256 is exact.
template <typename T>
__device__ __forceinline__ void decode_e4m3_word(uint32_t w, uint32_t& lo, uint32_t& hi) {
  const uint32_t v01 = prmt(w, 0u, 0x1404u), v23 = prmt(w, 0u, 0x3424u);
  uint32_t h01 = (v01 & 0x80008000u) | ((v01 >> 1) & 0x3f803f80u);
  uint32_t h23 = (v23 & 0x80008000u) | ((v23 >> 1) & 0x3f803f80u);
  h01 = h2_fma<__half>(h01, 0x5c005c00u, 0x80008000u);  // * 256 (+ -0: keeps the sign of zeros)
  h23 = h2_fma<__half>(h23, 0x5c005c00u, 0x80008000u);
  // 0x80 in every byte whose low 7 bits are all ones (NaN); no carry crosses a byte.
  const uint32_t nan = ((w & 0x7f7f7f7fu) + 0x01010101u) & 0x80808080u;
  if (nan) {  // rare: make those halves NaN (480 * 2^... has a non-zero mantissa; force exponent 31)
    h01 |= prmt(nan, 0u, 0x9988u) & 0x7c007c00u;  // prmt selector 8 / 9: replicate the byte's sign bit
    h23 |= prmt(nan, 0u, 0xbbaau) & 0x7c007c00u;
  }
  if constexpr (kIsHalf<T>) {
    lo = h01;
    hi = h23;
  } else {
    lo = bf2_from_h2(h01);
    hi = bf2_from_h2(h23);
  }
}

// ---- the activation permutation of the staging step ------------------------------------
// v0, v1: 16 consecutive elements (words w0..w7, w_i = (x[2i], x[2i+1])). o0, o1: the two units.
template <WeightKind KIND>
__device__ __forceinline__ void permute_x(const uint4& v0, const uint4& v1, uint4& o0, uint4& o1) {
  if constexpr (KIND == WeightKind::Int4) {
    // within each 8 elements: (x0,x4) (x1,x5) (x2,x6) (x3,x7)
    o0 = make_uint4(prmt(v0.x, v0.z, 0x5410u), prmt(v0.x, v0.z, 0x7632u), prmt(v0.y, v0.w, 0x5410u),
                    prmt(v0.y, v0.w, 0x7632u));
    o1 = make_uint4(prmt(v1.x, v1.z, 0x5410u), prmt(v1.x, v1.z, 0x7632u), prmt(v1.y, v1.w, 0x5410u),
                    prmt(v1.y, v1.w, 0x7632u));
  } else if constexpr (KIND == WeightKind::Int2) {
    // within 16 elements: word p = (x_p, x_{p+8}); x_p is in w_{p/2}, x_{p+8} in w_{4+p/2}
    o0 = make_uint4(prmt(v0.x, v1.x, 0x5410u), prmt(v0.x, v1.x, 0x7632u), prmt(v0.y, v1.y, 0x5410u),
                    prmt(v0.y, v1.y, 0x7632u));
    o1 = make_uint4(prmt(v0.z, v1.z, 0x5410u), prmt(v0.z, v1.z, 0x7632u), prmt(v0.w, v1.w, 0x5410u),
                    prmt(v0.w, v1.w, 0x7632u));
  } else {
    o0 = v0;
    o1 = v1;
  }
}

// Stages x rows [m0, m0 + rows) (all < M) and elements [k_begin, k_begin + nk) of the k-tile
// into shared memory (layout in the file comment); elements >= K are zeros. nk is a multiple
// of the k-step and K % 16 == 0, so a 16-element group is either fully inside K or outside.
template <WeightKind KIND, typename T>
__device__ __forceinline__ void stage_x(uint4* smem, const T* __restrict__ x, int64_t K, int64_t m0, int rows,
                                        int64_t k_begin, int nk) {
  using KT = Kind<KIND>;
  const int per_row = nk / 16;
  const int items = rows * per_row;
#pragma unroll 4
  for (int it = threadIdx.x; it < items; it += kThreads) {
    const int m = it / per_row;
    const int kk = (it - m * per_row) * 16;  // element offset in the tile
    const int64_t kabs = k_begin + kk;
    uint4 v0 = make_uint4(0u, 0u, 0u, 0u), v1 = v0;
    if (kabs < K) {
      const uint4* src = reinterpret_cast<const uint4*>(x + (m0 + m) * K + kabs);
      v0 = __ldg(src);
      v1 = __ldg(src + 1);
    }
    uint4 o0, o1;
    permute_x<KIND>(v0, v1, o0, o1);
    const int ksl = kk / KT::kStep;
    const int r = kk - ksl * KT::kStep;
    const int c = r / KT::kS;
    const int u0 = (r - c * KT::kS) / 8;  // even: the two units of this 16-element group
    smem[((ksl * KT::kUnits + u0) * rows + m) * 4 + c] = o0;
    smem[((ksl * KT::kUnits + u0 + 1) * rows + m) * 4 + c] = o1;
  }
}

// The weights (and for 4/2-bit the group parameters) a lane needs for one k-step.
template <WeightKind KIND>
struct Chunk {
  uint4 w[kNT];
  float s[kNT][Kind<KIND>::kSets];
  float z[kNT][Kind<KIND>::kSets];
};

struct Params {
  WxArgs a;
  int kw, splits;
  int64_t ksteps, mchunks;
  int64_t group_size;  // 4/2-bit kinds
  int group_shift;     // log2(group_size) when a power of two, else -1
};

template <WeightKind KIND>
__device__ __forceinline__ void load_chunk(Chunk<KIND>& ch, const Params& p, int64_t ks, int64_t n0, int g, int c) {
  using KT = Kind<KIND>;
  const int64_t k0 = ks * KT::kStep + c * KT::kS;  // first element of this lane's chunk
  const bool kin = k0 < p.a.K;                      // K % S == 0: the chunk is in or out whole
  const int64_t row_bytes = p.a.K * KT::kBits / 8;
  int64_t gi[KT::kSets];
  if constexpr (KT::kGrouped) {
#pragma unroll
    for (int h = 0; h < KT::kSets; ++h) {
      const int64_t k = k0 + 32 * h;
      gi[h] = p.group_shift >= 0 ? (k >> p.group_shift) : k / p.group_size;
    }
  }
#pragma unroll
  for (int t = 0; t < kNT; ++t) {
    const int64_t n = n0 + 8 * t + g;
    if (kin && n < p.a.N) {
      ch.w[t] = ld_stream(p.a.w + n * row_bytes + k0 * KT::kBits / 8);
      if constexpr (KT::kGrouped) {
#pragma unroll
        for (int h = 0; h < KT::kSets; ++h) {
          const int64_t idx = n * p.a.groups + gi[h];
          ch.s[t][h] = __ldg(p.a.scale + idx);
          ch.z[t][h] = p.a.zero_point ? __ldg(p.a.zero_point + idx) : 0.0f;
        }
      }
    } else {
      // zeros decode to finite weights and meet zero activations (rows / k out of range)
      ch.w[t] = make_uint4(0u, 0u, 0u, 0u);
      if constexpr (KT::kGrouped) {
#pragma unroll
        for (int h = 0; h < KT::kSets; ++h) ch.s[t][h] = ch.z[t][h] = 0.0f;
      }
    }
  }
}

template <WeightKind KIND, typename T>
__device__ __forceinline__ void decode_unit(const Chunk<KIND>& ch, int t, int u, const uint32_t (&s2)[Kind<KIND>::kSets],
                                            const uint32_t (&z2)[Kind<KIND>::kSets], uint32_t (&b)[4]) {
  const uint32_t* w = reinterpret_cast<const uint32_t*>(&ch.w[t]);
  if constexpr (KIND == WeightKind::Int4) {
    decode_int4<T>(w[u], s2[0], z2[0], b);
  } else if constexpr (KIND == WeightKind::Int2) {
    const uint32_t word = w[u >> 1];
    decode_int2<T>((u & 1) ? (word >> 8) : word, s2[u >> 2], z2[u >> 2], b);  // units 0-3: elements 0..31
  } else if constexpr (KIND == WeightKind::Int8) {
    decode_int8_word<T>(w[2 * u], b[0], b[1]);
    decode_int8_word<T>(w[2 * u + 1], b[2], b[3]);
  } else if constexpr (KIND == WeightKind::Fp8E5M2) {
    decode_e5m2_word<T>(w[2 * u], b[0], b[1]);
    decode_e5m2_word<T>(w[2 * u + 1], b[2], b[3]);
  } else {
    decode_e4m3_word<T>(w[2 * u], b[0], b[1]);
    decode_e4m3_word<T>(w[2 * u + 1], b[2], b[3]);
  }
}

// One k-step of one warp: ksl is the k-step's index in the staged tile, rows the rows of x
// staged (the tile's row stride).
template <WeightKind KIND, typename T, int MT>
__device__ __forceinline__ void compute_kstep(float (&acc)[MT][kNT][4], const Chunk<KIND>& ch, const uint4* smem,
                                              int ksl, int lane, int rows) {
  using KT = Kind<KIND>;
  const int g = lane >> 2;
  uint32_t s2[kNT][KT::kSets], z2[kNT][KT::kSets];
  if constexpr (KT::kGrouped) {
#pragma unroll
    for (int t = 0; t < kNT; ++t)
#pragma unroll
      for (int h = 0; h < KT::kSets; ++h) {
        s2[t][h] = h2_splat<T>(ch.s[t][h]);
        z2[t][h] = h2_splat<T>(__fmul_rn(-ch.z[t][h], ch.s[t][h]));
      }
  }
#pragma unroll
  for (int u = 0; u < KT::kUnits; ++u) {
    uint32_t b[kNT][4];
#pragma unroll
    for (int t = 0; t < kNT; ++t) decode_unit<KIND, T>(ch, t, u, s2[t], z2[t], b[t]);
    const uint4* base = smem + (ksl * KT::kUnits + u) * rows * 4;
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      const int left = rows - 16 * mt;  // rows of x in this 16-row tile (uniform)
      if (left <= 0) break;
      const uint4 zero = make_uint4(0u, 0u, 0u, 0u);
      const uint4 ar = g < left ? base[mt * 64 + lane] : zero;           // row g
      const uint4 br = g + 8 < left ? base[mt * 64 + 32 + lane] : zero;  // row g + 8
#pragma unroll
      for (int t = 0; t < kNT; ++t) {
        mma16816<T>(acc[mt][t], ar.x, br.x, ar.y, br.y, b[t][0], b[t][1]);
        mma16816<T>(acc[mt][t], ar.z, br.z, ar.w, br.w, b[t][2], b[t][3]);
      }
    }
  }
}

template <typename T>
__device__ __forceinline__ void store_pair(T* y, int64_t idx, float v0, float v1, bool both, bool pair_ok) {
  if constexpr (std::is_same<T, float>::value) {
    if (both && pair_ok) {
      *reinterpret_cast<float2*>(y + idx) = make_float2(v0, v1);
    } else {
      y[idx] = v0;
      if (both) y[idx + 1] = v1;
    }
  } else if constexpr (kIsHalf<T>) {
    if (both && pair_ok) {
      *reinterpret_cast<__half2*>(y + idx) = __floats2half2_rn(v0, v1);
    } else {
      y[idx] = __float2half_rn(v0);
      if (both) y[idx + 1] = __float2half_rn(v1);
    }
  } else {
    if (both && pair_ok) {
      *reinterpret_cast<__nv_bfloat162*>(y + idx) = __floats2bfloat162_rn(v0, v1);
    } else {
      y[idx] = __float2bfloat16_rn(v0);
      if (both) y[idx + 1] = __float2bfloat16_rn(v1);
    }
  }
}

// ((acc * row_scale) * col_scale) + bias, left to right, no fused multiply-add.
__device__ __forceinline__ float finish_value(float v, const WxArgs& a, int64_t m, int64_t n) {
  if (a.row_scale) v = __fmul_rn(v, a.row_scale[m]);
  if (a.col_scale) v = __fmul_rn(v, a.col_scale[n * a.col_scale_stride]);
  if (a.bias) v = __fadd_rn(v, a.bias[n]);
  return v;
}

template <WeightKind KIND, typename T, int MT>
__global__ void __launch_bounds__(kThreads) wx_gemm_kernel(const Params p) {
  using KT = Kind<KIND>;
  using TL = Tile<KIND, MT>;
  constexpr int MR = TL::kMR;
  __shared__ uint4 smem[TL::kSmemU4];

  const WxArgs& a = p.a;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, c = lane & 3;
  const int kw = p.kw, slabs = kWarps / p.kw;
  const int warp_k = warp % kw, warp_n = warp / kw;
  const int64_t n0 = static_cast<int64_t>(blockIdx.x) * (32 * slabs) + 32 * warp_n;  // warp's first channel
  const int z = blockIdx.y;
  const int64_t ksb = p.ksteps * z / p.splits, kse = p.ksteps * (z + 1) / p.splits;  // this split's k-steps
  const T* x = static_cast<const T*>(a.x);

  for (int64_t mc = blockIdx.z; mc < p.mchunks; mc += gridDim.z) {
    const int64_t m0 = mc * MR;
    const int rows = static_cast<int>(a.M - m0 < MR ? a.M - m0 : MR);  // rows of x in this chunk
    const int tile_ksteps = TL::ksteps_for(rows);
    float acc[MT][kNT][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int t = 0; t < kNT; ++t)
#pragma unroll
        for (int r = 0; r < 4; ++r) acc[mt][t][r] = 0.0f;

    // This warp takes k-steps ksb + warp_k, + kw, ...; the next one is loaded while the
    // current one is computed (two sets of 16-byte loads in flight per lane and n-tile).
    int64_t ks = ksb + warp_k;
    Chunk<KIND> cur, nxt;
    if (ks < kse) load_chunk<KIND>(cur, p, ks, n0, g, c);
    for (int64_t tile = ksb; tile < kse; tile += tile_ksteps) {
      const int64_t tile_end = tile + tile_ksteps < kse ? tile + tile_ksteps : kse;
      __syncthreads();  // every warp is done with the previous tile
      stage_x<KIND, T>(smem, x, a.K, m0, rows, tile * KT::kStep, static_cast<int>(tile_end - tile) * KT::kStep);
      __syncthreads();
      for (; ks < tile_end; ks += kw) {
        if (ks + kw < kse) load_chunk<KIND>(nxt, p, ks + kw, n0, g, c);
        compute_kstep<KIND, T, MT>(acc, cur, smem, static_cast<int>(ks - tile), lane, rows);
        cur = nxt;
      }
    }

    // Warps that split K: warp_k > 0 hand their sums to warp_k == 0 through shared memory,
    // which adds them in the order warp_k = 1, 2, 3 (deterministic).
    if (kw > 1) {
      constexpr int NACC = MT * kNT * 4;
      float* red = reinterpret_cast<float*>(smem);  // (kw - 1) * slabs * NACC * 32 floats <= 24 KB
      __syncthreads();
      if (warp_k > 0) {
        float* dst = red + ((warp_k - 1) * slabs + warp_n) * NACC * 32;
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
          for (int t = 0; t < kNT; ++t)
#pragma unroll
            for (int r = 0; r < 4; ++r) dst[((mt * kNT + t) * 4 + r) * 32 + lane] = acc[mt][t][r];
      }
      __syncthreads();
      if (warp_k == 0) {
        for (int j = 1; j < kw; ++j) {
          const float* src = red + ((j - 1) * slabs + warp_n) * NACC * 32;
#pragma unroll
          for (int mt = 0; mt < MT; ++mt)
#pragma unroll
            for (int t = 0; t < kNT; ++t)
#pragma unroll
              for (int r = 0; r < 4; ++r) acc[mt][t][r] += src[((mt * kNT + t) * 4 + r) * 32 + lane];
        }
      }
    }

    if (warp_k == 0) {
      // C fragment: acc[mt][t][0..1] -> row m0 + 16 mt + g, channels n0 + 8 t + 2c, +1;
      //             acc[mt][t][2..3] -> row + 8.
      const bool pair_ok = (a.N % 2) == 0;  // then (m * N + n) is even for even n: aligned pairs
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int t = 0; t < kNT; ++t) {
          const int64_t n = n0 + 8 * t + 2 * c;
          if (n >= a.N) continue;
          const bool both = n + 1 < a.N;
#pragma unroll
          for (int hr = 0; hr < 2; ++hr) {
            const int64_t m = m0 + 16 * mt + g + 8 * hr;
            if (m >= a.M) continue;
            float v0 = acc[mt][t][2 * hr], v1 = acc[mt][t][2 * hr + 1];
            if (a.out_final) {
              v0 = finish_value(v0, a, m, n);
              if (both) v1 = finish_value(v1, a, m, n + 1);
              store_pair<T>(static_cast<T*>(a.y), m * a.N + n, v0, v1, both, pair_ok);
            } else {
              store_pair<float>(a.partials, (z * a.M + m) * a.N + n, v0, v1, both, pair_ok);
            }
          }
        }
    }
    __syncthreads();  // shared memory is reused by the next row chunk
  }
}

// ---- host side --------------------------------------------------------------------------
template <WeightKind KIND, typename T, int MT>
cudaError_t launch_one(const WxArgs& a, const WxPlan& plan, cudaStream_t stream) {
  Params p;
  p.a = a;
  p.kw = plan.kw;
  p.splits = plan.splits;
  p.ksteps = plan.ksteps;
  p.mchunks = plan.mchunks;
  p.group_size = Kind<KIND>::kGrouped ? a.K / (a.groups > 0 ? a.groups : 1) : 0;
  p.group_shift = -1;
  if (p.group_size > 0 && (p.group_size & (p.group_size - 1)) == 0) {
    int s = 0;
    while ((int64_t{1} << s) < p.group_size) ++s;
    p.group_shift = s;
  }
  const dim3 grid(static_cast<unsigned>(plan.blocks_n), static_cast<unsigned>(plan.splits),
                  static_cast<unsigned>(plan.mchunks < 65535 ? plan.mchunks : 65535));
  wx_gemm_kernel<KIND, T, MT><<<grid, kThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

template <WeightKind KIND, typename T>
cudaError_t launch_mt(const WxArgs& a, const WxPlan& plan, cudaStream_t stream) {
  switch (plan.mt) {
    case 1: return launch_one<KIND, T, 1>(a, plan, stream);
    case 2: return launch_one<KIND, T, 2>(a, plan, stream);
    case 4: return launch_one<KIND, T, 4>(a, plan, stream);
    default: return cudaErrorInvalidValue;
  }
}

template <WeightKind KIND, typename T>
int occupancy_mt(int mt) {
  int n = 0;
  cudaError_t e = cudaErrorInvalidValue;
  if (mt == 1) e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, wx_gemm_kernel<KIND, T, 1>, kThreads, 0);
  if (mt == 2) e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, wx_gemm_kernel<KIND, T, 2>, kThreads, 0);
  if (mt == 4) e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, wx_gemm_kernel<KIND, T, 4>, kThreads, 0);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();  // do not leave the error for the next launch check
    return 1;
  }
  return n > 0 ? n : 1;
}

}  // namespace lowbit::cuda::gemm::wx

// Defines the two entry points of gemm_wx.cuh for one weight kind (used once per .cu file).
#define LOWBIT_WX_DEFINE_KIND(NAME, KIND)                                                        \
  namespace lowbit::cuda::gemm::wx {                                                             \
  cudaError_t launch_##NAME(ElemType act, const WxArgs& a, const WxPlan& p, cudaStream_t stream) { \
    if (act == ElemType::F16) return launch_mt<KIND, __half>(a, p, stream);                      \
    if (act == ElemType::BF16) return launch_mt<KIND, __nv_bfloat16>(a, p, stream);              \
    return cudaErrorInvalidValue;                                                                \
  }                                                                                              \
  int occupancy_##NAME(ElemType act, int mt) {                                                   \
    return act == ElemType::F16 ? occupancy_mt<KIND, __half>(mt) : occupancy_mt<KIND, __nv_bfloat16>(mt); \
  }                                                                                              \
  }
