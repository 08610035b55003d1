"""lowbit: low-bit quantization for PyTorch models, with C++ and CUDA kernels."""
import torch  # noqa: F401  (loads libtorch before the extension)

from . import _C  # noqa: F401  (registers torch.ops.lowbit.*)
from . import ops
from ._cpu import build_info, cpu_isa, last_kernels, set_cpu_isa, use_cpu_isa

__version__ = "0.1.0"

__all__ = ["ops", "cpu_isa", "set_cpu_isa", "use_cpu_isa", "last_kernels", "build_info", "__version__"]
