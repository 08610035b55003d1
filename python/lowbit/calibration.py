"""Calibration of activation ranges.

``with Calibration(momentum=0.9): model(samples)`` runs the model in float (no
activation is quantized while calibrating) and records, for every quantized
module whose activations are quantized, a per-tensor scale ``absmax / qmax`` of
the activation it quantizes (the input of Linear / Conv, the output of the
norms). The first batch sets the scale; later batches update it as an
exponential moving average, ``scale = momentum * scale + (1 - momentum) * new``.
After the block, activations are quantized with the recorded scales. A module
never calibrated quantizes each activation dynamically with its own absmax.
"""
from typing import List, Optional

__all__ = ["Calibration"]

_ACTIVE: List["Calibration"] = []


class Calibration:
    """Context manager recording activation ranges (see the module docstring)."""

    def __init__(self, momentum: float = 0.9):
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"Calibration: expected 0 <= momentum < 1, got {momentum}")
        self.momentum = momentum

    def __enter__(self):
        _ACTIVE.append(self)
        return self

    def __exit__(self, *exc):
        _ACTIVE.remove(self)
        return False


def active_calibration() -> Optional[Calibration]:
    """The innermost active :class:`Calibration`, or None."""
    return _ACTIVE[-1] if _ACTIVE else None
