"""lowbit: low-bit quantization for PyTorch models, with C++ and CUDA kernels."""
import torch  # noqa: F401  (loads libtorch before the extension)

from . import _C  # noqa: F401  (registers torch.ops.lowbit.*)
from . import ops
from ._cpu import build_info, cpu_isa, last_kernels, set_cpu_isa, use_cpu_isa
from .qtypes import QType, qint2, qint4, qint8, qfloat8, qfloat8_e4m3fn, qfloat8_e5m2, qgguf_q4_0, qgguf_q8_0, qtype
from .tensor import QTensor, quantize_weight, int8_activations, set_int8_activations
from .optimizers import Optimizer, AbsmaxOptimizer, MinMaxOptimizer, HqqOptimizer
from .calibration import Calibration
from .quantize import quantize, freeze, quantization_map, requantize, empty_weights
from .serialization import save, load

__version__ = "0.1.0"

__all__ = [
    "ops", "cpu_isa", "set_cpu_isa", "use_cpu_isa", "last_kernels", "build_info", "__version__",
    "QType", "qint2", "qint4", "qint8", "qfloat8", "qfloat8_e4m3fn", "qfloat8_e5m2", "qgguf_q4_0", "qgguf_q8_0",
    "qtype",
    "QTensor", "quantize_weight", "int8_activations", "set_int8_activations",
    "Optimizer", "AbsmaxOptimizer", "MinMaxOptimizer", "HqqOptimizer",
    "Calibration", "quantize", "freeze", "quantization_map", "requantize", "empty_weights", "save", "load",
]


def __getattr__(name):
    # transformers is optional and slow to import: LowbitConfig loads it on first use only
    if name == "LowbitConfig":
        from .integrations.transformers import LowbitConfig
        return LowbitConfig
    raise AttributeError(f"module 'lowbit' has no attribute {name!r}")
