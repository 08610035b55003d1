"""The optimizer interface and the two closed-form optimizers."""
from typing import Optional, Tuple

import torch

from .. import ops
from ..qtypes import QType


class Optimizer:
    """Base class (optional: any callable with this signature works).

    ``name`` is what ``quantization_map`` records; ``requantize`` can rebuild an
    optimizer by name only for the built-in ones, so a custom optimizer is fine for
    frozen models (their codes are saved) but not for re-quantizing float weights.
    """
    name = "optimizer"

    def __call__(self, weight: torch.Tensor, qtype: QType, axis: Optional[int] = None,
                 group_size: Optional[int] = None) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        raise NotImplementedError


class AbsmaxOptimizer(Optimizer):
    """Symmetric: ``scale = absmax / qmax``, no zero-point. Works for every qtype."""
    name = "absmax"

    def __call__(self, weight, qtype, axis=None, group_size=None):
        if qtype.is_float:
            return ops.choose_scale_fp8(weight, qtype.dtype, axis, group_size), None
        scale, _ = ops.choose_qparams_affine(weight, qtype.bits, True, axis, group_size)
        return scale, None


class MinMaxOptimizer(Optimizer):
    """Asymmetric: the range ``[min(w, 0), max(w, 0)]`` maps onto ``[qmin, qmax]`` with an
    integral zero-point. Integer qtypes only."""
    name = "minmax"

    def __call__(self, weight, qtype, axis=None, group_size=None):
        if qtype.is_float:
            raise ValueError(f"the minmax optimizer needs an integer qtype, got {qtype}; use 'absmax' for float8")
        return ops.choose_qparams_affine(weight, qtype.bits, False, axis, group_size)
