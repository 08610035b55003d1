// AVX2/FMA/F16C float8 and GGUF linear kernels (see cpu/gemm_fp8_gguf.h).
//
// Shape of every kernel: a tile of MR rows of x (1..4) times NC output columns
// (1..4) runs over the whole K, with MR * NC float32 vector accumulators; each
// weight byte is loaded and decoded once per tile and used for all MR rows.
// Columns are walked in chunks whose weights fit in L2, and every row group
// sweeps the chunk, so for M > 4 the weights come from L2, not from memory.
//
// Decoding in registers:
// - float8: a code is placed in the top byte of a 16-bit lane. For e5m2 that is
//   exactly binary16; for e4m3fn, the code sign-extended to 16 bits, shifted
//   left by 7 and with bit 14 cleared is the binary16 number 2^-8 * value
//   (subnormals included), so
//   F16C converts 8 codes per instruction and 256 * scale is applied at the end.
//   e4m3fn NaN codes (0x7f / 0xff) would decode to +-480 this way; they are
//   caught by a byte max over each 32 codes and make the column NaN.
// - Q4_0: 16 bytes -> (bytes & 15 | (bytes >> 4) & 15) is the 32 unsigned codes in
//   element order (llama.cpp's bytes_from_nibbles_32).
// - int8 activations: maddubs(unsigned weights, signed activations) for Q4_0 with
//   the -8 offset removed through the per-block activation sum; Q8_0 uses the
//   sign trick maddubs(|w|, sign(x, w)). Pair sums stay below 2 * 127 * 127.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <new>

#include "cpu/avx2/panel_gemm_avx2.h"
#include "cpu/avx2/panel_gemm_bf16.h"
#include "cpu/avx2/vec_avx2.h"
#include "cpu/gemm_fp8_gguf.h"

namespace lowbit::cpu::avx2 {
namespace {

constexpr int64_t kBlock = 32;

// Tiles keep their MR x NC accumulators in registers only if the loops over
// rows / columns / sub-blocks are unrolled completely.
#define UNROLL _Pragma("GCC unroll 16")

// fp16 scale at the start of a GGUF block.
inline float block_scale(const uint8_t* blk) {
  uint16_t h;
  std::memcpy(&h, blk, 2);
  return _cvtsh_ss(h);
}

inline float fp8_scalar(uint8_t b, bool e4m3) {
  if (!e4m3) return _cvtsh_ss(static_cast<uint16_t>(b << 8));
  if ((b & 0x7f) == 0x7f) return NAN;
  const uint16_t h = static_cast<uint16_t>(((b & 0x7f) << 7) | ((b & 0x80) << 8));
  return _cvtsh_ss(h) * 256.f;
}

// 8 e5m2 codes -> 8 floats: each code is the high byte of a binary16.
inline __m256 e5m2x8(const uint8_t* p) {
  return _mm256_cvtph_ps(_mm_unpacklo_epi8(_mm_setzero_si128(), _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
}

// 16 e4m3fn codes -> 2 x 8 floats, times 2^-8: sign-extend to 16 bits, shift
// left by 7 (sign lands in bit 15 and a copy in bit 14), clear bit 14.
inline void e4m3x16(const uint8_t* p, __m256* lo, __m256* hi) {
  __m256i h = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  h = _mm256_andnot_si256(_mm256_set1_epi16(0x4000), _mm256_slli_epi16(h, 7));
  *lo = _mm256_cvtph_ps(_mm256_castsi256_si128(h));
  *hi = _mm256_cvtph_ps(_mm256_extracti128_si256(h, 1));
}

// The NC weight rows of a tile are one contiguous span, read as NC short
// streams (a Q4_0 row of K = 4096 is 36 cache lines): too short for the hardware
// prefetchers to lock on. So while a tile runs, the span of the tile kPrefetchTiles
// ahead is prefetched into L2 (prefetcht1: into L1 it stalled on fill buffers)
// at the rate the tile consumes its own.
constexpr int64_t kPrefetchTiles = 2;

inline void prefetch_span(const uint8_t* p, int64_t bytes) {
  for (int64_t o = 0; o < bytes + 63; o += 64) _mm_prefetch(reinterpret_cast<const char*>(p + o), _MM_HINT_T1);
}

// Columns per L2 chunk for a given weight row size.
inline int64_t chunk_cols(int64_t row_bytes) {
  const int64_t c = (int64_t{192} << 10) / std::max<int64_t>(row_bytes, 1);
  return std::max<int64_t>(4, c / 4 * 4);
}

// Runs Tile<MR, NC>::run(args, r0, n) over rows [0, M) x columns [n0, n1).
template <template <int, int> class Tile, int MR, int NC, class Args>
void run_cols(const Args& a, int64_t r0, int64_t c0, int64_t c1) {
  int64_t n = c0;
  for (; n + NC <= c1; n += NC) Tile<MR, NC>::run(a, r0, n);
  for (; n < c1; ++n) Tile<MR, 1>::run(a, r0, n);
}

template <template <int, int> class Tile, class Args>
void drive(const Args& a, int64_t M, int64_t n0, int64_t n1, int64_t row_bytes) {
  const int64_t chunk = M <= 4 ? n1 - n0 : chunk_cols(row_bytes);
  for (int64_t c0 = n0; c0 < n1; c0 += chunk) {
    const int64_t c1 = std::min(n1, c0 + chunk);
    for (int64_t r0 = 0; r0 < M; r0 += 4) {
      switch (std::min<int64_t>(4, M - r0)) {
        case 1: run_cols<Tile, 1, 4>(a, r0, c0, c1); break;
        case 2: run_cols<Tile, 2, 4>(a, r0, c0, c1); break;
        case 3: run_cols<Tile, 3, 2>(a, r0, c0, c1); break;
        default: run_cols<Tile, 4, 2>(a, r0, c0, c1); break;
      }
    }
  }
}

// ---------------------------------------------------------------- float8 ----

template <int MR, int NC>
inline void zero_tile(__m256 (&acc)[MR][NC]) {
  UNROLL
  for (int r = 0; r < MR; ++r)
    UNROLL
    for (int c = 0; c < NC; ++c) acc[r][c] = _mm256_setzero_ps();
}

struct Fp8Args {
  const float* x;
  const uint8_t* q;
  const float* scale;
  int64_t scale_stride;
  const float* bias;
  float* y;
  int64_t K, N;
};

template <bool E4M3>
struct Fp8TileT {
  template <int MR, int NC>
  struct Tile {
    static void run(const Fp8Args& a, int64_t r0, int64_t n) {
      const int64_t K = a.K, K32 = K / 32 * 32;
      const float* x = a.x + r0 * K;
      const uint8_t* w = a.q + n * K;
      __m256 acc[MR][NC];
      zero_tile<MR, NC>(acc);
      // NaN check for e4m3fn: (b | 0x80) == 0xff exactly for the NaN codes, so a
      // running unsigned byte max over the tile hits 0xff iff one is present
      const __m256i sign = _mm256_set1_epi8(static_cast<char>(0x80));
      __m256i hi = _mm256_setzero_si256();
      const uint8_t* pf = w + kPrefetchTiles * NC * K;
      for (int64_t k = 0; k < K32; k += 32) {
        prefetch_span(pf + k * NC, 32 * NC);
        if (E4M3)
          UNROLL
          for (int c = 0; c < NC; ++c) {
            const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + c * K + k));
            hi = _mm256_max_epu8(hi, _mm256_or_si256(v, sign));
          }
        if (E4M3) {
          UNROLL
          for (int j = 0; j < 32; j += 16)
            UNROLL
            for (int c = 0; c < NC; ++c) {
              __m256 lo, hi;
              e4m3x16(w + c * K + k + j, &lo, &hi);
              UNROLL
              for (int r = 0; r < MR; ++r) {
                acc[r][c] = _mm256_fmadd_ps(lo, _mm256_loadu_ps(x + r * K + k + j), acc[r][c]);
                acc[r][c] = _mm256_fmadd_ps(hi, _mm256_loadu_ps(x + r * K + k + j + 8), acc[r][c]);
              }
            }
        } else {
          UNROLL
          for (int j = 0; j < 32; j += 8)
            UNROLL
            for (int c = 0; c < NC; ++c) {
              const __m256 wf = e5m2x8(w + c * K + k + j);
              UNROLL
              for (int r = 0; r < MR; ++r)
                acc[r][c] = _mm256_fmadd_ps(wf, _mm256_loadu_ps(x + r * K + k + j), acc[r][c]);
            }
        }
      }
      const float unit = E4M3 ? 256.f : 1.f;
      const bool any_nan =
          E4M3 && _mm256_movemask_epi8(_mm256_cmpeq_epi8(hi, _mm256_set1_epi8(static_cast<char>(0xff)))) != 0;
      UNROLL
      for (int c = 0; c < NC; ++c) {
        bool nan = false;
        if (any_nan)  // rare: find the columns that hold a NaN code
          for (int64_t k = 0; k < K32 && !nan; ++k) nan = (w[c * K + k] & 0x7f) == 0x7f;
        const float s = a.scale[(n + c) * a.scale_stride];
        const float bias = a.bias ? a.bias[n + c] : 0.f;
        UNROLL
        for (int r = 0; r < MR; ++r) {
          float v = hsum8(acc[r][c]) * unit;
          for (int64_t k = K32; k < K; ++k) v += fp8_scalar(w[c * K + k], E4M3) * x[r * K + k];
          if (nan) v = NAN;
          a.y[(r0 + r) * a.N + n + c] = v * s + bias;
        }
      }
    }
  };
};

// ----------------------------------------------------- GGUF, float activations ----

struct GgufF32Args {
  const float* x;
  const uint8_t* blocks;
  const float* bias;
  float* y;
  int64_t K, N, nb, row_bytes;
};

// y[r0 + r, n + c] = sum of the lanes of acc[r][c] + bias[n + c], for a whole MR x NC tile.
template <int MR, int NC>
inline void store_tile(float* y, int64_t N, int64_t r0, int64_t n, const float* bias, __m256 (&acc)[MR][NC]) {
  UNROLL
  for (int r = 0; r < MR; ++r)
    UNROLL
    for (int c = 0; c < NC; ++c) y[(r0 + r) * N + n + c] = hsum8(acc[r][c]) + (bias ? bias[n + c] : 0.f);
}

// Q8_0: codes * d is the exact dequantized weight (8-bit x 11-bit mantissas).
template <int MR, int NC>
struct Q8F32Tile {
  static void run(const GgufF32Args& a, int64_t r0, int64_t n) {
    const float* x = a.x + r0 * a.K;
    const uint8_t* w = a.blocks + n * a.row_bytes;
    __m256 acc[MR][NC];
    zero_tile<MR, NC>(acc);
    const uint8_t* pf = w + kPrefetchTiles * NC * a.row_bytes;
    for (int64_t b = 0; b < a.nb; ++b) {
      prefetch_span(pf + b * NC * 34, NC * 34);
      __m256 d[NC];
      UNROLL
      for (int c = 0; c < NC; ++c) d[c] = _mm256_set1_ps(block_scale(w + c * a.row_bytes + b * 34));
      UNROLL
      for (int j = 0; j < 32; j += 8) {
        __m256 wf[NC];
        UNROLL
        for (int c = 0; c < NC; ++c) {
          const __m128i q8 = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(w + c * a.row_bytes + b * 34 + 2 + j));
          wf[c] = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q8)), d[c]);
        }
        UNROLL
        for (int r = 0; r < MR; ++r) {
          const __m256 xv = _mm256_loadu_ps(x + r * a.K + b * 32 + j);
          UNROLL
          for (int c = 0; c < NC; ++c) acc[r][c] = _mm256_fmadd_ps(wf[c], xv, acc[r][c]);
        }
      }
    }
    store_tile<MR, NC>(a.y, a.N, r0, n, a.bias, acc);
  }
};

// Q4_0: (u - 8) * d computed as fma(u, d, -8 d), exact like the Q8_0 product.
template <int MR, int NC>
struct Q4F32Tile {
  static void run(const GgufF32Args& a, int64_t r0, int64_t n) {
    const float* x = a.x + r0 * a.K;
    const uint8_t* w = a.blocks + n * a.row_bytes;
    const __m256i m4 = _mm256_set1_epi32(0x0f);
    __m256 acc[MR][NC];
    zero_tile<MR, NC>(acc);
    const uint8_t* pf = w + kPrefetchTiles * NC * a.row_bytes;
    for (int64_t b = 0; b < a.nb; ++b) {
      prefetch_span(pf + b * NC * 18, NC * 18);
      __m256 d[NC], d8[NC];
      UNROLL
      for (int c = 0; c < NC; ++c) {
        const uint8_t* blk = w + c * a.row_bytes + b * 18;
        const float s = block_scale(blk);
        d[c] = _mm256_set1_ps(s);
        d8[c] = _mm256_set1_ps(-8.f * s);
      }
      UNROLL
      for (int j = 0; j < 4; ++j) {
        __m256 wf[NC];
        UNROLL
        for (int c = 0; c < NC; ++c) {
          // elements 8j..8j+7: low nibbles of bytes 0-7 / 8-15, then their high nibbles
          const uint8_t* qs = w + c * a.row_bytes + b * 18 + 2 + (j & 1) * 8;
          const __m256i src = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(qs)));
          const __m256i u = j < 2 ? _mm256_and_si256(src, m4) : _mm256_srli_epi32(src, 4);
          wf[c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(u), d[c], d8[c]);
        }
        UNROLL
        for (int r = 0; r < MR; ++r) {
          const __m256 xv = _mm256_loadu_ps(x + r * a.K + b * 32 + j * 8);
          UNROLL
          for (int c = 0; c < NC; ++c) acc[r][c] = _mm256_fmadd_ps(wf[c], xv, acc[r][c]);
        }
      }
    }
    store_tile<MR, NC>(a.y, a.N, r0, n, a.bias, acc);
  }
};

// ------------------------------------------------------ GGUF, int8 activations ----

struct GgufI8Args {
  const int8_t* qx;
  const float* dx;
  const int32_t* sx;
  const uint8_t* blocks;
  const float* bias;
  float* y;
  int64_t K, N, nb, row_bytes;
};

template <int MR, int NC>
struct Q4I8Tile {
  static void run(const GgufI8Args& a, int64_t r0, int64_t n) {
    const int8_t* qx = a.qx + r0 * a.K;
    const float* dx = a.dx + r0 * a.nb;
    const int32_t* sx = a.sx + r0 * a.nb;
    const uint8_t* w = a.blocks + n * a.row_bytes;
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    const __m256i nib_shift = _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4);
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc[MR][NC];
    zero_tile<MR, NC>(acc);
    const uint8_t* pf = w + kPrefetchTiles * NC * a.row_bytes;
    for (int64_t b = 0; b < a.nb; ++b) {
      prefetch_span(pf + b * NC * 18, NC * 18);
      __m256i wq[NC];
      __m256 dw[NC];
      UNROLL
      for (int c = 0; c < NC; ++c) {
        const uint8_t* blk = w + c * a.row_bytes + b * 18;
        // the 16 bytes in both halves, the upper half shifted right by 4
        const __m256i raw = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 2)));
        wq[c] = _mm256_and_si256(_mm256_srlv_epi32(raw, nib_shift), m4);
        dw[c] = _mm256_set1_ps(block_scale(blk));
      }
      UNROLL
      for (int r = 0; r < MR; ++r) {
        const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qx + r * a.K + b * 32));
        // sum (u - 8) q = sum u q - 8 sum q: the correction goes into lane 0
        const __m256i corr = _mm256_castsi128_si256(_mm_cvtsi32_si128(8 * sx[r * a.nb + b]));
        const __m256 d = _mm256_broadcast_ss(dx + r * a.nb + b);
        UNROLL
        for (int c = 0; c < NC; ++c) {
          __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(wq[c], xv), ones);
          p = _mm256_sub_epi32(p, corr);
          acc[r][c] = _mm256_fmadd_ps(_mm256_mul_ps(dw[c], d), _mm256_cvtepi32_ps(p), acc[r][c]);
        }
      }
    }
    store_tile<MR, NC>(a.y, a.N, r0, n, a.bias, acc);
  }
};

template <int MR, int NC>
struct Q8I8Tile {
  static void run(const GgufI8Args& a, int64_t r0, int64_t n) {
    const int8_t* qx = a.qx + r0 * a.K;
    const float* dx = a.dx + r0 * a.nb;
    const uint8_t* w = a.blocks + n * a.row_bytes;
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc[MR][NC];
    zero_tile<MR, NC>(acc);
    const uint8_t* pf = w + kPrefetchTiles * NC * a.row_bytes;
    for (int64_t b = 0; b < a.nb; ++b) {
      prefetch_span(pf + b * NC * 34, NC * 34);
      __m256i wq[NC], wa[NC];
      __m256 dw[NC];
      UNROLL
      for (int c = 0; c < NC; ++c) {
        const uint8_t* blk = w + c * a.row_bytes + b * 34;
        wq[c] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 2));
        wa[c] = _mm256_sign_epi8(wq[c], wq[c]);
        dw[c] = _mm256_set1_ps(block_scale(blk));
      }
      UNROLL
      for (int r = 0; r < MR; ++r) {
        const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qx + r * a.K + b * 32));
        const __m256 d = _mm256_broadcast_ss(dx + r * a.nb + b);
        UNROLL
        for (int c = 0; c < NC; ++c) {
          const __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(wa[c], _mm256_sign_epi8(xv, wq[c])), ones);
          acc[r][c] = _mm256_fmadd_ps(_mm256_mul_ps(dw[c], d), _mm256_cvtepi32_ps(p), acc[r][c]);
        }
      }
    }
    store_tile<MR, NC>(a.y, a.N, r0, n, a.bias, acc);
  }
};


// ------------------------------------------------ large M: packed float panels ----
// (csrc/cpu/avx2/panel_gemm_avx2.h) with these decoders.

// Decoders: v8(n, k) gives the 8 dequantized weights n, k..k+7 (k % 8 == 0,
// k + 8 <= K); v1(n, k) one weight.
template <bool E4M3>
struct Fp8Dec {
  const uint8_t* q;
  const float* scale;
  int64_t scale_stride, K;
  float s(int64_t n) const { return scale[n * scale_stride]; }
  float v1(int64_t n, int64_t k) const { return fp8_scalar(q[n * K + k], E4M3) * s(n); }
  __m256 v8(int64_t n, int64_t k) const {
    const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(q + n * K + k));
    if (E4M3) {
      if (_mm_movemask_epi8(_mm_cmpeq_epi8(_mm_or_si128(b, _mm_set1_epi8(static_cast<char>(0x80))),
                                           _mm_set1_epi8(static_cast<char>(0xff)))) & 0xff) {
        alignas(32) float t[8];
        for (int i = 0; i < 8; ++i) t[i] = v1(n, k + i);
        return _mm256_load_ps(t);
      }
      const __m128i h = _mm_andnot_si128(_mm_set1_epi16(0x4000), _mm_slli_epi16(_mm_cvtepi8_epi16(b), 7));
      return _mm256_mul_ps(_mm256_cvtph_ps(h), _mm256_set1_ps(256.f * s(n)));
    }
    return _mm256_mul_ps(_mm256_cvtph_ps(_mm_unpacklo_epi8(_mm_setzero_si128(), b)), _mm256_set1_ps(s(n)));
  }
};

struct Q8Dec {
  const uint8_t* blocks;
  int64_t row_bytes;
  float v1(int64_t n, int64_t k) const {
    const uint8_t* blk = blocks + n * row_bytes + k / 32 * 34;
    return block_scale(blk) * static_cast<float>(static_cast<int8_t>(blk[2 + k % 32]));
  }
  __m256 v8(int64_t n, int64_t k) const {
    const uint8_t* blk = blocks + n * row_bytes + k / 32 * 34;
    const __m128i q8 = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(blk + 2 + k % 32));
    return _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q8)), _mm256_set1_ps(block_scale(blk)));
  }
};

struct Q4Dec {
  const uint8_t* blocks;
  int64_t row_bytes;
  float v1(int64_t n, int64_t k) const {
    const uint8_t* blk = blocks + n * row_bytes + k / 32 * 18;
    const int j = static_cast<int>(k % 32);
    const int u = j < 16 ? (blk[2 + j] & 0xf) : (blk[2 + j - 16] >> 4);
    return block_scale(blk) * static_cast<float>(u - 8);
  }
  __m256 v8(int64_t n, int64_t k) const {
    const uint8_t* blk = blocks + n * row_bytes + k / 32 * 18;
    const int j = static_cast<int>(k % 32);
    __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(blk + 2 + (j & 15)));
    if (j >= 16) b = _mm_srli_epi16(b, 4);
    b = _mm_and_si128(b, _mm_set1_epi8(0x0f));
    const float d = block_scale(blk);
    return _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(b)), _mm256_set1_ps(d), _mm256_set1_ps(-8.f * d));
  }
};

inline bool use_packed(int64_t M, int64_t K) { return packed_gemm_applies(M, K); }
}  // namespace

void quantize_act_q8(const float* x, int8_t* qx, float* dx, int32_t* sx, int64_t rows, int64_t K) {
  const int64_t nb = K / kBlock;
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t b = 0; b < nb; ++b) {
      const float* xb = x + r * K + b * kBlock;
      const __m256 v0 = _mm256_loadu_ps(xb), v1 = _mm256_loadu_ps(xb + 8);
      const __m256 v2 = _mm256_loadu_ps(xb + 16), v3 = _mm256_loadu_ps(xb + 24);
      const __m256 m = _mm256_max_ps(_mm256_max_ps(_mm256_and_ps(v0, abs_mask), _mm256_and_ps(v1, abs_mask)),
                                     _mm256_max_ps(_mm256_and_ps(v2, abs_mask), _mm256_and_ps(v3, abs_mask)));
      const __m256 un = _mm256_or_ps(_mm256_or_ps(_mm256_cmp_ps(v0, v0, _CMP_UNORD_Q), _mm256_cmp_ps(v1, v1, _CMP_UNORD_Q)),
                                     _mm256_or_ps(_mm256_cmp_ps(v2, v2, _CMP_UNORD_Q), _mm256_cmp_ps(v3, v3, _CMP_UNORD_Q)));
      const float amax = _mm256_movemask_ps(un) ? NAN : hmax8(m);
      const float d = amax <= 3.4028234663852886e38f ? amax / 127.f : NAN;  // NaN / inf -> NaN outputs
      const float id = d != 0.f ? 1.f / d : 0.f;
      const __m256 idv = _mm256_set1_ps(id);
      const __m256i i0 = _mm256_cvtps_epi32(_mm256_mul_ps(v0, idv)), i1 = _mm256_cvtps_epi32(_mm256_mul_ps(v1, idv));
      const __m256i i2 = _mm256_cvtps_epi32(_mm256_mul_ps(v2, idv)), i3 = _mm256_cvtps_epi32(_mm256_mul_ps(v3, idv));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(qx + r * K + b * kBlock), pack32_epi8(i0, i1, i2, i3));
      dx[r * nb + b] = d;
      sx[r * nb + b] = hsum8_epi32(_mm256_add_epi32(_mm256_add_epi32(i0, i1), _mm256_add_epi32(i2, i3)));
    }
}

void linear_fp8(const float* x, const uint8_t* q, Fp8Format fmt, const float* scale, int64_t scale_stride,
                const float* bias, float* y, int64_t M, int64_t K, int64_t N, int64_t n0, int64_t n1) {
  if (use_packed(M, K)) {
    if (fmt == Fp8Format::E4M3FN) gemm_packed(Fp8Dec<true>{q, scale, scale_stride, K}, x, bias, y, M, K, N, n0, n1);
    else gemm_packed(Fp8Dec<false>{q, scale, scale_stride, K}, x, bias, y, M, K, N, n0, n1);
    return;
  }
  const Fp8Args a{x, q, scale, scale_stride, bias, y, K, N};
  if (fmt == Fp8Format::E4M3FN) drive<Fp8TileT<true>::Tile>(a, M, n0, n1, K);
  else drive<Fp8TileT<false>::Tile>(a, M, n0, n1, K);
}

void linear_q8_0_f32act(const float* x, const uint8_t* blocks, const float* bias, float* y, int64_t M, int64_t K,
                        int64_t N, int64_t n0, int64_t n1) {
  if (use_packed(M, K)) return gemm_packed(Q8Dec{blocks, K / kBlock * 34}, x, bias, y, M, K, N, n0, n1);
  const GgufF32Args a{x, blocks, bias, y, K, N, K / kBlock, K / kBlock * 34};
  drive<Q8F32Tile>(a, M, n0, n1, a.row_bytes);
}

void linear_q4_0_f32act(const float* x, const uint8_t* blocks, const float* bias, float* y, int64_t M, int64_t K,
                        int64_t N, int64_t n0, int64_t n1) {
  if (use_packed(M, K)) return gemm_packed(Q4Dec{blocks, K / kBlock * 18}, x, bias, y, M, K, N, n0, n1);
  const GgufF32Args a{x, blocks, bias, y, K, N, K / kBlock, K / kBlock * 18};
  drive<Q4F32Tile>(a, M, n0, n1, a.row_bytes);
}

void linear_q8_0_int8act(const int8_t* qx, const float* dx, const int32_t* sx, const uint8_t* blocks,
                         const float* bias, float* y, int64_t M, int64_t K, int64_t N, int64_t n0, int64_t n1) {
  const GgufI8Args a{qx, dx, sx, blocks, bias, y, K, N, K / kBlock, K / kBlock * 34};
  drive<Q8I8Tile>(a, M, n0, n1, a.row_bytes);
}

void linear_q4_0_int8act(const int8_t* qx, const float* dx, const int32_t* sx, const uint8_t* blocks,
                         const float* bias, float* y, int64_t M, int64_t K, int64_t N, int64_t n0, int64_t n1) {
  const GgufI8Args a{qx, dx, sx, blocks, bias, y, K, N, K / kBlock, K / kBlock * 18};
  drive<Q4I8Tile>(a, M, n0, n1, a.row_bytes);
}

#if defined(LOWBIT_HAVE_AVX512_BF16)
void linear_fp8_bf16act(const bf16_t* x, const uint8_t* q, Fp8Format fmt, const float* scale, int64_t scale_stride,
                        const float* bias, float* y, int64_t M, int64_t K, int64_t N, int64_t n0, int64_t n1) {
  // per channel: the float8 values themselves (exact in bfloat16), scaled after the sum
  static const float one = 1.f;
  const float* col_scale = scale_stride ? scale : nullptr;
  const float* dec_scale = scale_stride ? &one : scale;
  if (fmt == Fp8Format::E4M3FN)
    gemm_packed_bf16(Fp8Dec<true>{q, dec_scale, 0, K}, x, bias, y, M, K, N, n0, n1, col_scale);
  else
    gemm_packed_bf16(Fp8Dec<false>{q, dec_scale, 0, K}, x, bias, y, M, K, N, n0, n1, col_scale);
}

void linear_q8_0_bf16act(const bf16_t* x, const uint8_t* blocks, const float* bias, float* y, int64_t M, int64_t K,
                         int64_t N, int64_t n0, int64_t n1) {
  gemm_packed_bf16(Q8Dec{blocks, K / kBlock * 34}, x, bias, y, M, K, N, n0, n1);
}

void linear_q4_0_bf16act(const bf16_t* x, const uint8_t* blocks, const float* bias, float* y, int64_t M, int64_t K,
                         int64_t N, int64_t n0, int64_t n1) {
  gemm_packed_bf16(Q4Dec{blocks, K / kBlock * 18}, x, bias, y, M, K, N, n0, n1);
}
#endif

}  // namespace lowbit::cpu::avx2
