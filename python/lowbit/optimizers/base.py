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


class ClippedMinMaxOptimizer(MinMaxOptimizer):
    """Asymmetric like :class:`MinMaxOptimizer`, but each group (or row) takes the range
    ``[a * min(w, 0), a * max(w, 0)]`` with the shrink ``a`` from ``shrinks`` that gives the
    smallest squared weight error after rounding: a few outliers no longer set the step of
    the whole group. Groups of a 2-D weight or one range per row; anything else is plain
    minmax. Integer qtypes only. Its ``name`` stays "minmax": same parameter layout and
    meaning, only the choice of range differs."""

    def __init__(self, shrinks=tuple(1.0 - 0.025 * i for i in range(13))):
        self.shrinks = tuple(float(a) for a in shrinks)

    def __call__(self, weight, qtype, axis=None, group_size=None):
        if qtype.is_float or weight.dim() != 2 or (group_size is None and axis not in (0, -2)):
            return super().__call__(weight, qtype, axis, group_size)  # plain minmax; raises for float8
        w = weight.detach().float()
        n, k = w.shape
        g = group_size if group_size is not None else k
        best_err = best_s = best_z = None
        for a in self.shrinks:
            s, z = ops.choose_qparams_affine(w * a, qtype.bits, False, axis, group_size)
            d = ops.dequantize_affine(ops.quantize_affine(w, s, z, qtype.bits), s, z, torch.float32)
            err = (d - w).square().reshape(n, k // g, g).sum(-1).reshape(s.shape)  # one per parameter
            if best_err is None:
                best_err, best_s, best_z = err, s.clone(), z.clone()
            else:
                better = err < best_err
                best_err = torch.where(better, err, best_err)
                best_s = torch.where(better, s, best_s)
                best_z = torch.where(better, z, best_z)
        return best_s, best_z
