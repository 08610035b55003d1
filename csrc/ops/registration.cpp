// Every lowbit op schema, in one place. Implementations register per dispatch key
// next to their glue: cpu_*.cpp (CPU), cuda/*.cu glue (CUDA). Fake (meta)
// implementations are written in Python, in python/lowbit/ops/, where they double
// as the specification of output shapes and dtypes.
#include <torch/library.h>

TORCH_LIBRARY(lowbit, m) {
  // ---- affine integer quantization (2, 4, 8 bits; codes stored as int8) ----
  // Scale and zero-point (float32, keepdim shapes) per tensor, per axis, or per group
  // of group_size consecutive elements on the last axis; symmetric means absmax, zero_point 0.
  m.def("choose_qparams_affine(Tensor x, int bits, bool symmetric, int? axis=None, int? group_size=None) -> (Tensor scale, Tensor zero_point)");
  // codes = clamp(round_half_even(x / scale + zero_point), qmin, qmax) as int8.
  m.def("quantize_affine(Tensor x, Tensor scale, Tensor? zero_point, int bits) -> Tensor");
  // x_hat = (codes - zero_point) * scale, returned in `dtype`.
  m.def("dequantize_affine(Tensor codes, Tensor scale, Tensor? zero_point, ScalarType dtype) -> Tensor");

  // ---- bit packing of 2- and 4-bit codes along the last axis (docs/formats.md) ----
  // int8 codes [..., n] -> uint8 [..., ceil(n * bits / 8)].
  m.def("pack_bits(Tensor codes, int bits) -> Tensor");
  // uint8 [..., ceil(n * bits / 8)] -> int8 codes [..., n]; n is given because padding hides it.
  m.def("unpack_bits(Tensor packed, int bits, int n) -> Tensor");

  // ---- float8 (e4m3fn, e5m2) ----
  // absmax / max_finite(dtype) per tensor, per axis or per group (float32, keepdim shape).
  m.def("choose_scale_fp8(Tensor x, ScalarType dtype, int? axis=None, int? group_size=None) -> Tensor");
  // x / scale saturated to the finite range of `dtype`, rounded half to even.
  m.def("quantize_fp8(Tensor x, Tensor scale, ScalarType dtype) -> Tensor");
  // q * scale, returned in `dtype`.
  m.def("dequantize_fp8(Tensor q, Tensor scale, ScalarType dtype) -> Tensor");

  // ---- GGUF blocks, byte-identical to llama.cpp / gguf-py ----
  // [..., K] float (K % 32 == 0) -> uint8 [..., K / 32 * 34]: fp16 scale + 32 int8.
  m.def("quantize_q8_0(Tensor x) -> Tensor");
  m.def("dequantize_q8_0(Tensor blocks, ScalarType dtype) -> Tensor");
  // [..., K] float (K % 32 == 0) -> uint8 [..., K / 32 * 18]: fp16 scale + 16 bytes of nibbles.
  m.def("quantize_q4_0(Tensor x) -> Tensor");
  m.def("dequantize_q4_0(Tensor blocks, ScalarType dtype) -> Tensor");

  // ---- mixed-precision linear (CPU kernels: docs/kernels.md) ----
  // y = x @ dequantize(weight).T + bias; x float32/float16/bfloat16 [..., K] -> y [..., N] in x.dtype.
  // int8_activations=True quantizes each row of x to int8 on the fly and runs integer dot products.
  // int8 codes [N, K], scale float32 [N, 1] (W8A16; W8A8 with int8_activations).
  m.def("linear_int8(Tensor x, Tensor codes, Tensor scale, Tensor? bias=None, bool int8_activations=False) -> Tensor");
  // [int8 linear: further schemas here]

  // packed 2/4-bit codes [N, ceil(K * bits / 8)], scale / zero_point float32 [N, K / group_size] (W4A16, W2A16).
  m.def("linear_intx(Tensor x, Tensor packed, Tensor scale, Tensor? zero_point, int bits, Tensor? bias=None, bool int8_activations=False) -> Tensor");
  // [intx linear: further schemas here]

  // float8 (e4m3fn / e5m2) weights [N, K], scale float32 [N, 1] or [1, 1].
  m.def("linear_fp8(Tensor x, Tensor q, Tensor scale, Tensor? bias=None) -> Tensor");
  // GGUF blocks [N, K / 32 * 34] (Q8_0) and [N, K / 32 * 18] (Q4_0).
  m.def("linear_q8_0(Tensor x, Tensor blocks, Tensor? bias=None, bool int8_activations=False) -> Tensor");
  m.def("linear_q4_0(Tensor x, Tensor blocks, Tensor? bias=None, bool int8_activations=True) -> Tensor");
  // [fp8 / gguf linear: further schemas here]
}
