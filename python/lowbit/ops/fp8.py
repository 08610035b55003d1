"""Float8 quantization ops (OCP ``float8_e4m3fn`` and ``float8_e5m2``).

Byte layouts, rounding and NaN/inf rules: docs/formats.md, "Float8".
Each wrapper calls ``torch.ops.lowbit.<op>``; the fake implementations below give
the exact output shapes and dtypes of the CPU ops and check the same preconditions.
"""
from typing import Optional

import torch

from ._fake_helpers import check_float, check_scale, param_shape

FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)
#: Largest finite value of each float8 format.
FP8_MAX = {torch.float8_e4m3fn: 448.0, torch.float8_e5m2: 57344.0}


def choose_scale_fp8(x: torch.Tensor, dtype: torch.dtype, axis: Optional[int] = None,
                     group_size: Optional[int] = None) -> torch.Tensor:
    """Float32 scale that maps the absolute maximum of ``x`` onto the largest finite float8 value.

    ``scale = absmax / max_finite(dtype)`` (448 for e4m3fn, 57344 for e5m2), computed in
    float32, over:

    - the whole tensor (``axis`` and ``group_size`` both None): shape ``[1] * x.dim()``;
    - every index of ``axis``: keepdim shape, ones except ``x.shape[axis]`` at ``axis``;
    - groups of ``group_size`` consecutive elements on the last axis: shape
      ``[..., K // group_size]`` for ``x`` of shape ``[..., K]``.

    A channel whose absmax is 0 (or so small that the quotient underflows to 0) gets
    scale 1; a channel with no element (empty ``x``) also gets 1, so a scale is never 0.

    Args:
        x: float32, float16 or bfloat16 tensor (non-contiguous input is copied).
        dtype: ``torch.float8_e4m3fn`` or ``torch.float8_e5m2``.
        axis: per-axis scales along this axis (negative counts from the end).
        group_size: per-group scales; must divide ``x.shape[-1]``.

    Raises:
        RuntimeError: another ``dtype``; ``x`` not a float tensor; both ``axis`` and
            ``group_size``; ``axis`` out of range; ``group_size`` <= 0 or not dividing
            the last axis; any NaN or inf in ``x`` ("non-finite values").
    """
    return torch.ops.lowbit.choose_scale_fp8(x, dtype, axis, group_size)


def quantize_fp8(x: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``q = fp8(saturate(x / scale))``, rounded half to even, returned as a ``dtype`` tensor.

    The division is done in float32 (``x`` converted first; a true IEEE division, not a
    multiplication by a reciprocal). Finite quotients beyond the largest finite value
    and +-inf become +-max finite (448 or 57344: e5m2's infinity is never produced);
    NaN becomes NaN (code ``sign | 0x7f``, as torch writes it). Subnormal float8
    values are rounded to exactly. ``scale`` is used as given: a zero scale gives
    +-inf quotients (so +-max) for non-zero ``x`` and NaN for ``0 / 0``.

    Args:
        x: float32, float16 or bfloat16 tensor of any shape (non-contiguous is copied).
        scale: float32, keepdim-shaped as returned by :func:`choose_scale_fp8` (per
            tensor, per axis, or ``[..., K // group_size]``); the granularity is read
            back from its shape.
        dtype: ``torch.float8_e4m3fn`` or ``torch.float8_e5m2``.

    Returns:
        Tensor of ``x.shape`` and dtype ``dtype``.

    Raises:
        RuntimeError: another ``dtype``; ``x`` not a float tensor; ``scale`` not float32,
            of another rank, or of a shape that is no supported layout for ``x``.
    """
    return torch.ops.lowbit.quantize_fp8(x, scale, dtype)


def dequantize_fp8(q: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``x_hat = q * scale`` in float32, then rounded (half to even) to ``dtype``.

    Every float8 code decodes exactly (subnormals included); e4m3fn NaN codes and
    e5m2 NaN codes give NaN, e5m2 infinities give +-inf times ``scale``. A product
    beyond the range of float16 becomes +-inf.

    Args:
        q: ``torch.float8_e4m3fn`` or ``torch.float8_e5m2`` tensor (non-contiguous is copied).
        scale: float32, keepdim-shaped as for :func:`quantize_fp8`.
        dtype: output dtype, ``torch.float32``, ``torch.float16`` or ``torch.bfloat16``.

    Returns:
        Tensor of ``q.shape`` and dtype ``dtype``.

    Raises:
        RuntimeError: ``q`` not float8; ``dtype`` not a float dtype; ``scale`` not float32,
            of another rank, or of a shape that is no supported layout for ``q``.
    """
    return torch.ops.lowbit.dequantize_fp8(q, scale, dtype)


# ---- fake (meta) implementations: the same checks as csrc/ops/cpu_fp8.cpp ----

def _check_fp8_dtype(dtype: torch.dtype, op: str) -> None:
    torch._check(dtype in FP8_DTYPES,
                 lambda: f"lowbit.{op}: expected dtype torch.float8_e4m3fn or torch.float8_e5m2, got {dtype}")


@torch.library.register_fake("lowbit::choose_scale_fp8")
def _choose_scale_fp8_fake(x, dtype, axis=None, group_size=None):
    op = "choose_scale_fp8"
    check_float(x, op, "x")
    _check_fp8_dtype(dtype, op)
    return x.new_empty(param_shape(x, axis, group_size, op), dtype=torch.float32)


@torch.library.register_fake("lowbit::quantize_fp8")
def _quantize_fp8_fake(x, scale, dtype):
    op = "quantize_fp8"
    check_float(x, op, "x")
    _check_fp8_dtype(dtype, op)
    check_scale(x, scale, op)
    return x.new_empty(x.shape, dtype=dtype)


@torch.library.register_fake("lowbit::dequantize_fp8")
def _dequantize_fp8_fake(q, scale, dtype):
    op = "dequantize_fp8"
    torch._check(q.dtype in FP8_DTYPES,
                 lambda: f"lowbit.{op}: expected q of dtype torch.float8_e4m3fn or torch.float8_e5m2, got {q.dtype}")
    torch._check(dtype in (torch.float32, torch.float16, torch.bfloat16),
                 lambda: f"lowbit.{op}: expected dtype to be torch.float32, torch.float16 or torch.bfloat16, got {dtype}")
    check_scale(q, scale, op)
    return q.new_empty(q.shape, dtype=dtype)
