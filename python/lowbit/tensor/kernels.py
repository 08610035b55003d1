"""Fast paths of ``F.linear`` for frozen quantized weights: the lowbit linear ops.

Registered with :func:`lowbit.tensor.functions.register_kernel`; a path declines
(returns ``NotImplemented``) when autograd needs the inputs (QAT before freeze),
when the tensors are not on the CPU, or when the weight's layout has no kernel,
and the dequantize-one-layer default runs instead. ``lowbit.last_kernels()``
names the kernel of the latest call of each op.
"""
import contextlib

import torch
import torch.nn.functional as F

from .. import ops
from .functions import register_kernel
from .qtensor import QTensor

# Whether the 2/4-bit kernels quantize activations to int8 on the fly (per block
# of 32, integer dot products). Off by default: on MiniLM the extra error is under
# 10% of the 4-bit weight error over the whole model, but 10-12% on the layers fed
# by LayerNorm outliers (tests/workflow/test_int8_activations.py).
_INT8_ACTIVATIONS = {"enabled": False}


def int8_activations_enabled() -> bool:
    """Whether the 2/4-bit linear kernels quantize activations to int8 on the fly."""
    return _INT8_ACTIVATIONS["enabled"]


def set_int8_activations(enabled: bool) -> None:
    """Choose the activation path of the 2/4-bit linear kernels: ``True`` (default)
    quantizes each row of activations to int8 per block of 32 and runs integer dot
    products (faster); ``False`` (default) keeps float activations (the exact path)."""
    _INT8_ACTIVATIONS["enabled"] = bool(enabled)


@contextlib.contextmanager
def int8_activations(enabled: bool):
    """Context manager form of :func:`set_int8_activations`."""
    before = int8_activations_enabled()
    set_int8_activations(enabled)
    try:
        yield
    finally:
        set_int8_activations(before)


def _needs_autograd(*tensors) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _linear(input, weight, bias=None):
    if not isinstance(weight, QTensor) or isinstance(input, QTensor) or weight.dim() != 2:
        return NotImplemented
    if input.device.type == "cuda" and weight.device.type == "cuda" and not _needs_autograd(input, weight, bias):
        from .kernels_cuda import linear_cuda
        return linear_cuda(input, weight, bias)
    if input.device.type != "cpu" or weight.device.type != "cpu" or _needs_autograd(input, weight, bias):
        return NotImplemented
    q = weight.qtype
    n, k = weight.shape
    if q.is_packed and k % 8 == 0 and weight.scale.shape[0] == n and (k // weight.scale.shape[1]) % 8 == 0:
        return ops.linear_intx(input, weight.codes, weight.scale, weight.zero_point, q.bits, bias,
                               int8_activations_enabled())
    if q.name == "qint8" and weight.zero_point is None and weight.scale.shape == (n, 1):
        # W8A16: activations stay float (int8 activations are a qtype choice, not a kernel trick)
        return ops.linear_int8(input, weight.codes, weight.scale, bias)
    if q.is_float and weight.scale.shape in ((n, 1), (1, 1)):
        return ops.linear_fp8(input, weight.codes, weight.scale, bias)
    return NotImplemented


register_kernel(F.linear, _linear)
