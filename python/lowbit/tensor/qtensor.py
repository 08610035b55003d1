"""``QTensor``: a quantized weight that still looks like a float tensor.

The outer tensor has the float weight's shape, dtype and device but owns no
storage; it holds inner tensors:

* ``codes``: the quantized matrix ``[N, K]`` (``N`` = ``shape[0]``, ``K`` = the product
  of the other dims, so a conv weight ``[out, in, kh, kw]`` is ``[out, in*kh*kw]``;
  a 1-D weight is ``[1, K]``): int8 for qint8, float8 for the float8 qtypes,
  uint8 with codes packed along ``K`` (``lowbit.ops.pack_bits``) for qint2 / qint4;
* ``scale``: float32, ``[N, 1]`` (per output row, ``axis=0``), ``[N, K // group_size]``
  (per group of input features) or ``[1, 1]`` (per tensor);
* ``zero_point``: float32 like ``scale``, or absent (symmetric).

and metadata: the qtype, ``axis`` / ``group_size``, the original shape and dtype.

Block formats (``qgguf_q4_0`` / ``qgguf_q8_0``, :attr:`QType.is_block`) carry their
scales inside the blocks: ``codes`` is then the uint8 matrix of GGUF block bytes
``[N, K / 32 * 18]`` (Q4_0) or ``[N, K / 32 * 34]`` (Q8_0), byte-identical to
llama.cpp, and it is the only inner tensor (``scale`` and ``zero_point`` are None,
``axis`` and ``group_size`` are None: the format fixes blocks of 32 along ``K``).
"""
import math
from typing import Dict, Optional, Tuple

import torch
from torch.utils._pytree import tree_map_only

from .. import ops
from ..qtypes import QType, qtype as as_qtype

aten = torch.ops.aten


def weight_matrix_shape(shape) -> Tuple[int, int]:
    """``(N, K)`` of the matrix a weight of ``shape`` is quantized as."""
    shape = tuple(shape)
    if len(shape) == 0:
        return (1, 1)
    if len(shape) == 1:
        return (1, shape[0])
    return (shape[0], math.prod(shape[1:]))


def expected_inner_layout(shape, qtype: QType, axis: Optional[int], group_size: Optional[int]
                          ) -> Dict[str, Tuple[Tuple[int, ...], torch.dtype]]:
    """name -> (shape, dtype) of the inner tensors of a QTensor (``zero_point`` is optional
    and listed for integer qtypes only; a block format has ``codes`` only). Raises
    ``ValueError`` when ``K`` is not a multiple of a block format's block size."""
    n, k = weight_matrix_shape(shape)
    if qtype.is_block:
        check_block_divides(qtype, shape)
        return {"codes": ((n, k // qtype.block_size * qtype.block_bytes), torch.uint8)}
    if qtype.is_packed:
        codes = ((n, (k * qtype.bits + 7) // 8), torch.uint8)
    else:
        codes = ((n, k), qtype.dtype)
    if group_size is not None:
        pshape = (n, k // group_size)
    elif axis is not None:
        pshape = (n, 1)
    else:
        pshape = (1, 1)
    out = {"codes": codes, "scale": (pshape, torch.float32)}
    if not qtype.is_float:
        out["zero_point"] = (pshape, torch.float32)
    return out


def check_block_divides(qtype: QType, shape, where: str = "") -> None:
    """Raises ``ValueError`` when a weight of ``shape`` has input features ``K`` that are
    not a multiple of the block size of the block format ``qtype``."""
    k = weight_matrix_shape(shape)[1]
    if k % qtype.block_size:
        raise ValueError(f"{where or 'lowbit'}: {qtype} needs the input features to be a multiple of "
                         f"{qtype.block_size} (its block size), got {k} for a weight of shape {list(shape)}")


def weight_axis(qtype: QType, group_size: Optional[int]) -> Optional[int]:
    """The ``axis`` metadata of a QTensor: 0 (one scale per output row) unless grouped
    or a block format (None)."""
    return None if group_size is not None or qtype.is_block else 0


def _dequantize_blocks(blocks: torch.Tensor, qtype: QType, dtype: torch.dtype) -> torch.Tensor:
    if qtype.name == "qgguf_q4_0":
        return ops.dequantize_q4_0(blocks, dtype)
    return ops.dequantize_q8_0(blocks, dtype)


class QTensor(torch.Tensor):
    """A quantized weight (see the module docstring). Build one with :func:`quantize_weight`."""

    @staticmethod
    def __new__(cls, codes, scale, zero_point, qtype, axis, group_size, shape, dtype, requires_grad=False):
        return torch.Tensor._make_wrapper_subclass(cls, tuple(shape), dtype=dtype, device=codes.device,
                                                   requires_grad=requires_grad)

    def __init__(self, codes, scale, zero_point, qtype, axis, group_size, shape, dtype, requires_grad=False):
        self.codes = codes
        self.scale = scale
        self.zero_point = zero_point
        self.qtype = as_qtype(qtype)
        if self.qtype.is_block:  # the blocks hold their scales; the format fixes the granularity
            axis = group_size = None
        self.axis = axis
        self.group_size = group_size
        self.orig_shape = tuple(shape)

    # ---- construction / conversion ----
    def dequantize(self, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        """The float weight ``(codes - zero_point) * scale`` in ``dtype`` (default: this tensor's dtype);
        for a block format, each block's ``d * code`` (``lowbit.ops.dequantize_q4_0`` / ``_q8_0``)."""
        dtype = dtype or self.dtype
        if self.qtype.is_block:
            w = _dequantize_blocks(self.codes, self.qtype, dtype)
        elif self.qtype.is_float:
            w = ops.dequantize_fp8(self.codes, self.scale, dtype)
        else:
            codes = self.codes
            if self.qtype.is_packed:
                codes = ops.unpack_bits(codes, self.qtype.bits, weight_matrix_shape(self.orig_shape)[1])
            w = ops.dequantize_affine(codes, self.scale, self.zero_point, dtype)
        return w.reshape(self.orig_shape)

    def _inner_names(self):
        return [n for n in ("codes", "scale", "zero_point") if getattr(self, n) is not None]

    def inner_tensors(self) -> Dict[str, torch.Tensor]:
        """name -> the inner tensors this QTensor holds (``codes``, then ``scale`` and
        ``zero_point`` when present): what a state dict stores for it."""
        return {n: getattr(self, n) for n in self._inner_names()}

    def _replace(self, fn, dtype=None) -> "QTensor":
        scale = None if self.scale is None else fn(self.scale)
        zp = None if self.zero_point is None else fn(self.zero_point)
        return QTensor(fn(self.codes), scale, zp, self.qtype, self.axis, self.group_size,
                       self.orig_shape, dtype or self.dtype)

    def __repr__(self):
        if self.qtype.is_block:
            gran = f"blocks of {self.qtype.block_size}"
        elif self.group_size:
            gran = f"group_size={self.group_size}"
        else:
            gran = f"axis={self.axis}" if self.axis is not None else "per_tensor"
        return (f"QTensor(shape={list(self.shape)}, qtype={self.qtype}, {gran}, dtype={self.dtype}, "
                f"device={self.device}, zero_point={self.zero_point is not None})")

    def __deepcopy__(self, memo):
        return self._replace(lambda t: t.clone())

    def __reduce_ex__(self, proto):
        return (_rebuild, (self.inner_tensors(), self.__tensor_flatten__()[1]))

    # ---- torch.compile support ----
    def __tensor_flatten__(self):
        return self._inner_names(), (self.qtype.name, self.axis, self.group_size, self.orig_shape, self.dtype)

    @staticmethod
    def __tensor_unflatten__(inner, ctx, outer_size, outer_stride):
        name, axis, group_size, shape, dtype = ctx
        return QTensor(inner["codes"], inner.get("scale"), inner.get("zero_point"), name, axis, group_size, shape,
                       dtype)

    # ---- dispatch ----
    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        from .functions import FUNCTION_TABLE
        kwargs = kwargs or {}
        handler = FUNCTION_TABLE.get(func)
        if handler is not None:
            return handler(*args, **kwargs)
        with torch._C.DisableTorchFunctionSubclass():
            return func(*args, **kwargs)

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        from .functions import dispatch_fallback
        kwargs = kwargs or {}
        if func is aten.detach.default:
            return args[0]._replace(lambda t: t.detach())
        if func is aten.clone.default:
            return args[0]._replace(lambda t: t.clone())
        if func is aten._to_copy.default:
            self = args[0]
            device = kwargs.get("device")
            dtype = kwargs.get("dtype")
            if dtype is not None and not dtype.is_floating_point:
                raise ValueError(f"a QTensor can only be converted to a float dtype, got {dtype}")
            return self._replace(lambda t: t.to(device=device) if device is not None else t, dtype=dtype)
        return dispatch_fallback(func, args, kwargs)


def _rebuild(inner, ctx):
    return QTensor.__tensor_unflatten__(inner, ctx, None, None)


@torch.no_grad()
def _quantize_matrix(w, qtype, axis, group_size, optimizer):
    scale, zero_point = optimizer(w, qtype, axis=axis, group_size=group_size)
    if qtype.is_float:
        return ops.quantize_fp8(w, scale, qtype.dtype), scale, None
    codes = ops.quantize_affine(w, scale, zero_point, qtype.bits)
    if qtype.is_packed:
        codes = ops.pack_bits(codes, qtype.bits)
    return codes, scale, zero_point


def check_block_options(qtype: QType, group_size, optimizer, where: str) -> None:
    """Raises ``ValueError`` when a group size or an optimizer is given for a block format
    (the format fixes both: blocks of 32, scale = absmax-based as llama.cpp)."""
    if qtype.is_block and group_size is not None:
        raise ValueError(f"{where}: {qtype} has a fixed block of {qtype.block_size} input features; "
                         f"group_size must be None, got {group_size!r}")
    if qtype.is_block and optimizer is not None:
        raise ValueError(f"{where}: {qtype} fixes its scales (llama.cpp's rounding); optimizer must be None, "
                         f"got {optimizer!r}")


@torch.no_grad()
def _quantize_blocks(weight: torch.Tensor, qtype: QType) -> QTensor:
    check_block_divides(qtype, weight.shape, "quantize_weight")
    n, k = weight_matrix_shape(weight.shape)
    w = weight.detach().reshape(n, k)
    if w.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        w = w.float()
    blocks = ops.quantize_q4_0(w) if qtype.name == "qgguf_q4_0" else ops.quantize_q8_0(w)
    return QTensor(blocks, None, None, qtype, None, None, weight.shape, weight.dtype)


def quantize_weight(weight: torch.Tensor, qtype, group_size: Optional[int] = None, optimizer=None,
                    input_gram: Optional[torch.Tensor] = None) -> QTensor:
    """Quantizes a float weight to a :class:`QTensor`.

    ``group_size``: groups of consecutive input features (it must divide ``K``, the
    product of all dims but the first); ``None`` means one scale per output row.
    ``optimizer``: name or object (see :mod:`lowbit.optimizers`); default absmax for
    8-bit / float8, minmax for 2 / 4 bits.

    Block formats (``"q4_0"``, ``"q8_0"``): ``K`` must be a multiple of 32 and
    ``group_size`` / ``optimizer`` must be None (``ValueError`` otherwise); the codes
    are the GGUF block bytes of ``lowbit.ops.quantize_q4_0`` / ``quantize_q8_0``, which
    refuse NaN / inf (RuntimeError).

    ``input_gram``: the Gram matrix ``X^T X / n`` ``[K, K]`` of calibration inputs, for
    optimizers that minimise the output error (``"gptq"``, which then needs it).
    """
    from ..optimizers import default_optimizer, get_optimizer
    qtype = as_qtype(qtype)
    if not weight.is_floating_point():
        raise ValueError(f"quantize_weight: expected a float weight, got {weight.dtype}")
    if qtype.is_block:
        check_block_options(qtype, group_size, optimizer, "quantize_weight")
        return _quantize_blocks(weight, qtype)
    optimizer = get_optimizer(optimizer) or default_optimizer(qtype)
    n, k = weight_matrix_shape(weight.shape)
    if group_size is not None and (group_size <= 0 or k % group_size):
        raise ValueError(f"quantize_weight: group_size {group_size} does not divide the {k} input features "
                         f"of a weight of shape {list(weight.shape)}")
    axis = None if group_size is not None else 0
    w = weight.detach().reshape(n, k)
    if w.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        w = w.float()
    if getattr(optimizer, "needs_input_gram", False) and input_gram is not None:
        codes, scale, zero_point = optimizer.quantize_codes(w, qtype, group_size, input_gram)
        if qtype.is_packed:
            codes = ops.pack_bits(codes, qtype.bits)
    else:
        codes, scale, zero_point = _quantize_matrix(w, qtype, axis, group_size, optimizer)
    return QTensor(codes, scale.float(), None if zero_point is None else zero_point.float(), qtype, axis,
                   group_size, weight.shape, weight.dtype)
