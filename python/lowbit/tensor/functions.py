"""The one place where functional ops meet quantized weights.

``F.linear``, ``F.conv1d``, ``F.conv2d``, ``F.embedding`` and ``F.layer_norm`` called
with a :class:`QTensor` weight come here (through ``QTensor.__torch_function__``).
Each first asks the kernels registered for it with :func:`register_kernel` (fast
paths: a kernel returns ``NotImplemented`` to decline); the default dequantizes
this one weight and calls the float op, so memory grows by one layer's weight at
most. Any other aten op on a QTensor dequantizes its QTensor arguments and warns
once per op (``dequantize_fallback_ops()`` lists those seen).
"""
import warnings
from typing import Callable, Dict, List

import torch
import torch.nn.functional as F

from .qtensor import QTensor

_KERNELS: Dict[Callable, List[Callable]] = {}
_FALLBACK_SEEN = set()


def register_kernel(func: Callable, kernel: Callable) -> None:
    """Registers ``kernel(*args, **kwargs)`` as a fast path for ``func`` (e.g. ``F.linear``)
    with a QTensor weight; it returns ``NotImplemented`` for inputs it does not handle.
    Kernels registered later are tried first."""
    if func not in FUNCTION_TABLE:
        raise ValueError(f"no QTensor routing for {func}; routed: {[f.__name__ for f in FUNCTION_TABLE]}")
    _KERNELS.setdefault(func, []).insert(0, kernel)


def _float(w):
    return w.dequantize() if isinstance(w, QTensor) else w


def _route(func):
    def handler(*args, **kwargs):
        for kernel in _KERNELS.get(func, ()):
            out = kernel(*args, **kwargs)
            if out is not NotImplemented:
                return out
        args = tuple(_float(a) for a in args)
        kwargs = {k: _float(v) for k, v in kwargs.items()}
        return func(*args, **kwargs)
    return handler


def _embedding(input, weight, padding_idx=None, max_norm=None, norm_type=2.0, scale_grad_by_freq=False,
               sparse=False):
    for kernel in _KERNELS.get(F.embedding, ()):
        out = kernel(input, weight, padding_idx, max_norm, norm_type, scale_grad_by_freq, sparse)
        if out is not NotImplemented:
            return out
    if isinstance(weight, QTensor) and max_norm is None and weight.dim() == 2 and (
            weight.scale is None or weight.scale.shape[0] == weight.codes.shape[0]):
        # rows are quantized independently (per-row / per-group scales, or self-contained
        # GGUF blocks): dequantize only the rows looked up
        idx = input.reshape(-1)
        scale = None if weight.scale is None else weight.scale[idx]
        zp = None if weight.zero_point is None else weight.zero_point[idx]
        rows = QTensor(weight.codes[idx], scale, zp, weight.qtype, weight.axis, weight.group_size,
                       (idx.numel(), weight.shape[1]), weight.dtype)
        return rows.dequantize().reshape(*input.shape, weight.shape[1])
    return F.embedding(input, _float(weight), padding_idx, max_norm, norm_type, scale_grad_by_freq, sparse)


FUNCTION_TABLE = {f: _route(f) for f in (F.linear, F.conv1d, F.conv2d, F.layer_norm)}
FUNCTION_TABLE[F.embedding] = _embedding


def dispatch_fallback(func, args, kwargs):
    name = str(func)
    if name not in _FALLBACK_SEEN:
        _FALLBACK_SEEN.add(name)
        warnings.warn(f"lowbit: {name} has no QTensor implementation; dequantizing its QTensor arguments "
                      "(slow path, warned once per op)", stacklevel=3)
    args, kwargs = torch.utils._pytree.tree_map_only(QTensor, lambda t: t.dequantize(), (args, kwargs))
    return func(*args, **kwargs)


def dequantize_fallback_ops():
    """Names of the aten ops that have fallen back to dequantization so far."""
    return sorted(_FALLBACK_SEEN)
