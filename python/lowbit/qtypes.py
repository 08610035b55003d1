"""Quantized types: what a weight or an activation is quantized to.

Each qtype knows its number of bits, its representable range, whether it is a
float format, and the dtype its codes are stored in. Strings are accepted
wherever a qtype is (see :func:`qtype`).

Two families:

* lowbit's own affine / float8 qtypes (``qint2``, ``qint4``, ``qint8``, ``qfloat8*``): codes
  plus float32 scales (and zero-points) whose granularity is chosen at quantization
  (per row or per group) by an optimizer;
* block formats (``qgguf_q4_0``, ``qgguf_q8_0``): llama.cpp's GGUF Q4_0 / Q8_0, where
  the format fixes everything: blocks of 32 input features, each stored as its fp16
  scale followed by its codes (docs/formats.md). A weight of such a qtype is one uint8
  tensor of block bytes; there is no separate scale, zero-point, group size or optimizer.
  Block formats are weight-only.
"""
from dataclasses import dataclass
from typing import Optional, Union

import torch

__all__ = ["QType", "qint2", "qint4", "qint8", "qfloat8", "qfloat8_e4m3fn", "qfloat8_e5m2", "qgguf_q4_0",
           "qgguf_q8_0", "qtype", "QTYPES"]


@dataclass(frozen=True)
class QType:
    """A quantized type.

    ``dtype`` is the dtype of one code: int8 for the integer qtypes (2- and 4-bit codes
    are kept in int8 while computed and packed into uint8 bytes for storage, see
    ``storage_dtype``), float8 for the float qtypes. ``qmin``/``qmax`` are the extreme
    codes (integers) or the extreme finite values (floats).

    ``block_size`` / ``block_bytes`` are set for block formats only (GGUF: 32 elements
    in 34 bytes for Q8_0, 18 bytes for Q4_0, scale included), see :attr:`is_block`.
    """
    name: str
    bits: int
    is_float: bool
    dtype: torch.dtype
    qmin: float
    qmax: float
    block_size: Optional[int] = None
    block_bytes: Optional[int] = None

    @property
    def is_block(self) -> bool:
        """True for the GGUF block formats: self-contained blocks of ``block_size`` input
        features (scale inside), stored as uint8 ``[N, K / block_size * block_bytes]``."""
        return self.block_size is not None

    @property
    def is_packed(self) -> bool:
        """True when the codes are lowbit's packed 2- or 4-bit codes (``ops.pack_bits``);
        False for the block formats, whose bytes follow their own layout."""
        return not self.is_float and self.bits < 8 and not self.is_block

    @property
    def storage_dtype(self) -> torch.dtype:
        """dtype of the stored codes: uint8 when packed or a block format, else ``dtype``."""
        return torch.uint8 if self.is_packed or self.is_block else self.dtype

    @property
    def bits_per_weight(self) -> Optional[float]:
        """Stored bits per weight of a block format, scales included (4.5 for Q4_0,
        8.5 for Q8_0); None for the other qtypes, whose scales depend on the granularity."""
        return 8 * self.block_bytes / self.block_size if self.is_block else None

    def __repr__(self) -> str:
        return self.name

    def __str__(self) -> str:
        return self.name


def _int(bits: int) -> QType:
    return QType(f"qint{bits}", bits, False, torch.int8, -(2 ** (bits - 1)), 2 ** (bits - 1) - 1)


def _float8(dtype: torch.dtype, name: str) -> QType:
    info = torch.finfo(dtype)
    return QType(name, 8, True, dtype, float(info.min), float(info.max))


qint2 = _int(2)
qint4 = _int(4)
qint8 = _int(8)
qfloat8_e4m3fn = _float8(torch.float8_e4m3fn, "qfloat8_e4m3fn")
qfloat8 = qfloat8_e4m3fn
qfloat8_e5m2 = _float8(torch.float8_e5m2, "qfloat8_e5m2")
#: GGUF Q4_0: blocks of 32 weights, fp16 scale + 16 bytes of 4-bit codes (-8..7)
qgguf_q4_0 = QType("qgguf_q4_0", 4, False, torch.int8, -8, 7, block_size=32, block_bytes=18)
#: GGUF Q8_0: blocks of 32 weights, fp16 scale + 32 int8 codes
qgguf_q8_0 = QType("qgguf_q8_0", 8, False, torch.int8, -128, 127, block_size=32, block_bytes=34)

#: canonical name -> qtype
QTYPES = {q.name: q for q in (qint2, qint4, qint8, qfloat8_e4m3fn, qfloat8_e5m2, qgguf_q4_0, qgguf_q8_0)}

_ALIASES = {
    "int2": qint2, "qint2": qint2,
    "int4": qint4, "qint4": qint4,
    "int8": qint8, "qint8": qint8,
    "fp8": qfloat8, "float8": qfloat8, "qfloat8": qfloat8,
    "fp8_e4m3": qfloat8, "fp8_e4m3fn": qfloat8, "float8_e4m3fn": qfloat8, "qfloat8_e4m3fn": qfloat8, "e4m3": qfloat8,
    "fp8_e5m2": qfloat8_e5m2, "float8_e5m2": qfloat8_e5m2, "qfloat8_e5m2": qfloat8_e5m2, "e5m2": qfloat8_e5m2,
    "q4_0": qgguf_q4_0, "gguf_q4_0": qgguf_q4_0, "qgguf_q4_0": qgguf_q4_0,
    "q8_0": qgguf_q8_0, "gguf_q8_0": qgguf_q8_0, "qgguf_q8_0": qgguf_q8_0,
}
_DTYPES = {torch.int8: qint8, torch.float8_e4m3fn: qfloat8, torch.float8_e5m2: qfloat8_e5m2}


def qtype(value: Union[str, QType, torch.dtype]) -> QType:
    """The qtype named by ``value``: a :class:`QType`, a name such as ``"int4"``,
    ``"qint8"``, ``"fp8"``, ``"float8_e5m2"`` or ``"q4_0"`` (case-insensitive), or one of the torch
    dtypes int8 / float8_e4m3fn / float8_e5m2. Raises ``ValueError`` listing the
    valid names otherwise."""
    if isinstance(value, QType):
        return value
    if isinstance(value, torch.dtype) and value in _DTYPES:
        return _DTYPES[value]
    if isinstance(value, str) and value.strip().lower() in _ALIASES:
        return _ALIASES[value.strip().lower()]
    raise ValueError(f"unknown qtype {value!r}; expected a lowbit QType or one of: {', '.join(sorted(_ALIASES))}")
