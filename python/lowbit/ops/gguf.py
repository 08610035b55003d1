"""GGUF Q8_0 and Q4_0 blocks, byte-identical to llama.cpp / the ``gguf`` package.

Layout (docs/formats.md, "GGUF Q8_0 and Q4_0 blocks"): the last axis is cut into
blocks of 32 elements. A Q8_0 block is 34 bytes: the fp16 scale ``d``
(little-endian), then 32 int8 codes. A Q4_0 block is 18 bytes: ``d``, then 16
bytes where byte ``j`` holds element ``j`` in its low nibble and element ``j + 16``
in its high nibble, each as ``code + 8``.

Quantization is gguf-py's (``gguf.quants.Q8_0`` / ``Q4_0``) in float32, with
input in float16/bfloat16 converted to float32 first:

* Q8_0: ``d = max|x| / 127``, ``id = 0 if d == 0 else 1 / d``,
  ``code = round_half_away_from_zero(x * id)``.
* Q4_0: ``m`` = the element of largest ``|x|`` (the first one on ties), with its
  sign; ``d = m / -8``, ``id = 0 if d == 0 else 1 / d``,
  ``code = min(trunc(x * id + 8.5), 15) - 8`` (product rounded to float32 before
  the addition).

The codes use the float32 ``d``; the stored scale is ``d`` rounded to fp16 (half to
even; a ``d`` of magnitude 65520 or more becomes ``inf``, as in gguf).
Dequantization is ``float32(d) * code`` rounded to the requested dtype.
"""
import torch

from ._fake_helpers import check_float

__all__ = ["quantize_q8_0", "dequantize_q8_0", "quantize_q4_0", "dequantize_q4_0",
           "GGUF_BLOCK_ELEMS", "Q8_0_BLOCK_BYTES", "Q4_0_BLOCK_BYTES"]

GGUF_BLOCK_ELEMS = 32
Q8_0_BLOCK_BYTES = 34
Q4_0_BLOCK_BYTES = 18


def quantize_q8_0(x: torch.Tensor) -> torch.Tensor:
    """Quantizes ``x`` to GGUF Q8_0 blocks along the last axis.

    Args:
        x: float32, float16 or bfloat16 tensor ``[..., K]`` of rank >= 1 with
            ``K % 32 == 0``; non-contiguous input is copied first.

    Returns:
        uint8 tensor ``[..., K // 32 * 34]``, byte for byte what
        ``gguf.quants.quantize(x.float().numpy(), GGMLQuantizationType.Q8_0)``
        returns. Empty input gives an empty output of that shape.

    Raises:
        RuntimeError: ``x`` not a float tensor, 0-d, ``K`` not a multiple of 32, or
        any NaN / infinity in ``x`` (the message names the first such block; gguf
        would write meaningless bytes there).
    """
    return torch.ops.lowbit.quantize_q8_0(x)


def dequantize_q8_0(blocks: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Decodes GGUF Q8_0 blocks: uint8 ``[..., B * 34]`` -> ``dtype`` ``[..., B * 32]``.

    Each element is ``float32(d) * code`` rounded to ``dtype`` (float32, float16 or
    bfloat16); with float32 this equals ``gguf.quants.dequantize``. Every byte
    pattern is accepted: an fp16 scale that is inf or NaN gives inf/NaN elements
    per IEEE arithmetic (``inf * 0`` is NaN). Non-contiguous input is copied.

    Raises:
        RuntimeError: ``blocks`` not uint8, 0-d, a last axis that is not a multiple
        of 34 bytes, or ``dtype`` not a float dtype.
    """
    return torch.ops.lowbit.dequantize_q8_0(blocks, dtype)


def quantize_q4_0(x: torch.Tensor) -> torch.Tensor:
    """Quantizes ``x`` to GGUF Q4_0 blocks along the last axis.

    Args:
        x: float32, float16 or bfloat16 tensor ``[..., K]`` of rank >= 1 with
            ``K % 32 == 0``; non-contiguous input is copied first.

    Returns:
        uint8 tensor ``[..., K // 32 * 18]``, byte for byte what
        ``gguf.quants.quantize(x.float().numpy(), GGMLQuantizationType.Q4_0)``
        returns. Empty input gives an empty output of that shape.

    Raises:
        RuntimeError: ``x`` not a float tensor, 0-d, ``K`` not a multiple of 32, or
        any NaN / infinity in ``x`` (the message names the first such block).
    """
    return torch.ops.lowbit.quantize_q4_0(x)


def dequantize_q4_0(blocks: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Decodes GGUF Q4_0 blocks: uint8 ``[..., B * 18]`` -> ``dtype`` ``[..., B * 32]``.

    Each element is ``float32(d) * (nibble - 8)`` rounded to ``dtype``; with float32
    this equals ``gguf.quants.dequantize``. Every byte pattern is accepted (inf/NaN
    scales propagate per IEEE). Non-contiguous input is copied.

    Raises:
        RuntimeError: ``blocks`` not uint8, 0-d, a last axis that is not a multiple
        of 18 bytes, or ``dtype`` not a float dtype.
    """
    return torch.ops.lowbit.dequantize_q4_0(blocks, dtype)


def _quantize_fake(x, op, block_bytes):
    check_float(x, op, "x")
    torch._check(x.dim() >= 1, lambda: f"lowbit.{op}: expected x of rank >= 1 "
                 "(blocks run along the last axis), got a 0-d tensor")
    k = x.shape[-1]
    torch._check(k % GGUF_BLOCK_ELEMS == 0, lambda: f"lowbit.{op}: expected the last axis K to be a multiple "
                 f"of {GGUF_BLOCK_ELEMS}, got K = {k} (input shape {list(x.shape)})")
    return x.new_empty((*x.shape[:-1], k // GGUF_BLOCK_ELEMS * block_bytes), dtype=torch.uint8)


def _dequantize_fake(blocks, dtype, op, block_bytes):
    torch._check(blocks.dtype == torch.uint8,
                 lambda: f"lowbit.{op}: expected blocks of dtype torch.uint8, got {blocks.dtype}")
    torch._check(dtype in (torch.float32, torch.float16, torch.bfloat16),
                 lambda: f"lowbit.{op}: expected dtype to be torch.float32, torch.float16 or torch.bfloat16, got {dtype}")
    torch._check(blocks.dim() >= 1, lambda: f"lowbit.{op}: expected blocks of rank >= 1 "
                 f"({block_bytes} bytes per block along the last axis), got a 0-d tensor")
    n = blocks.shape[-1]
    torch._check(n % block_bytes == 0, lambda: f"lowbit.{op}: expected the last axis of blocks to be a multiple "
                 f"of {block_bytes} bytes (one block each), got {n} (shape {list(blocks.shape)})")
    return blocks.new_empty((*blocks.shape[:-1], n // block_bytes * GGUF_BLOCK_ELEMS), dtype=dtype)


@torch.library.register_fake("lowbit::quantize_q8_0")
def _quantize_q8_0_fake(x):
    return _quantize_fake(x, "quantize_q8_0", Q8_0_BLOCK_BYTES)


@torch.library.register_fake("lowbit::quantize_q4_0")
def _quantize_q4_0_fake(x):
    return _quantize_fake(x, "quantize_q4_0", Q4_0_BLOCK_BYTES)


@torch.library.register_fake("lowbit::dequantize_q8_0")
def _dequantize_q8_0_fake(blocks, dtype):
    return _dequantize_fake(blocks, dtype, "dequantize_q8_0", Q8_0_BLOCK_BYTES)


@torch.library.register_fake("lowbit::dequantize_q4_0")
def _dequantize_q4_0_fake(blocks, dtype):
    return _dequantize_fake(blocks, dtype, "dequantize_q4_0", Q4_0_BLOCK_BYTES)
