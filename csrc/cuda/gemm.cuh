// Mixed-precision GEMMs on CUDA (issue 5): host launchers on raw pointers, no torch header.
//
//   y[m, n] = sum_k x[m, k] * W[n, k]   (then row scale, column scale, bias, rounding; see below)
//
// Weights are read in their CANONICAL layout (docs/formats.md): packed 4/2-bit codes
// [N, K * bits / 8] with float32 scale / zero_point [N, K / group_size], int8 codes [N, K],
// float8 codes [N, K]. There is no CUDA-specific weight layout (docs/cuda.md ("Mixed-precision GEMMs") says why).
//
// Paths (the glue in csrc/ops/cuda/cuda_linear_*.cpp picks one):
//   1. wx_gemm: small M (<= 64 by default), 16-bit activations: tensor-core mma.sync kernel that
//      dequantizes weights in registers (gemm_wx_kernel.cuh), optional split-K + finish kernel.
//   2. dequantize_weight + cuBLAS (at::mm in the glue): large M, float32 activations, shapes
//      the mma kernel does not take.
//   3. quantize_rows_int8 + at::_int_mm + finish: W8A8 (int8 activations) with large M.
// Every launcher returns cudaGetLastError() after its launch (cudaSuccess when nothing ran).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace lowbit::cuda::gemm {

enum class WeightKind : int { Int4 = 0, Int2 = 1, Int8 = 2, Fp8E4M3 = 3, Fp8E5M2 = 4 };
// Element types of activations and outputs. Act16 is the mma input type (F16 or BF16 only).
enum class ElemType : int { F32 = 0, F16 = 1, BF16 = 2 };

// Elements of one weight row that one 16-byte load covers (one lane, one k-step chunk).
inline int chunk_elems(WeightKind k) { return k == WeightKind::Int4 ? 32 : (k == WeightKind::Int2 ? 64 : 16); }
inline int weight_bits(WeightKind k) { return k == WeightKind::Int4 ? 4 : (k == WeightKind::Int2 ? 2 : 8); }

// ---- path 1: the small-M tensor-core kernel --------------------------------------------
// Requirements checked by wx_gemm_supported (the glue falls back to path 2 otherwise):
// act F16/BF16; K % chunk_elems == 0 for Int2 (64), K % 32 for Int4, K % 16 for 8-bit kinds;
// for Int4/Int2 group_size % 32 == 0; x, w 16-byte aligned; M, N >= 1.
struct WxPlan {
  int mt = 1;          // 16-row M tiles per block (1, 2 or 4)
  int kw = 1;          // warps of a block that split K (1, 2, 4); the other warps split N
  int splits = 1;      // blocks along K; > 1 needs the float32 workspace and finish()
  int64_t blocks_n = 0, mchunks = 0, ksteps = 0;
};

struct WxArgs {
  const void* x = nullptr;          // [M, K] act (row-major, contiguous, 16-byte aligned)
  const uint8_t* w = nullptr;       // weight bytes, row n at w + n * K * bits / 8
  const float* scale = nullptr;     // Int4/Int2: [N, G]; 8-bit kinds: column scale (see col_scale)
  const float* zero_point = nullptr;  // Int4/Int2: [N, G] or null (symmetric)
  int64_t M = 0, N = 0, K = 0;
  int64_t groups = 1;               // G = K / group_size (Int4/Int2)
  const float* row_scale = nullptr;   // [M] or null: multiplies row m (W8A8's activation scale)
  const float* col_scale = nullptr;   // [N] or [1] or null: multiplies column n (8-bit kinds)
  int64_t col_scale_stride = 1;       // 1: per column; 0: one scale for all
  const float* bias = nullptr;        // [N] float32 or null
  void* y = nullptr;                  // [M, N] in act type when out_final (splits == 1)
  float* partials = nullptr;          // [splits, M, N] float32 otherwise
  bool out_final = true;              // write y directly (needs splits == 1 and y of act type)
};

bool wx_gemm_supported(WeightKind kind, int64_t K, int64_t group_size);
// Chooses tiles and split-K for a device (cached occupancy and SM count; no stream work).
// kw_override / splits_override > 0 force those choices (tuning; 0 = automatic).
WxPlan plan_wx_gemm(WeightKind kind, ElemType act, int64_t M, int64_t N, int64_t K, int device,
                    int kw_override = 0, int splits_override = 0);
cudaError_t launch_wx_gemm(WeightKind kind, ElemType act, const WxArgs& args, const WxPlan& plan,
                           cudaStream_t stream);

// ---- finish: split-K sum, row / column scale, bias, rounding ---------------------------
// y[m, n] = round_out(((sum_z acc[z, m, n]) * row_scale[m]) * col_scale[n * cs_stride] + bias[n])
// evaluated left to right in float32 without fused multiply-add; absent factors are skipped.
// acc is float32 (split-K partials, float GEMM) or int32 (at::_int_mm; splits must be 1,
// converted with round-to-nearest like the CPU's float(acc)).
cudaError_t launch_finish_f32acc(const float* acc, int splits, int64_t M, int64_t N, const float* row_scale,
                                 const float* col_scale, int64_t cs_stride, const float* bias, void* y,
                                 ElemType out, cudaStream_t stream);
cudaError_t launch_finish_i32acc(const int32_t* acc, int64_t M, int64_t N, const float* row_scale,
                                 const float* col_scale, int64_t cs_stride, const float* bias, void* y,
                                 ElemType out, cudaStream_t stream);

// ---- path 2: dequantize rows [n0, n1) of a weight into out [n1 - n0, K] ------------------
// out[r, k] = round_out((code - zp) * scale) for Int4/Int2 ((code - zp) then * scale, float32),
// code * scale[n * cs_stride] for Int8, decode(code) * scale[n * cs_stride] for float8.
// w 16-byte aligned; K % 8 == 0 for Int4/Int2 (the packed format guarantees it).
cudaError_t launch_dequantize_weight(WeightKind kind, const uint8_t* w, const float* scale, const float* zero_point,
                                     int64_t groups, int64_t cs_stride, int64_t N, int64_t K, int64_t n0,
                                     int64_t n1, void* out, ElemType out_type, cudaStream_t stream);

// ---- path 3 / W8A8: per-token int8 quantization of activations -------------------------
// Per row m of x [M, K] (read as float32): sx[m] = max_k |x| / 127 (IEEE division; NaN when the row
// holds NaN or +-inf), codes = clamp(rint(x / sx), -127, 127) (IEEE division, ties to even), all 0
// when !(sx > 0). Codes are written as int8 (code_type < 0) or as the float values of the codes in
// ElemType code_type (exact: |code| <= 127), row-major [M, K]. Bit-identical to the CPU's
// quantize_rows_int8.
cudaError_t launch_quantize_rows_int8(const void* x, ElemType x_type, int64_t M, int64_t K, void* codes,
                                      int code_type, float* sx, cudaStream_t stream);
constexpr int kCodesInt8 = -1;

// Compute capability major of a device (cached), for the sm_80 requirement of the glue.
int device_cc_major(int device);

}  // namespace lowbit::cuda::gemm
