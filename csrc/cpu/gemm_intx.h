// y = x @ dequantize(W).T for packed 2/4-bit weights with group-wise float32
// scale / zero_point (linear_intx: W4A16, W2A16), on raw pointers.
//
// A call runs in two steps so that the glue can thread each one:
//   1. intx_prepare(): once per row of x, turn x into the activation workspace the
//      chosen kernel reads (float32 in the kernel's element order, or int8 blocks).
//   2. intx_compute(): for a range of output channels [n0, n1), every row of x.
// The plan (intx_plan) fixes the kernel, hence the workspace layout, for the call.
#pragma once
#include <cstddef>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "cpu/no_contract.h"
#include "lowbit/float_types.h"

namespace lowbit::cpu {

// Group zero points: float32, or int8 when every zero point is an integer (minmax
// quantization's are, docs/formats.md): the same values in 1 byte per group instead of 4,
// which the memory-bound small-M kernels read with every weight row. Neither: symmetric
// (every zero point 0). Scalar reads go through operator[]; a vector loop may test f32 / i8.
struct ZeroPoints {
  const float* f32 = nullptr;
  const int8_t* i8 = nullptr;
  explicit operator bool() const { return f32 != nullptr || i8 != nullptr; }
  float operator[](int64_t i) const { return f32 ? f32[i] : (i8 ? static_cast<float>(i8[i]) : 0.f); }
  // the zero points from element `off` on (a row of [N, G]); empty stays empty
  ZeroPoints operator+(int64_t off) const { return {f32 ? f32 + off : nullptr, i8 ? i8 + off : nullptr}; }
};

// Canonical weight (docs/formats.md): packed [N, K * bits / 8] (K % 8 == 0),
// scale float32 and zero_point [N, K / group_size]; zero_point may be empty (symmetric).
struct IntxWeights {
  const uint8_t* packed;
  const float* scale;
  ZeroPoints zero_point;
  int64_t N, K, group_size;
  int bits;
};

enum class IntxKernel : int {
  PortableF32,   // float activations, plain C++
  PortableInt8,  // int8 activation blocks, plain C++
  Avx2F32,       // float activations, AVX2/FMA: x permuted per 16 (4-bit) / 32 (2-bit) elements
  Avx2Int8,      // int8 activation blocks, AVX2 maddubs: x permuted per 64 / 128 elements
  Avx2PackedF32, // float activations, M >= 32: weights decoded into float panels + 6x16 FMA microkernel
  Avx512Int8,    // int8 activation blocks, 4-bit, M > 1: AVX-512 VNNI tiles on the Avx2Int8 workspace
  Avx512PackedBf16,  // bfloat16 activations, M >= 32: weights decoded into bfloat16 panels + vdpbf16ps
  Avx512Bf16,        // 2/4-bit, small M: codes decoded to bfloat16 in registers + vdpbf16ps on x as x_parts bfloat16 terms
};

struct IntxPlan {
  IntxKernel kind;
  const char* name;  // for note_kernel: a string literal
  int x_parts = 0;   // Avx512Bf16: bfloat16 terms of each x element
};

// Elements of x that share one int8 scale on the int8-activation paths.
constexpr int64_t kIntxActBlock = 32;

// One block of x (float32) -> int8 codes with a symmetric float32 scale, scalar on purpose so that
// the portable and AVX2 kernels produce the same codes and scales: dx = amax / 127, q = rint(x * (127 / amax)).
// A block holding NaN or +-inf gets dx = NaN (its outputs become NaN), q = 0.
static inline float quantize_act_block(const float* v, int8_t* q) {
  float amax = 0.f;
  bool finite = true;
  for (int64_t i = 0; i < kIntxActBlock; ++i) {
    const float a = std::fabs(v[i]);
    finite &= a < std::numeric_limits<float>::infinity();
    amax = a > amax ? a : amax;
  }
  if (!finite) {
    std::memset(q, 0, kIntxActBlock);
    return std::numeric_limits<float>::quiet_NaN();
  }
  const float id = amax > 0.f ? 127.f / amax : 0.f;
  for (int64_t i = 0; i < kIntxActBlock; ++i) {
    float r = std::nearbyint(v[i] * id);
    r = r > 127.f ? 127.f : (r < -127.f ? -127.f : r);
    q[i] = static_cast<int8_t>(r);
  }
  return amax / 127.f;
}


// Chooses the kernel for this shape and ISA. int8_activations is a request: it is
// honoured when group_size % 32 == 0, else the exact float path runs (the plan's
// name says which). bf16_x: x is bfloat16 (which the bfloat16 panel path, when the
// CPU has it, reads as it is; intx_prepare must then be called with bf16_t).
// x_parts: how many bfloat16 terms the register-decoding AVX512_BF16 kernel may split
// each x element into (1 for bfloat16 x, 2 for float16 x, 3 for float32 x: exact; fewer
// for float32 x when the caller accepts it); 0 keeps that kernel out. With x_parts == 1
// the bfloat16 panel path may be planned for float32 x too: the caller then hands
// intx_prepare x rounded to bfloat16.
// Requires K % group_size == 0 and group_size % 8 == 0.
IntxPlan intx_plan(const IntxWeights& w, int64_t M, bool int8_activations, bool bf16_x, int x_parts);

// Bytes of activation workspace for M rows.
size_t intx_workspace_bytes(const IntxPlan& plan, const IntxWeights& w, int64_t M);

// Fills the workspace for rows [m0, m1) of x ([M, K], row-major).
template <typename T>
void intx_prepare(const IntxPlan& plan, const IntxWeights& w, const T* x, int64_t M, void* workspace, int64_t m0,
                  int64_t m1);

// y[m, n] = sum_k x[m, k] * W[n, k] (+ bias[n] when bias is not null) in float32, for all
// m < M and n in [n0, n1); y is [M, N] row-major. Deterministic: each output is summed in
// an order that depends only on the shapes, not on n0 / n1 or the thread count.
void intx_compute(const IntxPlan& plan, const IntxWeights& w, const void* workspace, int64_t M, const float* bias,
                  float* y, int64_t n0, int64_t n1);

namespace avx2 {
bool intx_f32_supported(const IntxWeights& w);
bool intx_int8_supported(const IntxWeights& w);
template <typename T>
void intx_prepare_f32(const IntxWeights& w, const T* x, int64_t M, float* xp, int64_t m0, int64_t m1);
template <typename T>
void intx_prepare_int8(const IntxWeights& w, const T* x, int64_t M, void* ws, int64_t m0, int64_t m1);
void intx_compute_f32(const IntxWeights& w, const float* xp, int64_t M, const float* bias, float* y, int64_t n0,
                      int64_t n1);
void intx_compute_int8(const IntxWeights& w, const void* ws, int64_t M, const float* bias, float* y, int64_t n0,
                       int64_t n1);
// x: float32 [M, K] in natural order (the portable prepare).
void intx_compute_packed(const IntxWeights& w, const float* x, int64_t M, const float* bias, float* y, int64_t n0,
                         int64_t n1);
// x: bfloat16 [M, K] in natural order; needs cpu/panel_gemm.h's packed_bf16_gemm(M, K).
void intx_compute_packed_bf16(const IntxWeights& w, const bf16_t* x, int64_t M, const float* bias, float* y,
                              int64_t n0, int64_t n1);
}  // namespace avx2

namespace avx512bf16 {
// 2- and 4-bit weights whose group_size (>= 32) divides or is a multiple of the 32-byte
// unit (64 elements at 4 bits, 128 at 2 bits) (cpu/avx512bf16/gemm_intx_bf16.cpp).
bool intx_bf16_supported(const IntxWeights& w);
// Workspace: x as `parts` (1-3) bfloat16 terms, each [M, K rounded up to the unit]
// permuted per unit into 8 / bits streams, then their sums per group, float32 [M, G].
size_t intx_bf16_workspace_bytes(const IntxWeights& w, int64_t M, int parts);
template <typename T>
void intx_prepare_bf16(const IntxWeights& w, const T* x, int64_t M, int parts, void* ws, int64_t m0, int64_t m1);
void intx_compute_bf16(const IntxWeights& w, const void* ws, int64_t M, int parts, const float* bias, float* y,
                        int64_t n0, int64_t n1);
}  // namespace avx512bf16

namespace avx512 {
// 4-bit weights with K and group_size multiples of 128 (and avx2::intx_int8_supported).
bool intx_int8_supported(const IntxWeights& w);
// Reads the workspace of avx2::intx_prepare_int8.
void intx_compute_int8(const IntxWeights& w, const void* ws, int64_t M, const float* bias, float* y, int64_t n0,
                       int64_t n1);
}  // namespace avx512

// Shared layout of the int8 workspace (both ISAs): q int8 [M, K], dx float [M, K/32],
// lane scales float [M, K/8] (AVX2 only; dx expanded to the lanes of the kernel),
// xsum float [M, G] = sum over the group's blocks of dx * sum(q).
struct IntxInt8Ws {
  int8_t* q;
  float* dx;
  float* lane_dx;
  float* xsum;
};
inline IntxInt8Ws intx_int8_ws(void* ws, int64_t M, int64_t K, int64_t G) {
  char* p = static_cast<char*>(ws);
  IntxInt8Ws r;
  const int64_t qbytes = (M * K + 63) / 64 * 64;
  r.q = reinterpret_cast<int8_t*>(p);
  r.dx = reinterpret_cast<float*>(p + qbytes);
  r.lane_dx = r.dx + M * (K / kIntxActBlock);
  r.xsum = r.lane_dx + M * (K / 8);
  (void)G;
  return r;
}
// The output of the AVX2 / AVX-512 int8 paths from sum = sum_k u[k] * dx * q[k] * scale, where
// the stored fields are u = code + 2^(bits-1): takes (2^(bits-1) + zp) * scale * sum(x) back
// out per group (xsum is the [G] row of the workspace), then adds the bias.
inline float intx_int8_finish(const IntxWeights& w, const float* xsum, int64_t n, float sum, const float* bias) {
  const int64_t G = w.K / w.group_size;
  const float off = static_cast<float>(1 << (w.bits - 1));
  const float* srow = w.scale + n * G;
  float c = 0.f;
  if (w.zero_point) {
    // no_contract: the same rounding whether the compiler vectorizes the products (float32
    // zero points) or fuses them into FMAs (int8 ones): both forms give identical outputs
    const ZeroPoints zrow = w.zero_point + n * G;
    for (int64_t gi = 0; gi < G; ++gi) c += no_contract(srow[gi] * (off + zrow[gi]) * xsum[gi]);
  } else {
    for (int64_t gi = 0; gi < G; ++gi) c += no_contract(srow[gi] * off * xsum[gi]);
  }
  float v = sum - c;
  if (bias) v += bias[n];
  return v;
}

inline size_t intx_int8_ws_bytes(int64_t M, int64_t K, int64_t G) {
  const int64_t qbytes = (M * K + 63) / 64 * 64;
  return static_cast<size_t>(qbytes + 4 * (M * (K / kIntxActBlock) + M * (K / 8) + M * G));
}

}  // namespace lowbit::cpu
