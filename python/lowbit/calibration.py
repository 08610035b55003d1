"""Calibration of activation ranges.

``with Calibration(momentum=0.9): model(samples)`` runs the model in float (no
activation is quantized while calibrating) and records, for every quantized
module whose activations are quantized per tensor, a scale ``absmax / qmax`` of
the activation it quantizes (the input of Linear / Conv, the output of the
norms). The first batch sets the scale; later batches update it as an
exponential moving average, ``scale = momentum * scale + (1 - momentum) * new``.
After the block, activations are quantized with the recorded scales. A module
never calibrated quantizes each activation dynamically with its own absmax.

``Calibration(smoothing=alpha)`` adds SmoothQuant (Xiao et al. 2022) to Linear
inputs and norm outputs: each module records the absmax of every channel (last
dim) of its activation, and when the block ends it sets per-channel factors
``s_j = max|X_j| ** alpha / max|W_j| ** (1 - alpha)`` (``max|W_j|`` over the
weight's column ``j``; 1 for the norms, which have no weight to take the range).
The activation is divided by ``s`` before its per-tensor quantization: a Linear
multiplies its weight's columns by ``s`` so that its float output is unchanged; a
norm multiplies its dequantized output back by ``s``. The per-tensor scale is then
``max_j(ema_j / s_j) / qmax``, ``ema_j`` being the moving average (``momentum``) of
channel ``j``'s absmax over the batches of the block. See docs/workflow.md.
"""
from numbers import Real
from typing import List, Optional

__all__ = ["Calibration"]

_ACTIVE: List["Calibration"] = []


class Calibration:
    """Context manager recording activation ranges (see the module docstring).

    Args:
        momentum: weight of the running scale in the moving average over batches, in [0, 1).
        smoothing: None (default: no smoothing) or SmoothQuant's migration strength ``alpha``
            in [0, 1]; 0.7 on all-MiniLM-L6-v2 (docs/workflow.md). Smoothing rescales the float
            weights of Linear modules, so it must run before :func:`lowbit.freeze`.
    """

    def __init__(self, momentum: float = 0.9, smoothing: Optional[float] = None):
        if not isinstance(momentum, Real) or isinstance(momentum, bool) or not 0.0 <= momentum < 1.0:
            raise ValueError(f"Calibration: expected 0 <= momentum < 1, got {momentum!r}")
        if smoothing is not None and (not isinstance(smoothing, Real) or isinstance(smoothing, bool)
                                      or not 0.0 <= smoothing <= 1.0):
            raise ValueError(f"Calibration: expected smoothing None or a number in [0, 1] (SmoothQuant's alpha), "
                             f"got {smoothing!r}")
        self.momentum = momentum
        self.smoothing = None if smoothing is None else float(smoothing)
        self._smoothed = {}  # id -> module that recorded channel ranges in this block

    def __enter__(self):
        _ACTIVE.append(self)
        return self

    def __exit__(self, exc_type, *exc):
        _ACTIVE.remove(self)
        modules, self._smoothed = list(self._smoothed.values()), {}
        for module in modules:
            if exc_type is None:
                module.finish_smoothing(self.smoothing)
            else:  # the block failed: its partial statistics are dropped, the modules keep what they had
                module.discard_smoothing_statistics()
        return False

    def record_smoothing(self, module) -> None:
        """Called by a module that recorded channel ranges under this block: it is
        smoothed when the block ends."""
        self._smoothed[id(module)] = module


def active_calibration() -> Optional[Calibration]:
    """The innermost active :class:`Calibration`, or None."""
    return _ACTIVE[-1] if _ACTIVE else None
