"""Typed wrappers of every ``torch.ops.lowbit`` op, one module per family.

Each wrapper documents the op's math and shapes; each family module also
registers the op's fake (meta) implementation, so that ``torch.compile``,
``torch.export`` and meta-device tensors see exact output shapes and dtypes.
"""
from .affine import choose_qparams_affine, quantize_affine, dequantize_affine
from .packing import pack_bits, unpack_bits
from .fp8 import choose_scale_fp8, quantize_fp8, dequantize_fp8
from .gguf import quantize_q8_0, dequantize_q8_0, quantize_q4_0, dequantize_q4_0
from .linear_intx import linear_intx
from .linear_int8 import linear_int8
from .linear_fp8_gguf import linear_fp8, linear_q8_0, linear_q4_0

__all__ = [
    "choose_qparams_affine", "quantize_affine", "dequantize_affine",
    "pack_bits", "unpack_bits",
    "choose_scale_fp8", "quantize_fp8", "dequantize_fp8",
    "quantize_q8_0", "dequantize_q8_0", "quantize_q4_0", "dequantize_q4_0",
    "linear_intx", "linear_int8", "linear_fp8", "linear_q8_0", "linear_q4_0",
]
