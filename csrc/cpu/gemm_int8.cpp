#include "cpu/gemm_int8.h"

#include <cmath>
#include <limits>

#include "cpu/isa.h"
#include "cpu/panel_gemm.h"

namespace lowbit::cpu {

namespace portable {

void quantize_rows_int8(const float* x, int64_t M, int64_t K, int8_t* xq, int64_t ldq, float* sx) {
  for (int64_t m = 0; m < M; ++m) {
    const float* xr = x + m * K;
    int8_t* qr = xq + m * ldq;
    float amax = 0.f;
    bool finite = true;
    for (int64_t k = 0; k < K; ++k) {
      const float a = std::fabs(xr[k]);
      finite &= a <= std::numeric_limits<float>::max();  // false for inf and NaN
      amax = a > amax ? a : amax;
    }
    const float s = finite ? amax / 127.f : std::numeric_limits<float>::quiet_NaN();
    sx[m] = s;
    if (!(s > 0.f)) {  // zero row, tiny row whose scale underflows, or non-finite row
      for (int64_t k = 0; k < ldq; ++k) qr[k] = 0;
      continue;
    }
    for (int64_t k = 0; k < K; ++k) {
      float q = std::nearbyint(xr[k] / s);  // round half to even (default FP environment)
      q = q > 127.f ? 127.f : (q < -127.f ? -127.f : q);
      qr[k] = static_cast<int8_t>(q);
    }
    for (int64_t k = K; k < ldq; ++k) qr[k] = 0;
  }
}

void linear_int8_f32act(const float* x, int64_t M, int64_t K, const int8_t* codes, const float* scale,
                        const float* bias, float* y, int64_t ldy, int64_t n0, int64_t n1) {
  for (int64_t m = 0; m < M; ++m) {
    const float* xr = x + m * K;
    for (int64_t n = n0; n < n1; ++n) {
      const int8_t* w = codes + n * K;
      // Four interleaved partial sums, added pairwise at the end: a fixed order.
      float s[4] = {0.f, 0.f, 0.f, 0.f};
      int64_t k = 0;
      for (; k + 4 <= K; k += 4)
        for (int j = 0; j < 4; ++j) s[j] += static_cast<float>(w[k + j]) * xr[k + j];
      for (; k < K; ++k) s[0] += static_cast<float>(w[k]) * xr[k];
      const float acc = (s[0] + s[1]) + (s[2] + s[3]);
      float v = acc * scale[n];
      if (bias) v += bias[n];
      y[m * ldy + n] = v;
    }
  }
}

void linear_int8_int8act(const int8_t* xq, int64_t ldq, const float* sx, int64_t M, int64_t K,
                         const int8_t* codes, const float* scale, const float* bias, float* y, int64_t ldy,
                         int64_t n0, int64_t n1) {
  for (int64_t m = 0; m < M; ++m) {
    const int8_t* xr = xq + m * ldq;
    for (int64_t n = n0; n < n1; ++n) {
      const int8_t* w = codes + n * K;
      int32_t acc = 0;
      for (int64_t k = 0; k < K; ++k) acc += static_cast<int32_t>(w[k]) * xr[k];
      float v = static_cast<float>(acc) * sx[m] * scale[n];
      if (bias) v += bias[n];
      y[m * ldy + n] = v;
    }
  }
}

}  // namespace portable

void quantize_rows_int8(const float* x, int64_t M, int64_t K, int8_t* xq, int64_t ldq, float* sx) {
  LOWBIT_CPU_DISPATCH(quantize_rows_int8, x, M, K, xq, ldq, sx);
}

void linear_int8_f32act(const float* x, int64_t M, int64_t K, const int8_t* codes, const float* scale,
                        const float* bias, float* y, int64_t ldy, int64_t n0, int64_t n1) {
  LOWBIT_CPU_DISPATCH(linear_int8_f32act, x, M, K, codes, scale, bias, y, ldy, n0, n1);
}

void linear_int8_int8act(const int8_t* xq, int64_t ldq, const float* sx, int64_t M, int64_t K,
                         const int8_t* codes, const float* scale, const float* bias, float* y, int64_t ldy,
                         int64_t n0, int64_t n1) {
  LOWBIT_CPU_DISPATCH3(linear_int8_int8act, xq, ldq, sx, M, K, codes, scale, bias, y, ldy, n0, n1);
}

void linear_int8_bf16act(const bf16_t* x, int64_t M, int64_t K, const int8_t* codes, const float* scale,
                         const float* bias, float* y, int64_t ldy, int64_t n0, int64_t n1) {
  LOWBIT_BF16_DISPATCH(linear_int8_bf16act, x, M, K, codes, scale, bias, y, ldy, n0, n1);
}

}  // namespace lowbit::cpu
