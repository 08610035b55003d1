"""Bit packing of 2- and 4-bit integer codes along the last axis.

Layout (docs/formats.md, "Packed 2- and 4-bit codes"): each code is stored as the
unsigned offset-binary value ``u = code + 2**(bits - 1)``; element ``i`` of a row
sits at bits ``(i * bits) % 8 ..`` of byte ``(i * bits) // 8`` (for 4 bits: even
elements in the low nibble, odd ones in the high nibble). Every row along the last
axis starts on a byte boundary, so row ``r`` of a packed ``[N, K]`` weight is
``packed[r]``; padding bits of a row's last byte are written as 0.
"""
import torch

__all__ = ["pack_bits", "unpack_bits", "packed_size"]

_PACK_BITS = (2, 4)


def packed_size(n: int, bits: int) -> int:
    """Bytes per row for ``n`` codes of ``bits`` bits: ``ceil(n * bits / 8)``."""
    return (n * bits + 7) // 8


def pack_bits(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Packs int8 codes of ``bits`` bits, independently per row of the last axis.

    Args:
        codes: int8 tensor ``[..., n]`` (rank >= 1) with values in
            ``[-2**(bits-1), 2**(bits-1) - 1]``; non-contiguous input is copied.
        bits: 2 or 4.

    Returns:
        uint8 tensor ``[..., ceil(n * bits / 8)]`` (empty input gives an empty
        output of that shape).

    Raises:
        RuntimeError: ``bits`` not 2 or 4 (8-bit codes need no packing), ``codes``
        not int8, 0-d ``codes``, or any code outside the range of ``bits`` (checked
        in the same pass; nothing is returned then).
    """
    return torch.ops.lowbit.pack_bits(codes, bits)


def unpack_bits(packed: torch.Tensor, bits: int, n: int) -> torch.Tensor:
    """Inverse of :func:`pack_bits`: uint8 ``[..., ceil(n * bits / 8)]`` -> int8 ``[..., n]``.

    Every byte value is valid input; padding bits after element ``n - 1`` of a row
    are ignored. ``n`` is needed because the padding hides it.

    Raises:
        RuntimeError: ``bits`` not 2 or 4, ``packed`` not uint8, 0-d ``packed``,
        ``n < 0``, or a last axis that does not hold ``ceil(n * bits / 8)`` bytes.
    """
    return torch.ops.lowbit.unpack_bits(packed, bits, n)


def _check_bits(bits: int, op: str) -> None:
    torch._check(bits in _PACK_BITS, lambda: (
        f"lowbit.{op}: expected bits 2 or 4, got {bits}"
        + (" (8-bit codes are stored one per int8 byte; there is nothing to pack)" if bits == 8 else "")))


@torch.library.register_fake("lowbit::pack_bits")
def _pack_bits_fake(codes, bits):
    _check_bits(bits, "pack_bits")
    torch._check(codes.dtype == torch.int8,
                 lambda: f"lowbit.pack_bits: expected codes of dtype torch.int8, got {codes.dtype}")
    torch._check(codes.dim() >= 1, lambda: "lowbit.pack_bits: expected codes of rank >= 1 "
                 "(packing runs along the last axis), got a 0-d tensor")
    shape = list(codes.shape)
    shape[-1] = packed_size(shape[-1], bits)
    return codes.new_empty(shape, dtype=torch.uint8)


@torch.library.register_fake("lowbit::unpack_bits")
def _unpack_bits_fake(packed, bits, n):
    _check_bits(bits, "unpack_bits")
    torch._check(packed.dtype == torch.uint8,
                 lambda: f"lowbit.unpack_bits: expected packed of dtype torch.uint8, got {packed.dtype}")
    torch._check(n >= 0, lambda: f"lowbit.unpack_bits: expected n >= 0, got {n}")
    torch._check(packed.dim() >= 1, lambda: "lowbit.unpack_bits: expected packed of rank >= 1 "
                 "(packing runs along the last axis), got a 0-d tensor")
    nb = packed_size(n, bits)
    torch._check(packed.shape[-1] == nb, lambda: (
        f"lowbit.unpack_bits: expected the last axis of packed to hold ceil(n * bits / 8) = {nb} bytes "
        f"for n={n}, bits={bits}, got {packed.shape[-1]} (packed shape {list(packed.shape)})"))
    shape = list(packed.shape)
    shape[-1] = n
    return packed.new_empty(shape, dtype=torch.int8)
