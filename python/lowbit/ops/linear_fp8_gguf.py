"""Linear layers with float8 or GGUF Q8_0 / Q4_0 weights (CPU kernels: docs/kernels.md).

All three compute ``y = x @ dequantize(W).T + bias`` for ``x`` of shape ``[..., K]``
(float32, float16 or bfloat16; any number of leading axes, any ``M``, ``M = 0``
included) and return ``y`` of shape ``[..., N]`` in ``x.dtype``. Accumulation is in
float32 (or int32 inside a block for the int8-activation path); float16 /
bfloat16 ``x`` is widened to float32 first and ``y`` is rounded once at the end. On a CPU
with AVX512_BF16 and ``M >= 32``, bfloat16 ``x`` (and float32 ``x`` under
``torch.set_float32_matmul_precision("medium")``, rounded to bfloat16) runs the bfloat16
GEMM instead, summing in float32 (docs/kernels.md).
``bias`` is ``[N]`` of any float dtype (used as float32). The weight is read in
its canonical layout (docs/formats.md) and never dequantized as a whole.
Non-contiguous inputs are copied to contiguous memory first.

NaN / inf: the float-activation paths follow IEEE arithmetic of the dequantized
product (a NaN or inf in ``x`` or in a weight spreads to the outputs it touches).
On the int8-activation path a block of ``x`` holding a NaN or an inf makes the
outputs of its row NaN.
"""
from typing import Optional

import torch

from ._fake_helpers import check_float

__all__ = ["linear_fp8", "linear_q8_0", "linear_q4_0"]

_FP8 = (torch.float8_e4m3fn, torch.float8_e5m2)


def linear_fp8(x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor,
               bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``y = x @ (q.float() * scale).T + bias`` with float8 weights.

    Args:
        x: ``[..., K]`` float32 / float16 / bfloat16.
        q: ``[N, K]`` ``torch.float8_e4m3fn`` or ``torch.float8_e5m2`` codes.
        scale: float32 ``[N, 1]`` (per output channel) or ``[1, 1]`` (per tensor).
        bias: optional ``[N]`` float tensor.

    Computed as ``y[m, n] = scale[n] * sum_k float(q[n, k]) * x[m, k] + bias[n]``
    in float32; the codes are decoded exactly (subnormals included). e4m3fn NaN
    codes (``0x7f``, ``0xff``) make their output column NaN; e5m2 infinities and
    NaNs act by IEEE rules.

    Raises:
        RuntimeError: wrong dtypes, ``q`` not 2-D, ``scale`` not ``[N, 1]`` /
        ``[1, 1]``, ``x.shape[-1] != K``, ``bias`` not ``[N]``.
    """
    return torch.ops.lowbit.linear_fp8(x, q, scale, bias)


def linear_q8_0(x: torch.Tensor, blocks: torch.Tensor, bias: Optional[torch.Tensor] = None,
                int8_activations: bool = False) -> torch.Tensor:
    """``y = x @ dequantize_q8_0(blocks).T + bias`` with GGUF Q8_0 weights.

    Args:
        x: ``[..., K]`` float32 / float16 / bfloat16, ``K = blocks.shape[1] / 34 * 32``.
        blocks: uint8 ``[N, K / 32 * 34]``, llama.cpp ``block_q8_0`` rows.
        bias: optional ``[N]`` float tensor.
        int8_activations: ``False`` (default): exact float activations,
            ``sum_b d_b * sum_i code_i * x_i`` in float32. ``True`` (llama.cpp's scheme,
            faster, but with 8-bit weights the activation rounding adds an error of the
            order of the weight error itself, ~+44% on Gaussian data, which is why it is
            not the default): each block of 32
            values of an ``x`` row is quantized on the fly to int8 with a float32
            scale ``dx = max|x| / 127`` and codes ``round_half_even(x / dx)``
            (computed as ``x * (1 / dx)``), and each weight block contributes
            ``d * dx * int32_dot(codes, x_codes)``. Relative output error against
            the exact path is about ``||x - x_hat|| / ||x||``, i.e. ~0.5 % for
            Gaussian-like activations.

    Raises:
        RuntimeError: ``blocks`` not uint8 / not 2-D / last axis not a multiple of
        34, ``x`` with the wrong last axis or dtype, ``bias`` not ``[N]``.
    """
    return torch.ops.lowbit.linear_q8_0(x, blocks, bias, int8_activations)


def linear_q4_0(x: torch.Tensor, blocks: torch.Tensor, bias: Optional[torch.Tensor] = None,
                int8_activations: bool = True) -> torch.Tensor:
    """``y = x @ dequantize_q4_0(blocks).T + bias`` with GGUF Q4_0 weights.

    Args:
        x: ``[..., K]`` float32 / float16 / bfloat16, ``K = blocks.shape[1] / 18 * 32``.
        blocks: uint8 ``[N, K / 32 * 18]``, llama.cpp ``block_q4_0`` rows.
        bias: optional ``[N]`` float tensor.
        int8_activations: as for :func:`linear_q8_0`; the integer dot product uses
            the stored nibbles ``u = code + 8`` (0..15) as the unsigned operand and
            subtracts ``8 * sum(x_codes)`` per block.

    Raises:
        RuntimeError: ``blocks`` not uint8 / not 2-D / last axis not a multiple of
        18, ``x`` with the wrong last axis or dtype, ``bias`` not ``[N]``.
    """
    return torch.ops.lowbit.linear_q4_0(x, blocks, bias, int8_activations)


def _check_x_bias(x, bias, N, K, op):
    check_float(x, op, "x")
    torch._check(x.dim() >= 1, lambda: f"lowbit.{op}: expected x of rank >= 1 ([..., K]), got a 0-d tensor")
    torch._check(x.shape[-1] == K, lambda: f"lowbit.{op}: expected x with last axis K = {K} (the weight's input "
                                           f"features), got x of shape {list(x.shape)}")
    if bias is not None:
        torch._check(bias.dim() == 1 and bias.shape[0] == N,
                     lambda: f"lowbit.{op}: expected bias of shape [{N}], got {list(bias.shape)}")
        check_float(bias, op, "bias")
    return x.new_empty((*x.shape[:-1], N))


@torch.library.register_fake("lowbit::linear_fp8")
def _linear_fp8_fake(x, q, scale, bias=None):
    op = "linear_fp8"
    torch._check(q.dtype in _FP8, lambda: f"lowbit.{op}: expected q of dtype torch.float8_e4m3fn or "
                                          f"torch.float8_e5m2, got {q.dtype}")
    torch._check(q.dim() == 2, lambda: f"lowbit.{op}: expected q of rank 2 ([N, K]), got shape {list(q.shape)}")
    N, K = q.shape
    torch._check(scale.dtype == torch.float32, lambda: f"lowbit.{op}: expected scale of dtype Float, got {scale.dtype}")
    torch._check(scale.dim() == 2 and scale.shape[1] == 1 and scale.shape[0] in (N, 1),
                 lambda: f"lowbit.{op}: expected scale of shape [{N}, 1] (per output channel) or [1, 1], "
                         f"got {list(scale.shape)}")
    return _check_x_bias(x, bias, N, K, op)


def _gguf_fake(x, blocks, bias, op, block_bytes):
    torch._check(blocks.dtype == torch.uint8, lambda: f"lowbit.{op}: expected blocks of dtype Byte, got {blocks.dtype}")
    torch._check(blocks.dim() == 2, lambda: f"lowbit.{op}: expected blocks of rank 2 ([N, K / 32 * {block_bytes}]), "
                                            f"got shape {list(blocks.shape)}")
    torch._check(blocks.shape[1] % block_bytes == 0,
                 lambda: f"lowbit.{op}: expected the last axis of blocks to be a multiple of {block_bytes} bytes "
                         f"(one block of 32 weights each), got {blocks.shape[1]}")
    N = blocks.shape[0]
    K = blocks.shape[1] // block_bytes * 32
    return _check_x_bias(x, bias, N, K, op)


@torch.library.register_fake("lowbit::linear_q8_0")
def _linear_q8_0_fake(x, blocks, bias=None, int8_activations=True):
    return _gguf_fake(x, blocks, bias, "linear_q8_0", 34)


@torch.library.register_fake("lowbit::linear_q4_0")
def _linear_q4_0_fake(x, blocks, bias=None, int8_activations=True):
    return _gguf_fake(x, blocks, bias, "linear_q4_0", 18)
