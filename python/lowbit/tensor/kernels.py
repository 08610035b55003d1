"""Fast paths of ``F.linear`` for frozen quantized weights: the lowbit linear ops.

Registered with :func:`lowbit.tensor.functions.register_kernel`; a path declines
(returns ``NotImplemented``) when autograd needs the inputs (QAT before freeze),
when the tensors are not on the CPU, or when the weight's layout has no kernel,
and the dequantize-one-layer default runs instead. ``lowbit.last_kernels()``
names the kernel of the latest call of each op. Weights: packed int2 / int4 ->
``linear_intx``, int8 -> ``linear_int8``, float8 -> ``linear_fp8``, GGUF Q4_0 / Q8_0
-> ``linear_q4_0`` / ``linear_q8_0`` (the block bytes as they are stored).
"""
import contextlib

import torch
import torch.nn.functional as F

from .. import ops
from .functions import register_kernel
from .qtensor import QTensor

# Whether the 2/4-bit kernels (int2 / int4 and GGUF Q4_0) quantize activations to
# int8 on the fly (per block of 32, integer dot products). Off by default: on MiniLM
# the extra error is under 10% of the 4-bit weight error over the whole model, but
# 10-12% on the layers fed by LayerNorm outliers (tests/workflow/test_int8_activations.py).
# A weight-only model thus computes x @ dequantize(W).T as its quantization map says,
# whatever the kernel. The ops' own default differs for Q4_0 (linear_q4_0 defaults to
# int8 activations, as llama.cpp); the model path passes the switch explicitly.
_INT8_ACTIVATIONS = {"enabled": False}


def int8_activations_enabled() -> bool:
    """Whether the 2/4-bit linear kernels quantize activations to int8 on the fly."""
    return _INT8_ACTIVATIONS["enabled"]


def set_int8_activations(enabled: bool) -> None:
    """Choose the activation path of the 2/4-bit linear kernels (int2, int4 and GGUF Q4_0
    weights): ``True`` quantizes each row of activations to int8 per block of 32 and runs
    integer dot products (faster for few rows; llama.cpp's scheme for Q4_0); ``False``
    (default) keeps float activations (the exact path). 8-bit weights (int8, Q8_0) and
    float8 always run with float activations."""
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


def int8_zero_points(zero_point: torch.Tensor) -> torch.Tensor:
    """``zero_point`` as int8 when every value is an integer in int8's range (minmax
    quantization's are; HQQ's are not), else ``zero_point`` itself: what ``linear_intx``
    reads in 1 byte per group instead of 4, for the same result."""
    z8 = zero_point.to(torch.int8)
    return z8 if torch.equal(z8.to(zero_point.dtype), zero_point) else zero_point


def _kernel_zero_point(weight: QTensor):
    """The zero points ``linear_intx`` reads for ``weight``: an int8 copy when every zero
    point is an integer in int8's range (minmax quantization's are; HQQ's are not), which
    the CPU kernels read in 1 byte per group instead of 4 (about 4% of the bytes of a 4-bit
    weight at group 128, 12% of a 2-bit one at group 64) for the same result. Made once per
    weight and kept on it (``N * K / group_size`` bytes), not in its state dict; remade if
    ``zero_point`` is replaced or changed in place."""
    zp = weight.zero_point
    # under torch.compile the float32 zero points (the check below is data-dependent)
    if zp is None or zp.dtype != torch.float32 or torch.compiler.is_compiling():
        return zp
    cached = weight.__dict__.get("_kernel_zp")  # (zero_point, its version, what to pass)
    if cached is None or cached[0] is not zp or cached[1] != zp._version:
        cached = (zp, zp._version, int8_zero_points(zp))
        weight.__dict__["_kernel_zp"] = cached
    return cached[2]


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
    if q.is_block:
        if input.dtype not in (torch.float32, torch.float16, torch.bfloat16):
            return NotImplemented
        if q.name == "qgguf_q4_0":
            return ops.linear_q4_0(input, weight.codes, bias, int8_activations_enabled())
        # Q8_0 as int8 weights: float activations (int8 ones would be a qtype choice; on MiniLM
        # they raise 1 - cosine from 0.00013 to 0.00035, the size of the 8-bit weight error)
        return ops.linear_q8_0(input, weight.codes, bias, False)
    if q.is_packed and k % 8 == 0 and weight.scale.shape[0] == n and (k // weight.scale.shape[1]) % 8 == 0:
        return ops.linear_intx(input, weight.codes, weight.scale, _kernel_zero_point(weight), q.bits, bias,
                               int8_activations_enabled())
    if q.name == "qint8" and weight.zero_point is None and weight.scale.shape == (n, 1):
        # W8A16: activations stay float (int8 activations are a qtype choice, not a kernel trick)
        return ops.linear_int8(input, weight.codes, weight.scale, bias)
    if q.is_float and weight.scale.shape in ((n, 1), (1, 1)):
        return ops.linear_fp8(input, weight.codes, weight.scale, bias)
    return NotImplemented


register_kernel(F.linear, _linear)
