"""How weight scales and zero-points are chosen.

An optimizer is any callable ``opt(weight, qtype, axis=None, group_size=None) ->
(scale, zero_point)`` where ``weight`` is a 2-D float matrix ``[N, K]`` (output
features x input features), the granularity is per row (``axis=0``) or per group of
``group_size`` consecutive input features, ``scale`` is float32 in the keepdim shape
of that granularity (``[N, 1]`` or ``[N, K // group_size]``) and ``zero_point`` is
``None`` (symmetric) or a float32 tensor of the same shape. Codes are then
``clamp(round_half_even(w / scale + zero_point), qmin, qmax)``.
"""
from typing import Union

from .base import Optimizer, AbsmaxOptimizer, ClippedMinMaxOptimizer, MinMaxOptimizer
from .gptq import GptqOptimizer
from .hqq import HqqOptimizer

__all__ = ["Optimizer", "AbsmaxOptimizer", "MinMaxOptimizer", "ClippedMinMaxOptimizer", "HqqOptimizer", "GptqOptimizer",
           "get_optimizer", "OPTIMIZERS"]

OPTIMIZERS = {"absmax": AbsmaxOptimizer, "minmax": MinMaxOptimizer, "hqq": HqqOptimizer, "gptq": GptqOptimizer}


def get_optimizer(value: Union[str, Optimizer, None]):
    """An optimizer instance from a name (``"absmax"``, ``"minmax"``, ``"hqq"``, ``"gptq"``), an
    object implementing the interface, or ``None`` (returns ``None``: the default for
    the qtype is chosen later, see :func:`default_optimizer`)."""
    if value is None:
        return None
    if isinstance(value, str):
        if value.lower() not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {value!r}; expected one of {sorted(OPTIMIZERS)} or an object "
                             "callable as opt(weight, qtype, axis=None, group_size=None) -> (scale, zero_point)")
        return OPTIMIZERS[value.lower()]()
    if not callable(value):
        raise ValueError(f"optimizer must be a name or a callable object, got {type(value).__name__}")
    return value


def default_optimizer(qtype):
    """absmax (symmetric) for 8-bit and float8 weights, minmax (asymmetric) for 2 and 4 bits,
    None for the GGUF block formats (their scales are fixed by the format)."""
    if qtype.is_block:
        return None
    return MinMaxOptimizer() if qtype.is_packed else AbsmaxOptimizer()


def optimizer_name(opt) -> str:
    return getattr(opt, "name", type(opt).__name__)
