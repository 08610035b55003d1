"""Quantized types: what a weight or an activation is quantized to.

Each qtype knows its number of bits, its representable range, whether it is a
float format, and the dtype its codes are stored in. Strings are accepted
wherever a qtype is (see :func:`qtype`).
"""
from dataclasses import dataclass
from typing import Union

import torch

__all__ = ["QType", "qint2", "qint4", "qint8", "qfloat8", "qfloat8_e4m3fn", "qfloat8_e5m2", "qtype", "QTYPES"]


@dataclass(frozen=True)
class QType:
    """A quantized type.

    ``dtype`` is the dtype of one code: int8 for the integer qtypes (2- and 4-bit codes
    are kept in int8 while computed and packed into uint8 bytes for storage, see
    ``storage_dtype``), float8 for the float qtypes. ``qmin``/``qmax`` are the extreme
    codes (integers) or the extreme finite values (floats).
    """
    name: str
    bits: int
    is_float: bool
    dtype: torch.dtype
    qmin: float
    qmax: float

    @property
    def is_packed(self) -> bool:
        """True when several codes share one stored byte (2 and 4 bits)."""
        return not self.is_float and self.bits < 8

    @property
    def storage_dtype(self) -> torch.dtype:
        """dtype of the stored codes: uint8 when packed, else ``dtype``."""
        return torch.uint8 if self.is_packed else self.dtype

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

#: canonical name -> qtype
QTYPES = {q.name: q for q in (qint2, qint4, qint8, qfloat8_e4m3fn, qfloat8_e5m2)}

_ALIASES = {
    "int2": qint2, "qint2": qint2,
    "int4": qint4, "qint4": qint4,
    "int8": qint8, "qint8": qint8,
    "fp8": qfloat8, "float8": qfloat8, "qfloat8": qfloat8,
    "fp8_e4m3": qfloat8, "fp8_e4m3fn": qfloat8, "float8_e4m3fn": qfloat8, "qfloat8_e4m3fn": qfloat8, "e4m3": qfloat8,
    "fp8_e5m2": qfloat8_e5m2, "float8_e5m2": qfloat8_e5m2, "qfloat8_e5m2": qfloat8_e5m2, "e5m2": qfloat8_e5m2,
}
_DTYPES = {torch.int8: qint8, torch.float8_e4m3fn: qfloat8, torch.float8_e5m2: qfloat8_e5m2}


def qtype(value: Union[str, QType, torch.dtype]) -> QType:
    """The qtype named by ``value``: a :class:`QType`, a name such as ``"int4"``,
    ``"qint8"``, ``"fp8"`` or ``"float8_e5m2"`` (case-insensitive), or one of the torch
    dtypes int8 / float8_e4m3fn / float8_e5m2. Raises ``ValueError`` listing the
    valid names otherwise."""
    if isinstance(value, QType):
        return value
    if isinstance(value, torch.dtype) and value in _DTYPES:
        return _DTYPES[value]
    if isinstance(value, str) and value.strip().lower() in _ALIASES:
        return _ALIASES[value.strip().lower()]
    raise ValueError(f"unknown qtype {value!r}; expected a lowbit QType or one of: {', '.join(sorted(_ALIASES))}")
