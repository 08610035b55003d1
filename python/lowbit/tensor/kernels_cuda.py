"""``F.linear`` with a frozen quantized weight on CUDA: the lowbit linear ops.

Called by :func:`lowbit.tensor.kernels._linear` when the input and the weight are CUDA
tensors and no autograd is needed. The ops choose their GEMM path themselves (small-M
tensor-core kernel, dequantize + cuBLAS, int8 GEMM; docs/cuda.md ("Mixed-precision GEMMs")) and
``lowbit.last_kernels()`` names the one that ran. Weights stay in the canonical layout:
``.to("cuda")`` and ``freeze()`` need no repacking, and a model saved on CUDA loads on
the CPU and vice versa.
"""
import functools

import torch

from .. import ops
from .qtensor import QTensor

_E4M3 = torch.float8_e4m3fn


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


@functools.lru_cache(maxsize=None)
def _has_fp8_tensor_cores(device_index: int) -> bool:
    return torch.cuda.get_device_capability(device_index) >= (8, 9)


def linear_fp8_per_token(input, codes, scale, bias=None):
    """``F.linear`` with float8 e4m3fn activations quantized per token (scale = absmax / 448 of
    each row, as the fake-quantized path, so the codes are the same but for rows whose absmax
    is under 448e-12, where that path's 1e-12 floor saturates them) and a frozen
    float8 e4m3fn weight (``codes`` [N, K], ``scale`` [N, 1] or [1, 1] float32), as a float8 x float8
    product: ``torch._scaled_mm`` with row-wise scales (float32 accumulation, both scales applied
    to the result). bfloat16 input and output only (what row-wise scaling offers), K and N
    multiples of 16, a GPU with float8 tensor cores (sm_89 and newer); ``NotImplemented``
    otherwise, and the caller falls back to fake-quantized activations."""
    n, k = codes.shape
    if (input.dtype != torch.bfloat16 or codes.dtype != _E4M3 or k % 16 or n % 16 or input.shape[-1] != k
            or scale.shape not in ((n, 1), (1, 1)) or not _has_fp8_tensor_cores(input.device.index or 0)):
        return NotImplemented
    x = input.reshape(-1, k)
    m = x.shape[0]
    pad = -m % 16  # the row-wise float8 GEMM wants whole tiles of 16 rows; zero rows give zero codes
    if pad:
        x = torch.nn.functional.pad(x, (0, 0, 0, pad))
    # one pass for the row scales (absmax / 448; a zero row gets 1 where the fake-quantized path
    # has 1e-12, and either way its codes are 0), one for the codes
    sx = ops.choose_scale_fp8(x, _E4M3, 0)
    xq = ops.quantize_fp8(x, sx, _E4M3)
    sw = scale.float().reshape(1, -1).expand(1, n).contiguous()
    y = torch._scaled_mm(xq, codes.t(), scale_a=sx, scale_b=sw, out_dtype=torch.bfloat16)
    if pad:
        y = y[:m]
    if bias is not None:
        y = y + bias.to(y.dtype)
    return y.reshape(*input.shape[:-1], n)
