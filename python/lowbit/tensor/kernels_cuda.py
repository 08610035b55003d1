"""``F.linear`` with a frozen quantized weight on CUDA: the lowbit linear ops.

Called by :func:`lowbit.tensor.kernels._linear` when the input and the weight are CUDA
tensors and no autograd is needed. The ops choose their GEMM path themselves (small-M
tensor-core kernel, dequantize + cuBLAS, int8 GEMM; docs/cuda.md ("Mixed-precision GEMMs")) and
``lowbit.last_kernels()`` names the one that ran. Weights stay in the canonical layout:
``.to("cuda")`` and ``freeze()`` need no repacking, and a model saved on CUDA loads on
the CPU and vice versa.
"""
from .. import ops
from .qtensor import QTensor


def linear_cuda(input, weight: QTensor, bias=None):
    """``F.linear(input, weight, bias)`` through a lowbit CUDA op, or ``NotImplemented`` for a
    weight layout no op takes (the caller then dequantizes this weight and calls F.linear)."""
    q = weight.qtype
    n, k = weight.shape
    if q.is_packed and k % 8 == 0 and weight.scale.shape[0] == n and (k // weight.scale.shape[1]) % 8 == 0:
        # int8_activations is a CPU option: on CUDA the 16-bit path is exact and memory-bound
        return ops.linear_intx(input, weight.codes, weight.scale, weight.zero_point, q.bits, bias)
    if q.name == "qint8" and weight.zero_point is None and weight.scale.shape == (n, 1):
        return ops.linear_int8(input, weight.codes, weight.scale, bias)
    if q.is_float and weight.scale.shape in ((n, 1), (1, 1)):
        return ops.linear_fp8(input, weight.codes, weight.scale, bias)
    return NotImplemented
