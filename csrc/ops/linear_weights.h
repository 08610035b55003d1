// Checks of the weight arguments of the mixed-precision linear ops, shared by the CPU
// and the CUDA glue so that every device rejects bad input with the same message. Each
// returns the weight's shape; the checks of x and bias are in linear_common.h.
#pragma once
#include <ATen/ATen.h>

#include <optional>

#include "cpu/gguf.h"  // kGgufBlockElems
#include "ops/checks.h"

namespace lowbit::ops {

struct WeightShape {
  int64_t N, K;
  int64_t group_size;  // linear_intx only
};

// linear_intx: packed uint8 [N, K * bits / 8], scale float32 [N, K / group_size], zero_point of
// the same shape, float32 or int8 (integer zero points in a quarter of the bytes).
inline WeightShape check_intx_weight(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& scale,
                                     const std::optional<at::Tensor>& zero_point, int64_t bits) {
  constexpr const char* op = "linear_intx";
  TORCH_CHECK(bits == 2 || bits == 4, "lowbit.", op, ": expected bits 2 or 4, got ", bits,
              bits == 8 ? " (8-bit codes use lowbit.linear_int8)" : "");
  check_dtype(packed, at::kByte, op, "packed");
  TORCH_CHECK(packed.dim() == 2, "lowbit.", op, ": expected packed of rank 2 ([N, K * bits / 8]), got shape ",
              packed.sizes());
  check_dtype(scale, at::kFloat, op, "scale");
  TORCH_CHECK(scale.dim() == 2, "lowbit.", op, ": expected scale of rank 2 ([N, K / group_size]), got shape ",
              scale.sizes());
  check_same_device(packed, x, op, "packed", "x");
  check_same_device(scale, x, op, "scale", "x");
  const int64_t N = packed.size(0);
  const int64_t K = packed.size(1) * 8 / bits;
  TORCH_CHECK(scale.size(0) == N, "lowbit.", op, ": expected scale with N = ", N, " rows (packed has N rows), got shape ",
              scale.sizes());
  const int64_t G = scale.size(1);
  TORCH_CHECK(G >= 1 && K % G == 0, "lowbit.", op, ": expected scale of shape [N, K / group_size] with K = ", K,
              " (from packed of shape ", packed.sizes(), ", bits = ", bits, "), got ", scale.sizes());
  const int64_t group_size = K / G;
  TORCH_CHECK(K == 0 || group_size % 8 == 0, "lowbit.", op,
              ": expected group_size = K / scale.size(1) to be a multiple of 8, got ", group_size, " (K = ", K,
              ", scale shape ", scale.sizes(), ")");
  check_zero_point(zero_point, scale, op, /*allow_int8=*/true);
  return {N, K, group_size};
}

// linear_int8: codes int8 [N, K], scale float32 [N, 1].
inline WeightShape check_int8_weight(const at::Tensor& x, const at::Tensor& codes, const at::Tensor& scale) {
  constexpr const char* op = "linear_int8";
  check_dtype(codes, at::kChar, op, "codes");
  TORCH_CHECK(codes.dim() == 2, "lowbit.linear_int8: expected codes of rank 2 ([N, K]), got shape ", codes.sizes());
  check_same_device(codes, x, op, "codes", "x");
  const int64_t N = codes.size(0), K = codes.size(1);
  check_dtype(scale, at::kFloat, op, "scale");
  check_same_device(scale, x, op, "scale", "x");
  TORCH_CHECK(scale.dim() == 2 && scale.size(0) == N && scale.size(1) == 1,
              "lowbit.linear_int8: expected scale of shape [", N, ", 1] (one per output channel), got ",
              scale.sizes());
  return {N, K, 0};
}

// linear_fp8: q float8 (e4m3fn / e5m2) [N, K], scale float32 [N, 1] or [1, 1].
inline WeightShape check_fp8_weight(const at::Tensor& x, const at::Tensor& q, const at::Tensor& scale) {
  constexpr const char* op = "linear_fp8";
  fp8_codes_format(q, op, "q");
  TORCH_CHECK(q.dim() == 2, "lowbit.", op, ": expected q of rank 2 ([N, K]), got shape ", q.sizes());
  check_same_device(q, x, op, "q", "x");
  const int64_t N = q.size(0), K = q.size(1);
  check_dtype(scale, at::kFloat, op, "scale");
  check_same_device(scale, x, op, "scale", "x");
  TORCH_CHECK(scale.dim() == 2 && scale.size(1) == 1 && (scale.size(0) == N || scale.size(0) == 1), "lowbit.", op,
              ": expected scale of shape [", N, ", 1] (per output channel) or [1, 1], got ", scale.sizes());
  return {N, K, 0};
}

// linear_q8_0 / linear_q4_0: GGUF blocks uint8 [N, K / 32 * block_bytes] (34 or 18 bytes).
inline WeightShape check_gguf_weight(const at::Tensor& x, const at::Tensor& blocks, const char* op,
                                     int64_t block_bytes) {
  check_dtype(blocks, at::kByte, op, "blocks");
  TORCH_CHECK(blocks.dim() == 2, "lowbit.", op, ": expected blocks of rank 2 ([N, K / 32 * ", block_bytes,
              "]), got shape ", blocks.sizes());
  check_same_device(blocks, x, op, "blocks", "x");
  TORCH_CHECK(blocks.size(1) % block_bytes == 0, "lowbit.", op,
              ": expected the last axis of blocks to be a multiple of ", block_bytes,
              " bytes (one block of 32 weights each), got ", blocks.size(1), " (shape ", blocks.sizes(), ")");
  return {blocks.size(0), blocks.size(1) / block_bytes * cpu::kGgufBlockElems, 0};
}

}  // namespace lowbit::ops
