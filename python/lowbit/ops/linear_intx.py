"""Mixed-precision linear with packed 2- or 4-bit weights (W4A16, W2A16).

Kernels and which one runs when: docs/kernels.md, "2- and 4-bit weights".
"""
from typing import Optional

import torch

from ._fake_helpers import check_float

__all__ = ["linear_intx"]

_OP = "linear_intx"


def linear_intx(x: torch.Tensor, packed: torch.Tensor, scale: torch.Tensor,
                zero_point: Optional[torch.Tensor], bits: int,
                bias: Optional[torch.Tensor] = None, int8_activations: bool = False) -> torch.Tensor:
    """``y = x @ W.T + bias`` with ``W[n, k] = (code[n, k] - zero_point[n, g]) * scale[n, g]``.

    ``g = k // group_size``, ``group_size = K // scale.shape[1]``.

    Args:
        x: float32 / float16 / bfloat16 ``[..., K]``; any number of leading axes
            (M = their product; M = 0 gives an empty result). Non-contiguous x is copied.
        packed: uint8 ``[N, K * bits / 8]``: ``pack_bits(codes, bits)`` of the int8
            codes ``[N, K]`` (canonical layout, docs/formats.md). K is read from it,
            so K must be a multiple of 8.
        scale: float32 ``[N, K / group_size]``; ``group_size`` must be a multiple of 8
            (groups of 32, 64, 128, 256 take the fastest kernels).
        zero_point: ``None`` (symmetric), or float32 of the shape of ``scale`` (any
            float value, HQQ's non-integral zero-points included), or int8 of that
            shape for integer zero points (minmax's): the same result, and the CPU
            kernels read 1 byte per group instead of 4 (3 fewer bytes per 128 weights
            at group 128, about 4% of a 4-bit weight's bytes).
        bits: 4 or 2.
        bias: optional ``[N]`` of any float dtype.
        int8_activations: quantize each row of x on the fly to int8 per block of 32
            elements (symmetric, float32 scale ``amax / 127``, round-half-even) and run
            integer dot products: faster, with the extra error of 8-bit activations
            (about 0.5% relative on Gaussian data). Only honoured when
            ``group_size % 32 == 0``; otherwise the exact path runs.
            ``lowbit.last_kernels()["linear_intx"]`` names the kernel that ran.

    Returns:
        ``[..., N]`` in x's dtype, accumulated in float32 (the exact path is
        deterministic run to run and independent of the thread count).

    float32 x and 4-bit weights on a CPU with AVX512_BF16, small M: x is taken as a sum of
    bfloat16 terms (docs/kernels.md) as ``torch.get_float32_matmul_precision()`` allows:
    "highest" (the default) three, exact; "high" two (16 significant bits of x); "medium"
    one (x rounded to bfloat16), the precisions torch's own float32 matmuls take there.
    At "medium", large M (>= 64) also rounds float32 x to bfloat16 for the bfloat16 GEMM
    (as ``linear_int8``, ``linear_fp8``, ``linear_q8_0`` and ``linear_q4_0`` do from M = 32).

    NaN / inf: on the exact path they propagate as in float arithmetic, except in the
    AVX512_BF16 register kernel (2- and 4-bit weights, small M; its name has "bf16"), which
    takes ``(2^bits + 2^(bits-1) + zero_point) * scale * sum(x)`` out of each group: there an
    infinite element of x makes its row NaN. On the int8 path a block of x holding NaN or +-inf makes that row's
    outputs NaN.

    Raises:
        RuntimeError: bits not 2 / 4, wrong dtypes or ranks, scale / zero_point not
        ``[N, K / group_size]``, group_size not a multiple of 8, x's last axis not K,
        bias not ``[N]``.
    """
    return torch.ops.lowbit.linear_intx(x, packed, scale, zero_point, bits, bias, int8_activations)


@torch.library.register_fake("lowbit::linear_intx")
def _linear_intx_fake(x, packed, scale, zero_point, bits, bias=None, int8_activations=False):
    torch._check(bits in (2, 4), lambda: f"lowbit.{_OP}: expected bits 2 or 4, got {bits}")
    torch._check(packed.dtype == torch.uint8,
                 lambda: f"lowbit.{_OP}: expected packed of dtype torch.uint8, got {packed.dtype}")
    torch._check(packed.dim() == 2,
                 lambda: f"lowbit.{_OP}: expected packed of rank 2 ([N, K * bits / 8]), got shape {list(packed.shape)}")
    torch._check(scale.dtype == torch.float32,
                 lambda: f"lowbit.{_OP}: expected scale of dtype torch.float32, got {scale.dtype}")
    torch._check(scale.dim() == 2,
                 lambda: f"lowbit.{_OP}: expected scale of rank 2 ([N, K / group_size]), got shape {list(scale.shape)}")
    n = packed.shape[0]
    k = packed.shape[1] * 8 // bits
    torch._check(scale.shape[0] == n, lambda: f"lowbit.{_OP}: expected scale with N = {n} rows, got {list(scale.shape)}")
    groups = scale.shape[1]
    torch._check(groups >= 1 and k % groups == 0,
                 lambda: f"lowbit.{_OP}: expected scale of shape [N, K / group_size] with K = {k}, got {list(scale.shape)}")
    torch._check(k == 0 or (k // groups) % 8 == 0,
                 lambda: f"lowbit.{_OP}: expected group_size = K / scale.size(1) to be a multiple of 8, got {k // groups}")
    if zero_point is not None:
        torch._check(zero_point.dtype in (torch.float32, torch.int8),
                     lambda: f"lowbit.{_OP}: expected zero_point of dtype float32 or int8, got {zero_point.dtype}")
        torch._check(zero_point.shape == scale.shape,
                     lambda: f"lowbit.{_OP}: expected zero_point of the shape of scale {list(scale.shape)}, got {list(zero_point.shape)}")
    check_float(x, _OP, "x")
    torch._check(x.dim() >= 1, lambda: f"lowbit.{_OP}: expected x of rank >= 1 ([..., K]), got a 0-d tensor")
    torch._check(x.shape[-1] == k,
                 lambda: f"lowbit.{_OP}: expected x with last axis K = {k} (the weight's input features), got x of shape {list(x.shape)}")
    if bias is not None:
        torch._check(bias.dim() == 1 and bias.shape[0] == n,
                     lambda: f"lowbit.{_OP}: expected bias of shape [{n}], got {list(bias.shape)}")
        check_float(bias, _OP, "bias")
    return x.new_empty((*x.shape[:-1], n))
