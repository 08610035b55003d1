"""GPTQ (Frantar et al., 2022): quantize a Linear weight column by column and push each
column's rounding error onto the columns not yet quantized, weighted by the inverse of
the Gram matrix ``H = X^T X / n`` of the layer's calibration inputs, so that the layer's
*output* error on those inputs is small rather than the weight error.

Use: ``quantize(model, weights="int4", optimizer="gptq")``, then run calibration samples
under ``with Calibration(): model(samples)`` (each quantized Linear accumulates H of its
inputs), then ``freeze(model)``, which runs GPTQ per Linear and releases H.

- Group parameters (scale, zero-point) come from the base optimizer (for 2/4 bits minmax with
  the range of each group shrunk where that lowers its squared error, see
  ``ClippedMinMaxOptimizer``; absmax for 8 bits) on the original weight, once per group
  ("static groups"), so that
  columns can be visited in decreasing order of ``diag(H)`` ("act order") and every code
  still uses its own group's parameters. Codes, scales and zero-points then have exactly
  the layout of the other optimizers: a GPTQ model saves, loads and runs like any other.
- Only ``Linear`` weights with integer qtypes are GPTQ-quantized; other modules given this
  optimizer (Conv, Embedding) use the base optimizer.
- Memory: H is ``K x K`` float32 per Linear (K = input features) until ``freeze``: 64 MB
  for K = 4096. Use ``include=`` to quantize a large model in parts.
- Before ``freeze`` (quantization-aware training, calibration itself) the weight is
  fake-quantized with the base optimizer.
"""
from typing import Optional

import torch

from .. import ops
from ..qtypes import QType
from .base import AbsmaxOptimizer, ClippedMinMaxOptimizer, Optimizer


class GptqOptimizer(Optimizer):
    """GPTQ with static groups and act order (see the module docstring).

    ``damp``: fraction of the mean of ``diag(H)`` added to the diagonal before inverting. It
    regularises H estimated from few calibration tokens; the default 0.1 (the paper's code
    uses 0.01) because a few hundred tokens for K = 384-1536 inputs overfit: on MiniLM with
    60 sentences, int4 group 128, 0.01 / 0.03 / 0.1 / 0.3 gave 0.979 / 0.981 / 0.982 / 0.982
    mean embedding cosine. ``block``: columns updated
    together (speed only, the result is the same up to rounding).
    """
    name = "gptq"
    needs_input_gram = True

    def __init__(self, damp: float = 0.1, block: int = 128):
        if not damp > 0:
            raise ValueError(f"GptqOptimizer: expected damp > 0, got {damp}")
        if block < 1:
            raise ValueError(f"GptqOptimizer: expected block >= 1, got {block}")
        self.damp = float(damp)
        self.block = int(block)

    @staticmethod
    def base(qtype: QType) -> Optimizer:
        return ClippedMinMaxOptimizer() if qtype.is_packed else AbsmaxOptimizer()

    def __call__(self, weight, qtype, axis=None, group_size=None):
        """The base optimizer's parameters (used until freeze and for non-Linear modules)."""
        return self.base(qtype)(weight, qtype, axis, group_size)

    @torch.no_grad()
    def quantize_codes(self, weight: torch.Tensor, qtype: QType, group_size: Optional[int],
                       gram: torch.Tensor):
        """Codes (int8 ``[N, K]``), scale and zero-point of ``weight`` ``[N, K]`` given the
        input Gram matrix ``gram`` ``[K, K]``."""
        if qtype.is_float:
            raise ValueError(f"GPTQ needs an integer qtype, got {qtype}")
        n, k = weight.shape
        if gram.shape != (k, k):
            raise ValueError(f"GPTQ: expected a Gram matrix of shape [{k}, {k}], got {list(gram.shape)}")
        axis = None if group_size is not None else 0
        w = weight.detach().float()
        scale, zero_point = self.base(qtype)(w, qtype, axis, group_size)
        g = group_size if group_size is not None else k
        s_col = scale.float().repeat_interleave(g, dim=1) if scale.shape[1] > 1 else scale.float().expand(n, k)
        z_col = (torch.zeros_like(s_col) if zero_point is None else
                 (zero_point.float().repeat_interleave(g, dim=1) if zero_point.shape[1] > 1
                  else zero_point.float().expand(n, k)))

        h = gram.detach().to(torch.float64).clone()
        dead = torch.diag(h) == 0
        h[dead, dead] = 1.0
        w = w.to(torch.float64).clone()
        w[:, dead] = 0.0
        perm = torch.argsort(torch.diag(h), descending=True)
        w, h = w[:, perm], h[perm][:, perm]
        s_col, z_col = s_col[:, perm].double(), z_col[:, perm].double()
        h += self.damp * torch.mean(torch.diag(h)) * torch.eye(k, dtype=h.dtype)
        chol = torch.linalg.cholesky(h)
        hinv = torch.linalg.cholesky(torch.cholesky_inverse(chol), upper=True)

        qmin, qmax = qtype.qmin, qtype.qmax
        codes = torch.empty(n, k, dtype=torch.float64)
        for b0 in range(0, k, self.block):
            b1 = min(k, b0 + self.block)
            wb = w[:, b0:b1].clone()
            err = torch.zeros_like(wb)
            hb = hinv[b0:b1, b0:b1]
            for i in range(b1 - b0):
                s, z = s_col[:, b0 + i], z_col[:, b0 + i]
                col = wb[:, i]
                # the codes of ops.quantize_affine: round half to even, then clamp
                q = torch.clamp(torch.round(col / s + z), qmin, qmax)
                codes[:, b0 + i] = q
                e = (col - (q - z) * s) / hb[i, i]
                wb[:, i:] -= e.unsqueeze(1) * hb[i, i:].unsqueeze(0)
                err[:, i] = e
            w[:, b1:] -= err @ hinv[b0:b1, b1:]
        out = torch.empty_like(codes)
        out[:, perm] = codes
        return out.to(torch.int8), scale, zero_point
