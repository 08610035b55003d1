"""Affine integer quantization: choose parameters, quantize, dequantize.

Codes are int8 tensors holding signed values in ``[-2**(bits-1), 2**(bits-1) - 1]``
for ``bits`` in {2, 4, 8} (pack 2- and 4-bit codes with :func:`lowbit.ops.pack_bits`).
Parameters are float32 tensors in *keepdim* shapes, and their shape alone says
which elements they cover:

* per tensor: all ones, e.g. ``[1, 1]`` for a 2-D input;
* per axis ``a``: the input's size at ``a`` and ones elsewhere, e.g. ``[N, 1]``;
* per group of ``g`` consecutive elements on the last axis: ``[..., K // g]``.

Non-contiguous inputs are accepted (they are copied to contiguous memory first).
"""
from typing import Optional, Tuple

import torch

from ._fake_helpers import check_float, check_scale, param_shape

__all__ = ["choose_qparams_affine", "quantize_affine", "dequantize_affine"]


def choose_qparams_affine(x: torch.Tensor, bits: int, symmetric: bool, axis: Optional[int] = None,
                          group_size: Optional[int] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero-point for quantizing ``x`` to ``bits``-bit signed codes.

    Granularity: per tensor (neither ``axis`` nor ``group_size``), per ``axis``, or per
    group of ``group_size`` consecutive elements on the last axis (it must divide it).

    * symmetric: ``scale = absmax / qmax``, ``zero_point = 0``;
    * asymmetric: with ``lo = min(x.min(), 0)`` and ``hi = max(x.max(), 0)`` (so 0.0 stays
      exact), ``scale = (hi - lo) / (qmax - qmin)`` and
      ``zero_point = clamp(qmin - round_half_even(lo / scale), qmin, qmax)`` (integral).

    All arithmetic is float32. A group whose values are all zero gets ``scale = 1``.
    An empty input gets ``scale = 1``, ``zero_point = 0``. NaN or infinity in the input
    raise ``RuntimeError`` (no finite scale exists).

    Returns ``(scale, zero_point)``, both float32 with the keepdim shape of the granularity.
    """
    return torch.ops.lowbit.choose_qparams_affine(x, bits, symmetric, axis, group_size)


def quantize_affine(x: torch.Tensor, scale: torch.Tensor, zero_point: Optional[torch.Tensor],
                    bits: int) -> torch.Tensor:
    """int8 codes ``clamp(round_half_even(x / scale + zero_point), qmin, qmax)``.

    ``x`` is float32, float16 or bfloat16 (converted to float32 first; the division is
    exact IEEE float32). ``zero_point=None`` means symmetric. ``scale`` must be finite
    and > 0 and ``zero_point`` finite (``RuntimeError`` otherwise). NaN inputs become the
    code of 0.0 (``round(zero_point)``), ``+inf``/``-inf`` become ``qmax``/``qmin``.
    """
    return torch.ops.lowbit.quantize_affine(x, scale, zero_point, bits)


def dequantize_affine(codes: torch.Tensor, scale: torch.Tensor, zero_point: Optional[torch.Tensor],
                      dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``(codes - zero_point) * scale`` computed in float32, returned in ``dtype``
    (float32, float16 or bfloat16, rounded half to even)."""
    return torch.ops.lowbit.dequantize_affine(codes, scale, zero_point, dtype)


def _check_bits(bits: int, op: str) -> None:
    torch._check(bits in (2, 4, 8), lambda: f"lowbit.{op}: expected bits in {{2, 4, 8}}, got {bits}")


def _check_params(x: torch.Tensor, scale: torch.Tensor, zero_point, op: str) -> None:
    check_scale(x, scale, op)
    if zero_point is not None:
        torch._check(zero_point.shape == scale.shape,
                     lambda: f"lowbit.{op}: expected zero_point of the shape of scale {list(scale.shape)}, got {list(zero_point.shape)}")


@torch.library.register_fake("lowbit::choose_qparams_affine")
def _(x, bits, symmetric, axis=None, group_size=None):
    check_float(x, "choose_qparams_affine", "x")
    _check_bits(bits, "choose_qparams_affine")
    shape = param_shape(x, axis, group_size, "choose_qparams_affine")
    return x.new_empty(shape, dtype=torch.float32), x.new_empty(shape, dtype=torch.float32)


@torch.library.register_fake("lowbit::quantize_affine")
def _(x, scale, zero_point, bits):
    check_float(x, "quantize_affine", "x")
    _check_bits(bits, "quantize_affine")
    _check_params(x, scale, zero_point, "quantize_affine")
    return torch.empty_like(x, dtype=torch.int8, memory_format=torch.contiguous_format)


@torch.library.register_fake("lowbit::dequantize_affine")
def _(codes, scale, zero_point, dtype):
    torch._check(codes.dtype == torch.int8, lambda: f"lowbit.dequantize_affine: expected codes of dtype torch.int8, got {codes.dtype}")
    _check_params(codes, scale, zero_point, "dequantize_affine")
    return torch.empty_like(codes, dtype=dtype, memory_format=torch.contiguous_format)
