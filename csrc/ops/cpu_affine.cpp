// CPU glue of the affine ops: checks, allocation, parallel split, dtype switch.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <cmath>

#include "cpu/affine.h"
#include "cpu/streaming.h"
#include "ops/checks.h"
#include "ops/cpu_driver.h"

namespace lowbit::ops {
namespace {


// Scales must be positive and finite, zero-points finite: anything else would
// turn every code of a channel into garbage without a word.
void check_params_values(const at::Tensor& scale, const std::optional<at::Tensor>& zero_point, const char* op) {
  const float* s = scale.data_ptr<float>();
  for (int64_t i = 0; i < scale.numel(); ++i)
    TORCH_CHECK(std::isfinite(s[i]) && s[i] > 0.f, "lowbit.", op,
                ": expected every scale to be finite and > 0, got ", s[i], " at flat index ", i);
  if (!zero_point) return;
  const float* z = zero_point->data_ptr<float>();
  for (int64_t i = 0; i < zero_point->numel(); ++i)
    TORCH_CHECK(std::isfinite(z[i]), "lowbit.", op, ": expected finite zero_point values, got ", z[i],
                " at flat index ", i);
}

std::tuple<at::Tensor, at::Tensor> choose_qparams_affine(const at::Tensor& x_in, int64_t bits, bool symmetric,
                                                         std::optional<int64_t> axis,
                                                         std::optional<int64_t> group_size) {
  const char* op = "choose_qparams_affine";
  check_float(x_in, op, "x");
  check_bits(bits, op);
  const at::Tensor x = x_in.contiguous();
  const ParamShape ps = param_shape_for(x, axis, group_size, op);
  const ScaleLayout& L = ps.layout;
  auto opts = x.options().dtype(at::kFloat);
  at::Tensor scale = at::empty(ps.shape, opts), zero_point = at::empty(ps.shape, opts);
  std::vector<float> mins(L.channels), maxs(L.channels);
  with_float_type(x.scalar_type(), [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    const T* px = reinterpret_cast<const T*>(x.data_ptr());
    reduce_minmax(
        L, mins.data(), maxs.data(),
        [&](int64_t off, int64_t n, float* mn, float* mx) { cpu::minmax(px + off, n, mn, mx); },
        [&](int64_t off, int64_t rows, int64_t cols, float* mn, float* mx) {
          cpu::minmax_columns(px + off, rows, cols, mn, mx);
        });
  });
  const float qmin = static_cast<float>(qmin_of(bits)), qmax = static_cast<float>(qmax_of(bits));
  float* ps_ = scale.data_ptr<float>();
  float* pz = zero_point.data_ptr<float>();
  for (int64_t c = 0; c < L.channels; ++c) {
    const float mn = mins[c], mx = maxs[c];
    TORCH_CHECK(std::isfinite(mn) && std::isfinite(mx), "lowbit.", op,
                ": the input contains NaN or infinity (in parameter group ", c,
                "), so no finite scale exists; clean the tensor first");
    if (symmetric) {
      const float s = std::max(-mn, mx) / qmax;
      ps_[c] = s > 0.f ? s : 1.f;
      pz[c] = 0.f;
    } else {
      const float lo = std::min(mn, 0.f), hi = std::max(mx, 0.f);  // keep 0.0 exactly representable
      const float s = (hi - lo) / (qmax - qmin);
      ps_[c] = s > 0.f ? s : 1.f;
      pz[c] = std::min(std::max(qmin - std::nearbyint(lo / ps_[c]), qmin), qmax);
    }
  }
  return {scale, zero_point};
}

at::Tensor quantize_affine(const at::Tensor& x_in, const at::Tensor& scale_in,
                           const std::optional<at::Tensor>& zp_in, int64_t bits) {
  const char* op = "quantize_affine";
  check_float(x_in, op, "x");
  check_bits(bits, op);
  const at::Tensor x = x_in.contiguous();
  const AffineParams p = affine_params(x, scale_in, zp_in, op);
  const ScaleLayout& L = p.layout;
  check_params_values(p.scale, p.zero_point, op);
  at::Tensor codes = at::empty(x.sizes(), x.options().dtype(at::kChar));
  const float* ps_ = p.scale.const_data_ptr<float>();
  const float* pz = p.zero_point_ptr();
  int8_t* pq = codes.data_ptr<int8_t>();
  const int qmin = static_cast<int>(qmin_of(bits)), qmax = static_cast<int>(qmax_of(bits));
  const bool stream = cpu::stream_output(x.nbytes() + codes.nbytes());
  with_float_type(x.scalar_type(), [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    const T* px = reinterpret_cast<const T*>(x.data_ptr());
    for_each_span(L, [&](int64_t off, int64_t n, int64_t c, int64_t stride) {
      cpu::quantize_affine(px + off, pq + off, n, ps_ + c, pz ? pz + c : nullptr, stride, qmin, qmax, stream);
    }, stream);
  });
  return codes;
}

at::Tensor dequantize_affine(const at::Tensor& codes_in, const at::Tensor& scale_in,
                             const std::optional<at::Tensor>& zp_in, at::ScalarType dtype) {
  const char* op = "dequantize_affine";
  check_dtype(codes_in, at::kChar, op, "codes");
  check_float_dtype_arg(dtype, op, "dtype");
  const at::Tensor codes = codes_in.contiguous();
  const AffineParams p = affine_params(codes, scale_in, zp_in, op);
  const ScaleLayout& L = p.layout;
  at::Tensor y = at::empty(codes.sizes(), codes.options().dtype(dtype));
  const float* ps_ = p.scale.const_data_ptr<float>();
  const float* pz = p.zero_point_ptr();
  const int8_t* pq = codes.data_ptr<int8_t>();
  const bool stream = cpu::stream_output(codes.nbytes() + y.nbytes());
  with_float_type(dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    T* py = reinterpret_cast<T*>(y.data_ptr());
    for_each_span(L, [&](int64_t off, int64_t n, int64_t c, int64_t stride) {
      cpu::dequantize_affine(pq + off, py + off, n, ps_ + c, pz ? pz + c : nullptr, stride, stream);
    }, stream);
  });
  return y;
}

}  // namespace

TORCH_LIBRARY_IMPL(lowbit, CPU, m) {
  m.impl("choose_qparams_affine", &choose_qparams_affine);
  m.impl("quantize_affine", &quantize_affine);
  m.impl("dequantize_affine", &dequantize_affine);
}

}  // namespace lowbit::ops
