"""Half-quadratic quantization (HQQ, Badri & Shaji 2023) of the zero-point.

HQQ looks for the zero-point ``z`` minimising ``||W - dq(q(W; s, z))||_p`` with
``p < 1``, a norm that tolerates a few large errors (outliers) in exchange for
many small ones. Splitting the problem with an auxiliary error term ``E`` gives
two easy steps, alternated for a few iterations:

1. ``E = shrink_p(W - W_hat, beta)``: the generalised soft-thresholding that
   solves ``min_E ||E||_p + beta/2 ||E - (W - W_hat)||^2``;
2. ``z = mean_group(Q - (W - E) / s)``: the closed-form minimiser in ``z`` of the
   quadratic term, with the codes ``Q`` fixed;

while ``beta`` grows by ``kappa`` each time (stopping early once no group improves).
The start, and the scale that stays fixed, are the clipped-minmax range of each group
(:class:`~lowbit.optimizers.base.ClippedMinMaxOptimizer`: minmax shrunk by up to 30%
where that lowers the group's squared error; plain minmax for shapes it does not take).
All groups are solved at once with whole-tensor operations; each group keeps the
zero-point of its lowest mean squared error seen, so the result is never worse than
that start in the L2 sense. On all-MiniLM-L6-v2 at int4 group 128 (embedding cosine over
54 sentences): minmax 0.9591, clipped minmax 0.9621, HQQ from minmax 0.9589, HQQ from
the clipped range 0.9634.
"""
import torch

from .base import ClippedMinMaxOptimizer, Optimizer


def _shrink_lp(x: torch.Tensor, beta: float, p: float) -> torch.Tensor:
    a = x.abs()
    shrunk = a - (a + 1e-8).pow_(p - 1).div_(beta)
    return shrunk.clamp_min_(0).mul_(torch.sign(x))


class HqqOptimizer(Optimizer):
    """HQQ zero-point refinement on top of the clipped-minmax range; integer qtypes only."""
    name = "hqq"

    def __init__(self, iterations: int = 20, p: float = 0.7, beta: float = 10.0, kappa: float = 1.01):
        self.iterations, self.p, self.beta, self.kappa = iterations, p, beta, kappa

    @torch.no_grad()
    def __call__(self, weight, qtype, axis=None, group_size=None):
        if qtype.is_float:
            raise ValueError(f"the hqq optimizer needs an integer qtype, got {qtype}; use 'absmax' for float8")
        scale, zero = ClippedMinMaxOptimizer()(weight, qtype, axis, group_size)
        n, k = weight.shape
        if group_size is not None:
            w = weight.float().reshape(n, k // group_size, group_size)
        elif axis is not None:
            w = weight.float().reshape(n, 1, k) if axis in (0, -2) else weight.float().t().reshape(k, 1, n)
        else:
            w = weight.float().reshape(1, 1, n * k)
        shape = scale.shape
        s = scale.reshape(w.shape[0], w.shape[1], 1)
        u = w / s  # the weight in units of its scale: the scale is fixed, so errors compare in these units
        z = zero.reshape(w.shape[0], w.shape[1], 1).clone()
        best_z = z.clone()
        best_err = torch.full_like(z, float("inf"))
        beta = self.beta
        for _ in range(self.iterations):
            r = u + z
            q = torch.round(r).clamp_(qtype.qmin, qtype.qmax)
            r.sub_(q)  # residual w - w_hat, in units of the scale
            err = r.square().mean(-1, keepdim=True)
            better = err < best_err
            if not bool(better.any()):
                break
            best_err = torch.where(better, err, best_err)
            best_z = torch.where(better, z, best_z)
            r_mean = r.mean(-1, keepdim=True)
            r.mul_(s)
            e = _shrink_lp(r, beta, self.p)
            # closed form: z = mean(q - (w - e) / s) = z - mean(r / s) + mean(e) / s
            z = z - r_mean + e.mean(-1, keepdim=True) / s
            beta *= self.kappa
        return scale, best_z.reshape(shape).contiguous()
