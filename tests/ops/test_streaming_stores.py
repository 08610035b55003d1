"""Outputs written with non-temporal stores (csrc/cpu/streaming.h) are the same
values as the cached path and the plain-PyTorch references.

The ops switch to streaming stores only when they touch more bytes than the
last-level cache; the threshold is forced to 0 here so that small tensors, odd
sizes and outputs that start off a 32-byte boundary take that path too.
"""
import pytest
import torch

import lowbit
from lowbit._cpu import use_cpu_isa
from lowbit.ops import (dequantize_affine, dequantize_fp8, dequantize_q4_0, dequantize_q8_0, quantize_affine,
                        quantize_q4_0, quantize_q8_0)
from test_affine import ref_dequantize, ref_quantize
from test_fp8 import ref_dequantize as ref_dequantize_fp8
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


@pytest.mark.parametrize("fp8", [torch.float8_e4m3fn, torch.float8_e5m2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape,per_row", [((1, 1), False), ((7, 45), True), ((3, 4096), True), ((5, 333), False)])
def test_fp8_streamed_equals_cached(isa, fp8, dtype, shape, per_row):
    q = (torch.randn(shape) * 50).to(fp8)
    q.view(torch.uint8).view(-1)[::17] = 0x7F  # NaN in both formats, among numbers
    scale = torch.rand(shape[0], 1) + 0.5 if per_row else torch.rand(1, 1) + 0.5
    y, y_nt = both_paths(lambda: dequantize_fp8(q, scale, dtype))
    assert_same_bits(y, y_nt)
    torch.testing.assert_close(y_nt, ref_dequantize_fp8(q, scale, dtype), rtol=0, atol=0, equal_nan=True)


def _nan_bits(bits: int) -> torch.Tensor:
    return torch.tensor([bits], dtype=torch.int64).to(torch.int32).view(torch.float32)


def test_bfloat16_outputs_keep_nan_payloads(isa):
    # bfloat16 stores round numbers without the NaN fix-up unless a pair of vectors
    # holds a NaN. A NaN scale with every payload bit set would carry into the sign bit
    # (-0.0) if it were rounded like a number; it must come out as a NaN, the same
    # bits as the scalar conversion of the portable path.
    codes = torch.randint(-128, 128, (6, 40), dtype=torch.int8)
    scale = torch.rand(6, 1) + 0.5
    scale[1, 0], scale[4, 0] = _nan_bits(0x7FFFFFFF), _nan_bits(0xFFBFFFFF)
    with use_cpu_isa("portable"):
        want = dequantize_affine(codes, scale, None, torch.bfloat16)
    for got in both_paths(lambda: dequantize_affine(codes, scale, None, torch.bfloat16)):
        assert got[[1, 4]].isnan().all() and not got[[0, 2, 3, 5]].isnan().any()
        assert_same_bits(got, want)


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
