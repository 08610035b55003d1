// CPU glue of the float8 ops: checks, output allocation, parallel walk over the
// scale layout. Non-contiguous inputs are accepted and copied to contiguous first.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <cmath>
#include <optional>
#include <vector>

#include "cpu/fp8.h"
#include "cpu/streaming.h"
#include "ops/checks.h"
#include "ops/cpu_driver.h"

namespace lowbit::ops {
namespace {



at::Tensor choose_scale_fp8(const at::Tensor& x_in, at::ScalarType dtype, std::optional<int64_t> axis,
                            std::optional<int64_t> group_size) {
  constexpr const char* op = "choose_scale_fp8";
  check_float(x_in, op, "x");
  const Fp8Format fmt = fp8_format_arg(dtype, op);
  const ParamShape ps = param_shape_for(x_in, axis, group_size, op);
  const at::Tensor x = x_in.contiguous();
  const int64_t C = ps.layout.channels;
  std::vector<float> mins(static_cast<size_t>(C)), maxs(static_cast<size_t>(C));
  with_float_type(x.scalar_type(), [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    const T* xp = reinterpret_cast<const T*>(x.const_data_ptr());
    reduce_minmax(
        ps.layout, mins.data(), maxs.data(),
        [&](int64_t off, int64_t n, float* mn, float* mx) { cpu::fp8_absmax_row(xp + off, n, mn, mx); },
        [&](int64_t off, int64_t rows, int64_t cols, float* mn, float* mx) {
          cpu::fp8_absmax_cols(xp + off, rows, cols, mn, mx);
        });
  });
  at::Tensor scale = at::empty(ps.shape, x.options().dtype(at::kFloat));
  float* sp = scale.data_ptr<float>();
  const float max_finite = cpu::fp8_max_finite(fmt);
  for (int64_t c = 0; c < C; ++c) {
    TORCH_CHECK(std::isfinite(mins[c]) && std::isfinite(maxs[c]), "lowbit.", op,
                ": expected finite values in x, got non-finite values (NaN or inf) in the elements of scale index ",
                c, " (flat) of ", C);
    const float absmax = std::max(-mins[c], maxs[c]);
    const float s = absmax / max_finite;
    // all-zero channels, and those so small that the quotient underflows, get 1
    sp[c] = s > 0.f ? s : 1.f;
  }
  return scale;
}

at::Tensor quantize_fp8(const at::Tensor& x_in, const at::Tensor& scale_in, at::ScalarType dtype) {
  constexpr const char* op = "quantize_fp8";
  check_float(x_in, op, "x");
  const Fp8Format fmt = fp8_format_arg(dtype, op);
  const ScaleLayout L = layout_from_scale(x_in, scale_in, op);
  const at::Tensor x = x_in.contiguous();
  const at::Tensor scale = scale_in.contiguous();
  at::Tensor q = at::empty(x.sizes(), x.options().dtype(dtype));
  uint8_t* qp = static_cast<uint8_t*>(q.data_ptr());
  const float* sp = scale.const_data_ptr<float>();
  with_float_type(x.scalar_type(), [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    const T* xp = reinterpret_cast<const T*>(x.const_data_ptr());
    for_each_span(L, [&](int64_t off, int64_t n, int64_t ch, int64_t stride) {
      cpu::quantize_fp8_span(xp + off, qp + off, n, sp + ch, stride, fmt);
    });
  });
  return q;
}

at::Tensor dequantize_fp8(const at::Tensor& q_in, const at::Tensor& scale_in, at::ScalarType dtype) {
  constexpr const char* op = "dequantize_fp8";
  const Fp8Format fmt = fp8_codes_format(q_in, op, "q");
  check_float_dtype_arg(dtype, op, "dtype");
  const ScaleLayout L = layout_from_scale(q_in, scale_in, op);
  const at::Tensor q = q_in.contiguous();
  const at::Tensor scale = scale_in.contiguous();
  at::Tensor y = at::empty(q.sizes(), q.options().dtype(dtype));
  const uint8_t* qp = static_cast<const uint8_t*>(q.const_data_ptr());
  const float* sp = scale.const_data_ptr<float>();
  const bool stream = cpu::stream_output(q.nbytes() + y.nbytes());
  with_float_type(dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    T* yp = reinterpret_cast<T*>(y.data_ptr());
    for_each_span(L, [&](int64_t off, int64_t n, int64_t ch, int64_t stride) {
      cpu::dequantize_fp8_span(qp + off, yp + off, n, sp + ch, stride, fmt, stream);
    }, stream);
  });
  return y;
}

}  // namespace

TORCH_LIBRARY_IMPL(lowbit, CPU, m) {
  m.impl("choose_scale_fp8", &choose_scale_fp8);
  m.impl("quantize_fp8", &quantize_fp8);
  m.impl("dequantize_fp8", &dequantize_fp8);
}

}  // namespace lowbit::ops
