"""Which CPU kernels run: AVX-512 VNNI (W8A8), AVX2/FMA/F16C where the CPU has them, else portable C++."""
import contextlib

from . import _C


def cpu_isa() -> str:
    """The CPU kernel family in use: ``"avx512"``, ``"avx2"`` or ``"portable"``."""
    return _C.cpu_isa()


def set_cpu_isa(name: str) -> None:
    """Force the CPU kernel family (``"avx512"``, ``"avx2"`` or ``"portable"``).

    The environment variable ``LOWBIT_CPU_ISA`` sets the same thing at import.
    Raises ``ValueError`` for an unknown name or one this CPU cannot run.
    """
    _C.set_cpu_isa(name)


@contextlib.contextmanager
def use_cpu_isa(name: str):
    """Context manager that runs its body with the given CPU kernel family."""
    before = cpu_isa()
    set_cpu_isa(name)
    try:
        yield
    finally:
        set_cpu_isa(before)


def build_info() -> dict:
    """How the extension was built (AVX2 / AVX-512 kernels, CUDA, compiler)."""
    return dict(_C.build_info())


def last_kernels() -> dict:
    """Op name -> the kernel its latest call ran (``"portable"``, ``"avx2_..."``).

    The mixed-precision linear ops record their choice on every call, so a slow
    path never goes unnoticed: check this after a forward pass.
    """
    return dict(_C.last_kernels())
