"""Linear layers with int8 weights: W8A16 (float activations) and W8A8 (int8 activations).

Kernels: csrc/cpu/gemm_int8.{h,cpp}, csrc/cpu/avx2/gemm_int8_avx2.cpp; which one ran
for the latest call is in ``lowbit._C.last_kernels()["linear_int8"]``
(docs/kernels.md, int8 section).
"""
import torch

from ._fake_helpers import check_float

__all__ = ["linear_int8", "INT8_ACT_MAX_K"]

# Largest K for int8_activations=True: 127 * 128 * K must fit an int32 accumulator.
INT8_ACT_MAX_K = 131072


def linear_int8(x: torch.Tensor, codes: torch.Tensor, scale: torch.Tensor,
                bias: torch.Tensor | None = None, int8_activations: bool = False) -> torch.Tensor:
    """``y = x @ (codes * scale).T + bias`` with int8 weight codes, per output channel.

    Args:
        x: float32, float16 or bfloat16 ``[..., K]`` (rank >= 1; non-contiguous
            input is copied). Any number of rows ``M = prod(x.shape[:-1])``, 0 included.
        codes: int8 ``[N, K]``, the canonical symmetric per-channel codes
            (``quantize_affine`` with ``axis=0``); every value -128..127 is accepted.
        scale: float32 ``[N, 1]``.
        bias: optional ``[N]`` of any float dtype (used in float32).
        int8_activations: ``False`` (W8A16, exact): float activations,
            ``sum_k float(codes[n, k]) * x[m, k]`` accumulated in float32, then
            ``* scale[n] + bias[n]``; deterministic run to run. ``True`` (W8A8): each
            row of ``x`` is quantized on the fly with one symmetric float32 scale,
            ``sx = max|x[m]| / 127``, ``xq = clamp(round_half_even(x / sx), -127, 127)``
            (a zero row gives ``sx = 0``, ``xq = 0``); ``acc = sum_k codes * xq`` in
            int32 (exact), ``y = float(acc) * sx * scale[n] + bias[n]`` in float32,
            bit-identical on the AVX2 and portable paths. Requires ``K <= 131072``.

    Returns:
        ``[..., N]`` in ``x.dtype`` (rounded from the float32 result). On a CPU with
        AVX512_BF16 and ``M >= 32`` (float activations), bfloat16 ``x``, and float32 ``x``
        under ``torch.set_float32_matmul_precision("medium")`` (rounded to bfloat16), run
        the bfloat16 GEMM on the exact codes (docs/kernels.md).

    NaN / inf: with float activations they propagate by IEEE arithmetic. With int8
    activations a row of ``x`` holding NaN or inf gets ``sx = NaN``: that whole
    output row is NaN. Non-finite ``scale`` / ``bias`` propagate per IEEE.

    Raises:
        RuntimeError: ``codes`` not int8 / not 2-D, ``scale`` not float32 ``[N, 1]``,
        ``x`` not a float dtype / 0-d / last axis != K, ``bias`` not ``[N]`` float,
        tensors on different devices, or ``K > 131072`` with int8 activations.
    """
    return torch.ops.lowbit.linear_int8(x, codes, scale, bias, int8_activations)


@torch.library.register_fake("lowbit::linear_int8")
def _linear_int8_fake(x, codes, scale, bias=None, int8_activations=False):
    op = "linear_int8"
    torch._check(codes.dtype == torch.int8, lambda: f"lowbit.{op}: expected codes of dtype torch.int8, got {codes.dtype}")
    torch._check(codes.dim() == 2, lambda: f"lowbit.{op}: expected codes of rank 2 ([N, K]), got shape {list(codes.shape)}")
    n, k = codes.shape
    torch._check(scale.dtype == torch.float32, lambda: f"lowbit.{op}: expected scale of dtype torch.float32, got {scale.dtype}")
    torch._check(scale.dim() == 2 and scale.shape[0] == n and scale.shape[1] == 1,
                 lambda: f"lowbit.{op}: expected scale of shape [{n}, 1] (one per output channel), got {list(scale.shape)}")
    check_float(x, op, "x")
    torch._check(x.dim() >= 1, lambda: f"lowbit.{op}: expected x of rank >= 1 ([..., K]), got a 0-d tensor")
    torch._check(x.shape[-1] == k,
                 lambda: f"lowbit.{op}: expected x with last axis K = {k} (the weight's input features), got x of shape {list(x.shape)}")
    if bias is not None:
        torch._check(bias.dim() == 1 and bias.shape[0] == n, lambda: f"lowbit.{op}: expected bias of shape [{n}], got {list(bias.shape)}")
        check_float(bias, op, "bias")
    torch._check(not int8_activations or k <= INT8_ACT_MAX_K,
                 lambda: f"lowbit.{op}: expected K <= {INT8_ACT_MAX_K} with int8_activations=True (int32 accumulators), got K = {k}")
    return x.new_empty((*x.shape[:-1], n))
