// Portable float8 / GGUF linear kernels and the run-time dispatch to AVX2.
#include "cpu/gemm_fp8_gguf.h"

#include <cmath>
#include <cstring>

#include "cpu/isa.h"
#include "lowbit/float_types.h"

namespace lowbit::cpu {

namespace portable {
namespace {

constexpr int64_t kBlock = 32;

// Exact float8 -> float32 (subnormals, NaN; e5m2 infinities).
float fp8_to_float(uint8_t b, Fp8Format fmt) {
  if (fmt == Fp8Format::E5M2) return half_to_float(static_cast<uint16_t>(b << 8));
  const bool neg = b & 0x80;
  const int e = (b >> 3) & 0xf, m = b & 7;
  float v;
  if (e == 15 && m == 7) v = NAN;
  else if (e == 0) v = std::ldexp(static_cast<float>(m), -9);
  else v = std::ldexp(static_cast<float>(8 + m), e - 10);
  return neg ? -v : v;
}

struct Fp8Table {
  float v[2][256];
  Fp8Table() {
    for (int i = 0; i < 256; ++i) {
      v[0][i] = fp8_to_float(static_cast<uint8_t>(i), Fp8Format::E4M3FN);
      v[1][i] = fp8_to_float(static_cast<uint8_t>(i), Fp8Format::E5M2);
    }
  }
};

float load_scale(const uint8_t* b) { return half_to_float(static_cast<uint16_t>(b[0] | (b[1] << 8))); }

// Q4_0 code i (0..31) of a block's 16 nibble bytes, offset removed.
int q4_code(const uint8_t* qs, int i) { return (i < 16 ? (qs[i] & 0xf) : (qs[i - 16] >> 4)) - 8; }

}  // namespace

void quantize_act_q8(const float* x, int8_t* qx, float* dx, int32_t* sx, int64_t rows, int64_t K) {
  const int64_t nb = K / kBlock;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t b = 0; b < nb; ++b) {
      const float* xb = x + r * K + b * kBlock;
      int8_t* qb = qx + r * K + b * kBlock;
      float amax = 0.f;
      for (int i = 0; i < kBlock; ++i) {
        const float a = std::fabs(xb[i]);
        amax = (a > amax || a != a) && amax == amax ? a : amax;  // NaN is sticky
      }
      // a NaN or inf in the block makes its scale NaN, so its outputs are NaN
      const float d = amax <= 3.4028234663852886e38f ? amax / 127.f : NAN;
      const float id = d != 0.f ? 1.f / d : 0.f;
      int32_t s = 0;
      for (int i = 0; i < kBlock; ++i) {
        const float v = xb[i] * id;
        // |v| <= 127 up to rounding of id; clamp keeps int8 range in any case.
        const float c = std::fmin(127.f, std::fmax(-127.f, std::nearbyint(v)));
        qb[i] = static_cast<int8_t>(c);
        s += qb[i];
      }
      dx[r * nb + b] = d;
      sx[r * nb + b] = s;
    }
}

void linear_fp8(const float* x, const uint8_t* q, Fp8Format fmt, const float* scale, int64_t scale_stride,
                const float* bias, float* y, int64_t M, int64_t K, int64_t N, int64_t n0, int64_t n1) {
  static const Fp8Table table;
  const float* lut = table.v[fmt == Fp8Format::E5M2 ? 1 : 0];
  for (int64_t n = n0; n < n1; ++n) {
    const uint8_t* w = q + n * K;
    const float s = scale[n * scale_stride];
    for (int64_t m = 0; m < M; ++m) {
      const float* xr = x + m * K;
      float acc = 0.f;
      for (int64_t k = 0; k < K; ++k) acc += lut[w[k]] * xr[k];
      y[m * N + n] = acc * s + (bias ? bias[n] : 0.f);
    }
  }
}

void linear_q8_0_f32act(const float* x, const uint8_t* blocks, const float* bias, float* y, int64_t M, int64_t K,
                        int64_t N, int64_t n0, int64_t n1) {
  const int64_t nb = K / kBlock, row_bytes = nb * 34;
  for (int64_t n = n0; n < n1; ++n)
    for (int64_t m = 0; m < M; ++m) {
      const float* xr = x + m * K;
      float acc = 0.f;
      for (int64_t b = 0; b < nb; ++b) {
        const uint8_t* blk = blocks + n * row_bytes + b * 34;
        const auto* qs = reinterpret_cast<const int8_t*>(blk + 2);
        float t = 0.f;
        for (int i = 0; i < kBlock; ++i) t += static_cast<float>(qs[i]) * xr[b * kBlock + i];
        acc += load_scale(blk) * t;
      }
      y[m * N + n] = acc + (bias ? bias[n] : 0.f);
    }
}

void linear_q4_0_f32act(const float* x, const uint8_t* blocks, const float* bias, float* y, int64_t M, int64_t K,
                        int64_t N, int64_t n0, int64_t n1) {
  const int64_t nb = K / kBlock, row_bytes = nb * 18;
  for (int64_t n = n0; n < n1; ++n)
    for (int64_t m = 0; m < M; ++m) {
      const float* xr = x + m * K;
      float acc = 0.f;
      for (int64_t b = 0; b < nb; ++b) {
        const uint8_t* blk = blocks + n * row_bytes + b * 18;
        float t = 0.f;
        for (int i = 0; i < kBlock; ++i) t += static_cast<float>(q4_code(blk + 2, i)) * xr[b * kBlock + i];
        acc += load_scale(blk) * t;
      }
      y[m * N + n] = acc + (bias ? bias[n] : 0.f);
    }
}

void linear_q8_0_int8act(const int8_t* qx, const float* dx, const int32_t* /*sx*/, const uint8_t* blocks,
                         const float* bias, float* y, int64_t M, int64_t K, int64_t N, int64_t n0, int64_t n1) {
  const int64_t nb = K / kBlock, row_bytes = nb * 34;
  for (int64_t n = n0; n < n1; ++n)
    for (int64_t m = 0; m < M; ++m) {
      float acc = 0.f;
      for (int64_t b = 0; b < nb; ++b) {
        const uint8_t* blk = blocks + n * row_bytes + b * 34;
        const auto* qs = reinterpret_cast<const int8_t*>(blk + 2);
        const int8_t* xb = qx + m * K + b * kBlock;
        int32_t dot = 0;
        for (int i = 0; i < kBlock; ++i) dot += int32_t{qs[i]} * xb[i];
        acc += load_scale(blk) * dx[m * nb + b] * static_cast<float>(dot);
      }
      y[m * N + n] = acc + (bias ? bias[n] : 0.f);
    }
}

void linear_q4_0_int8act(const int8_t* qx, const float* dx, const int32_t* sx, const uint8_t* blocks,
                         const float* bias, float* y, int64_t M, int64_t K, int64_t N, int64_t n0, int64_t n1) {
  const int64_t nb = K / kBlock, row_bytes = nb * 18;
  for (int64_t n = n0; n < n1; ++n)
    for (int64_t m = 0; m < M; ++m) {
      float acc = 0.f;
      for (int64_t b = 0; b < nb; ++b) {
        const uint8_t* blk = blocks + n * row_bytes + b * 18;
        const int8_t* xb = qx + m * K + b * kBlock;
        // stored nibbles u = code + 8: sum code * qx = sum u * qx - 8 * sum qx
        int32_t dot = 0;
        for (int i = 0; i < 16; ++i) dot += (blk[2 + i] & 0xf) * xb[i] + (blk[2 + i] >> 4) * xb[16 + i];
        dot -= 8 * sx[m * nb + b];
        acc += load_scale(blk) * dx[m * nb + b] * static_cast<float>(dot);
      }
      y[m * N + n] = acc + (bias ? bias[n] : 0.f);
    }
}

}  // namespace portable


void quantize_act_q8(const float* x, int8_t* qx, float* dx, int32_t* sx, int64_t rows, int64_t K) {
  LOWBIT_CPU_DISPATCH(quantize_act_q8, x, qx, dx, sx, rows, K);
}
void linear_fp8(const float* x, const uint8_t* q, Fp8Format fmt, const float* scale, int64_t scale_stride,
                const float* bias, float* y, int64_t M, int64_t K, int64_t N, int64_t n0, int64_t n1) {
  LOWBIT_CPU_DISPATCH(linear_fp8, x, q, fmt, scale, scale_stride, bias, y, M, K, N, n0, n1);
}
void linear_q8_0_f32act(const float* x, const uint8_t* blocks, const float* bias, float* y, int64_t M, int64_t K,
                        int64_t N, int64_t n0, int64_t n1) {
  LOWBIT_CPU_DISPATCH(linear_q8_0_f32act, x, blocks, bias, y, M, K, N, n0, n1);
}
void linear_q4_0_f32act(const float* x, const uint8_t* blocks, const float* bias, float* y, int64_t M, int64_t K,
                        int64_t N, int64_t n0, int64_t n1) {
  LOWBIT_CPU_DISPATCH(linear_q4_0_f32act, x, blocks, bias, y, M, K, N, n0, n1);
}
void linear_q8_0_int8act(const int8_t* qx, const float* dx, const int32_t* sx, const uint8_t* blocks,
                         const float* bias, float* y, int64_t M, int64_t K, int64_t N, int64_t n0, int64_t n1) {
  LOWBIT_CPU_DISPATCH(linear_q8_0_int8act, qx, dx, sx, blocks, bias, y, M, K, N, n0, n1);
}
void linear_q4_0_int8act(const int8_t* qx, const float* dx, const int32_t* sx, const uint8_t* blocks,
                         const float* bias, float* y, int64_t M, int64_t K, int64_t N, int64_t n0, int64_t n1) {
  LOWBIT_CPU_DISPATCH(linear_q4_0_int8act, qx, dx, sx, blocks, bias, y, M, K, N, n0, n1);
}


void linear_fp8_bf16act(const bf16_t* x, const uint8_t* q, Fp8Format fmt, const float* scale, int64_t scale_stride,
                        const float* bias, float* y, int64_t M, int64_t K, int64_t N, int64_t n0, int64_t n1) {
  LOWBIT_BF16_DISPATCH(linear_fp8_bf16act, x, q, fmt, scale, scale_stride, bias, y, M, K, N, n0, n1);
}
void linear_q8_0_bf16act(const bf16_t* x, const uint8_t* blocks, const float* bias, float* y, int64_t M, int64_t K,
                         int64_t N, int64_t n0, int64_t n1) {
  LOWBIT_BF16_DISPATCH(linear_q8_0_bf16act, x, blocks, bias, y, M, K, N, n0, n1);
}
void linear_q4_0_bf16act(const bf16_t* x, const uint8_t* blocks, const float* bias, float* y, int64_t M, int64_t K,
                         int64_t N, int64_t n0, int64_t n1) {
  LOWBIT_BF16_DISPATCH(linear_q4_0_bf16act, x, blocks, bias, y, M, K, N, n0, n1);
}

}  // namespace lowbit::cpu
