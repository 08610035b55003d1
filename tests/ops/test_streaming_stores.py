"""Outputs written with non-temporal stores (csrc/cpu/streaming.h) are the same
values as the cached path and the plain-PyTorch references.

The ops switch to streaming stores only when they touch more bytes than the
last-level cache; the threshold is forced to 0 here so that small tensors, odd
sizes and outputs that start off a 32-byte boundary take that path too.
"""
import pytest
import torch

import lowbit
from lowbit.ops import (dequantize_affine, dequantize_q4_0, dequantize_q8_0, quantize_affine, quantize_q4_0,
                        quantize_q8_0)
from test_affine import ref_dequantize, ref_quantize
from test_gguf import ref_dequantize_q4_0, ref_dequantize_q8_0

_C = lowbit._C


def both_paths(fn):
    """fn() with streaming forced off, then forced on; the threshold is restored."""
    try:
        _C.set_streaming_min_bytes(1 << 62)
        cached = fn()
        _C.set_streaming_min_bytes(0)
        streamed = fn()
    finally:
        _C.set_streaming_min_bytes(-1)
    return cached, streamed


_SAME_WIDTH_INT = {1: torch.int8, 2: torch.int16, 4: torch.int32}


def assert_same_bits(a, b):
    """Bit-identical (NaN patterns included), not merely equal as numbers."""
    assert a.dtype == b.dtype and a.shape == b.shape
    as_int = _SAME_WIDTH_INT[a.dtype.itemsize]
    assert torch.equal(a.view(as_int), b.view(as_int))


# (shape, axis, group_size, symmetric): per tensor, per row (spans of odd length, so
# most spans start off alignment), per last axis (scale changes every element), groups.
LAYOUTS = [((1, 1), None, None, True), ((7, 13), 0, None, True), ((5, 333), 0, None, False),
           ((3, 257), -1, None, False), ((4, 3, 256), None, 64, False), ((9, 1000), None, None, False),
           ((2, 4096), 0, None, True), ((33, 96), None, 32, True)]


@pytest.mark.parametrize("shape,axis,group_size,symmetric", LAYOUTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_affine_streamed_equals_cached(isa, shape, axis, group_size, symmetric, dtype):
    x = (torch.randn(shape) * 3).to(dtype)
    bits = 4 if group_size else 8
    scale, zp = torch.ops.lowbit.choose_qparams_affine(x, bits, symmetric, axis, group_size)
    zp = None if symmetric else zp
    codes, codes_nt = both_paths(lambda: quantize_affine(x, scale, zp, bits))
    assert_same_bits(codes, codes_nt)
    assert torch.equal(codes_nt, ref_quantize(x, scale, zp, bits))
    y, y_nt = both_paths(lambda: dequantize_affine(codes, scale, zp, dtype))
    assert_same_bits(y, y_nt)
    assert_same_bits(y_nt, ref_dequantize(codes, scale, zp, dtype))


@pytest.mark.parametrize("fmt", ["q8_0", "q4_0"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", [(1, 32), (3, 96), (5, 4096)])
def test_gguf_streamed_equals_cached(isa, fmt, dtype, shape):
    quant, dequant, ref = ((quantize_q8_0, dequantize_q8_0, ref_dequantize_q8_0) if fmt == "q8_0"
                           else (quantize_q4_0, dequantize_q4_0, ref_dequantize_q4_0))
    blocks = quant(torch.randn(shape))
    y, y_nt = both_paths(lambda: dequant(blocks, dtype))
    assert_same_bits(y, y_nt)
    assert_same_bits(y_nt, ref(blocks, dtype))


def test_default_threshold_is_the_last_level_cache():
    default = _C.streaming_min_bytes()
    assert default >= 1 << 20  # a last-level cache of at least 1 MiB, or the 32 MiB fallback
    _C.set_streaming_min_bytes(123)
    assert _C.streaming_min_bytes() == 123
    _C.set_streaming_min_bytes(-1)
    assert _C.streaming_min_bytes() == default


def test_large_tensor_takes_the_default_streaming_path(isa):
    """Bytes touched above the default threshold: the path a 16M-element weight takes."""
    rows = _C.streaming_min_bytes() // (5 * 4096) + 1  # int8 in + float32 out
    codes = torch.randint(-128, 128, (rows, 4096), dtype=torch.int8)
    scale = torch.rand(rows, 1) + 0.1
    assert codes.numel() * 5 >= _C.streaming_min_bytes()
    assert_same_bits(dequantize_affine(codes, scale, None, torch.float32),
                     ref_dequantize(codes, scale, None, torch.float32))
