// Input checks shared by every op's glue. Each names the op, the argument, what
// was expected and what was given, so that a bad call reads as a sentence.
#pragma once
#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <optional>
#include <string>

#include "lowbit/float_types.h"
#include "lowbit/scale_layout.h"

namespace lowbit::ops {

inline bool is_float_dtype(at::ScalarType t) {
  return t == at::kFloat || t == at::kHalf || t == at::kBFloat16;
}

inline FloatType float_type_of(at::ScalarType t) {
  return t == at::kFloat ? FloatType::F32 : (t == at::kHalf ? FloatType::F16 : FloatType::BF16);
}

// Calls fn(static_cast<T*>(nullptr)) with T the kernel element type (float,
// half_t, bf16_t) of a float dtype already checked by check_float.
template <class Fn> void with_float_type(at::ScalarType t, Fn&& fn) {
  switch (t) {
    case at::kFloat: fn(static_cast<float*>(nullptr)); break;
    case at::kHalf: fn(static_cast<half_t*>(nullptr)); break;
    default: fn(static_cast<bf16_t*>(nullptr)); break;
  }
}

inline void check_float(const at::Tensor& t, const char* op, const char* arg) {
  TORCH_CHECK(is_float_dtype(t.scalar_type()), "lowbit.", op, ": expected ", arg,
              " of dtype float32, float16 or bfloat16, got ", t.scalar_type());
}

inline void check_float_dtype_arg(at::ScalarType t, const char* op, const char* arg) {
  TORCH_CHECK(is_float_dtype(t), "lowbit.", op, ": expected ", arg,
              " to be torch.float32, torch.float16 or torch.bfloat16, got ", t);
}

inline bool is_fp8(at::ScalarType t) { return t == at::kFloat8_e4m3fn || t == at::kFloat8_e5m2; }
inline Fp8Format fp8_format_of(at::ScalarType t) {
  return t == at::kFloat8_e4m3fn ? Fp8Format::E4M3FN : Fp8Format::E5M2;
}

// A float8 dtype argument (`dtype` of the float8 quantizers) -> its format.
inline Fp8Format fp8_format_arg(at::ScalarType t, const char* op) {
  TORCH_CHECK(is_fp8(t), "lowbit.", op, ": expected dtype torch.float8_e4m3fn or torch.float8_e5m2, got ", t);
  return fp8_format_of(t);
}

// A float8 code tensor (`arg` of the dequantizer and the linear op) -> its format.
inline Fp8Format fp8_codes_format(const at::Tensor& q, const char* op, const char* arg) {
  TORCH_CHECK(is_fp8(q.scalar_type()), "lowbit.", op, ": expected ", arg,
              " of dtype torch.float8_e4m3fn or torch.float8_e5m2, got ", q.scalar_type());
  return fp8_format_of(q.scalar_type());
}

inline void check_dtype(const at::Tensor& t, at::ScalarType want, const char* op, const char* arg) {
  TORCH_CHECK(t.scalar_type() == want, "lowbit.", op, ": expected ", arg, " of dtype ", want,
              ", got ", t.scalar_type());
}

inline void check_same_device(const at::Tensor& t, const at::Tensor& ref, const char* op,
                              const char* arg, const char* ref_arg) {
  TORCH_CHECK(t.device() == ref.device(), "lowbit.", op, ": expected ", arg, " on the device of ",
              ref_arg, " (", ref.device(), "), got ", t.device());
}

// The CUDA implementations take CUDA tensors only (the dispatcher routes on any argument).
inline void check_cuda(const at::Tensor& t, const char* op, const char* arg) {
  TORCH_CHECK(t.is_cuda(), "lowbit.", op, ": expected ", arg, " on a CUDA device, got ", t.device());
}

inline void check_bits(int64_t bits, const char* op) {
  TORCH_CHECK(bits == 2 || bits == 4 || bits == 8, "lowbit.", op,
              ": expected bits in {2, 4, 8}, got ", bits);
}

inline int64_t qmin_of(int64_t bits) { return -(int64_t{1} << (bits - 1)); }
inline int64_t qmax_of(int64_t bits) { return (int64_t{1} << (bits - 1)) - 1; }

inline int64_t wrap_axis(int64_t axis, int64_t dim, const char* op) {
  TORCH_CHECK(dim > 0, "lowbit.", op, ": per-axis parameters need a tensor of rank >= 1, got a 0-d tensor");
  TORCH_CHECK(axis >= -dim && axis < dim, "lowbit.", op, ": expected axis in [", -dim, ", ", dim - 1,
              "] for a tensor of rank ", dim, ", got ", axis);
  return axis < 0 ? axis + dim : axis;
}

// The layout and the (keepdim) shape of the parameters that choose_qparams
// returns for a given granularity: per tensor (no axis, no group), per axis,
// or per group of `group_size` consecutive elements along the last axis.
struct ParamShape {
  ScaleLayout layout;
  std::vector<int64_t> shape;
};

inline ParamShape param_shape_for(const at::Tensor& x, std::optional<int64_t> axis,
                                  std::optional<int64_t> group_size, const char* op) {
  const int64_t dim = x.dim();
  TORCH_CHECK(!(axis.has_value() && group_size.has_value()), "lowbit.", op,
              ": pass either axis (per-axis) or group_size (per-group along the last axis), not both");
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  if (group_size.has_value()) {
    const int64_t g = *group_size;
    TORCH_CHECK(dim >= 1, "lowbit.", op, ": per-group parameters need a tensor of rank >= 1, got a 0-d tensor");
    const int64_t k = x.size(-1);
    TORCH_CHECK(g > 0, "lowbit.", op, ": expected group_size > 0, got ", g);
    TORCH_CHECK(k % g == 0, "lowbit.", op, ": group_size ", g, " does not divide the last axis of size ", k,
                " (input shape ", x.sizes(), ")");
    shape.back() = k / g;
    return {ScaleLayout{1, x.numel() / g, g}, shape};
  }
  if (axis.has_value()) {
    const int64_t a = wrap_axis(*axis, dim, op);
    int64_t outer = 1, inner = 1;
    for (int64_t d = 0; d < a; ++d) outer *= x.size(d);
    for (int64_t d = a + 1; d < dim; ++d) inner *= x.size(d);
    for (int64_t d = 0; d < dim; ++d) if (d != a) shape[d] = 1;
    return {ScaleLayout{outer, x.size(a), inner}, shape};
  }
  for (auto& s : shape) s = 1;
  return {ScaleLayout{1, 1, x.numel()}, shape};
}

// Reads the granularity back from the shape of `scale` (see scale_layout.h).
inline ScaleLayout layout_from_scale(const at::Tensor& x, const at::Tensor& scale, const char* op) {
  check_dtype(scale, at::kFloat, op, "scale");
  check_same_device(scale, x, op, "scale", "the input");
  const int64_t dim = x.dim();
  TORCH_CHECK(scale.dim() == dim, "lowbit.", op, ": expected scale of rank ", dim,
              " (the input's rank, keepdim-style), got shape ", scale.sizes(), " for input shape ", x.sizes());
  if (scale.numel() == 1) return ScaleLayout{1, 1, x.numel()};
  bool leading_equal = true;
  for (int64_t d = 0; d + 1 < dim; ++d) leading_equal &= scale.size(d) == x.size(d);
  // [..., 0] parameters of an input [..., 0]: what a per-group choice returns for it
  if (leading_equal && dim > 0 && scale.size(-1) == 0 && x.size(-1) == 0) return ScaleLayout{1, 0, 1};
  if (leading_equal && scale.size(-1) > 0 && x.size(-1) % scale.size(-1) == 0) {
    const int64_t g = x.size(-1) / scale.size(-1);
    return ScaleLayout{1, scale.numel(), g};
  }
  int64_t axis = -1, non_one = 0;
  for (int64_t d = 0; d < dim; ++d) if (scale.size(d) != 1) { axis = d; ++non_one; }
  TORCH_CHECK(non_one == 1 && scale.size(axis) == x.size(axis), "lowbit.", op, ": scale of shape ",
              scale.sizes(), " is not a per-tensor, per-axis or per-group (last axis) layout for input of shape ",
              x.sizes(), "; expected all ones, the input's size on one axis and ones elsewhere, or [..., K / group_size]");
  int64_t outer = 1, inner = 1;
  for (int64_t d = 0; d < axis; ++d) outer *= x.size(d);
  for (int64_t d = axis + 1; d < dim; ++d) inner *= x.size(d);
  return ScaleLayout{outer, x.size(axis), inner};
}

// allow_int8: the op also reads integer zero points stored as int8 (linear_intx).
inline void check_zero_point(const std::optional<at::Tensor>& zero_point, const at::Tensor& scale,
                             const char* op, bool allow_int8 = false) {
  if (!zero_point.has_value()) return;
  if (allow_int8) {
    TORCH_CHECK(zero_point->scalar_type() == at::kFloat || zero_point->scalar_type() == at::kChar, "lowbit.", op,
                ": expected zero_point of dtype float32 or int8, got ", zero_point->scalar_type());
  } else {
    check_dtype(*zero_point, at::kFloat, op, "zero_point");
  }
  check_same_device(*zero_point, scale, op, "zero_point", "scale");
  TORCH_CHECK(zero_point->sizes() == scale.sizes(), "lowbit.", op, ": expected zero_point of the shape of scale ",
              scale.sizes(), ", got ", zero_point->sizes());
}

// The scale / zero-point arguments of quantize_affine and dequantize_affine (CPU and CUDA),
// checked against `t` (x or codes) and made contiguous.
struct AffineParams {
  ScaleLayout layout;
  at::Tensor scale;
  std::optional<at::Tensor> zero_point;
  const float* zero_point_ptr() const { return zero_point ? zero_point->const_data_ptr<float>() : nullptr; }
};

inline AffineParams affine_params(const at::Tensor& t, const at::Tensor& scale,
                                  const std::optional<at::Tensor>& zero_point, const char* op) {
  const ScaleLayout L = layout_from_scale(t, scale, op);  // also checks scale's dtype and device
  check_zero_point(zero_point, scale, op);
  return {L, scale.contiguous(), zero_point ? std::optional<at::Tensor>(zero_point->contiguous()) : std::nullopt};
}

}  // namespace lowbit::ops
