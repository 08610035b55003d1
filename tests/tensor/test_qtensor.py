"""QTensor: construction, dequantization, dispatch (detach / clone / to / fallback), routing of F.* ops.

Tests whose name contains ``packed`` need lowbit.ops.pack_bits/unpack_bits, those with
``fp8`` need the float8 ops."""
import warnings

import pytest
import torch
import torch.nn.functional as F

import lowbit
from lowbit import QTensor, qtype, quantize_weight
from lowbit.tensor import functions


def sqnr(x, y):
    return float(20 * torch.log10(x.norm() / (x - y).norm()))


def reference_dequant(w, bits, symmetric, group_size):
    """Plain-PyTorch fake quantization of a [N, K] matrix (the spec of what QTensor stores)."""
    n, k = w.shape
    g = group_size or k
    x = w.float().reshape(n, k // g, g)
    qmin, qmax = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    if symmetric:
        scale = x.abs().amax(-1, keepdim=True) / qmax
        zp = torch.zeros_like(scale)
    else:
        lo, hi = x.amin(-1, keepdim=True).clamp(max=0), x.amax(-1, keepdim=True).clamp(min=0)
        scale = (hi - lo) / (qmax - qmin)
        zp = (qmin - torch.round(lo / scale)).clamp(qmin, qmax)
    q = torch.clamp(torch.round(x / scale + zp), qmin, qmax)
    return ((q - zp) * scale).reshape(n, k)


def test_qtype_lookup():
    assert qtype("int4") is lowbit.qint4 and qtype("QINT8") is lowbit.qint8
    assert qtype("fp8") is lowbit.qfloat8 is lowbit.qfloat8_e4m3fn
    assert qtype("float8_e5m2") is lowbit.qfloat8_e5m2 and qtype(torch.int8) is lowbit.qint8
    assert (lowbit.qint4.bits, lowbit.qint4.qmin, lowbit.qint4.qmax, lowbit.qint4.storage_dtype) == (4, -8, 7, torch.uint8)
    assert lowbit.qint8.storage_dtype == torch.int8 and not lowbit.qint8.is_float
    assert lowbit.qfloat8.is_float and lowbit.qfloat8.qmax == 448.0 and lowbit.qfloat8_e5m2.qmax == 57344.0
    with pytest.raises(ValueError, match="unknown qtype 'int3'.*int4"):
        qtype("int3")
    with pytest.raises(ValueError, match="unknown qtype"):
        qtype(torch.float16)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_int8_per_channel_matches_reference(dtype):
    w = torch.randn(24, 40, dtype=dtype)
    q = quantize_weight(w, "int8")
    assert q.codes.dtype == torch.int8 and q.codes.shape == (24, 40) and q.scale.shape == (24, 1)
    assert q.zero_point is None and q.axis == 0 and q.group_size is None
    assert q.shape == w.shape and q.dtype == dtype and isinstance(q, torch.Tensor)
    d = q.dequantize()
    assert d.dtype == dtype
    torch.testing.assert_close(d.float(), reference_dequant(w.float(), 8, True, None).to(dtype).float())


def test_int8_group_minmax_matches_reference():
    w = torch.randn(8, 64) + 0.3
    q = quantize_weight(w, "int8", group_size=16, optimizer="minmax")
    assert q.scale.shape == (8, 4) and q.zero_point.shape == (8, 4)
    torch.testing.assert_close(q.dequantize(), reference_dequant(w, 8, False, 16))


@pytest.mark.parametrize("bits,group", [(4, 32), (2, 16), (4, None)])
def test_packed_codes_layout_and_dequant(bits, group):
    w = torch.randn(6, 96)
    q = quantize_weight(w, f"int{bits}", group_size=group)
    assert q.codes.dtype == torch.uint8 and q.codes.shape == (6, 96 * bits // 8)
    torch.testing.assert_close(q.dequantize(), reference_dequant(w, bits, False, group))


def test_fp8_weights():
    w = torch.randn(16, 32)
    for name, dtype in [("fp8", torch.float8_e4m3fn), ("float8_e5m2", torch.float8_e5m2)]:
        q = quantize_weight(w, name)
        assert q.codes.dtype == dtype and q.zero_point is None and q.scale.shape == (16, 1)
        assert sqnr(w, q.dequantize()) > (25 if dtype == torch.float8_e4m3fn else 18)
    with pytest.raises(ValueError, match="minmax optimizer needs an integer qtype"):
        quantize_weight(w, "fp8", optimizer="minmax")


def test_conv_weight_is_quantized_as_flattened_matrix():
    w = torch.randn(8, 4, 3, 3)
    q = quantize_weight(w, "int8", group_size=12)
    assert q.shape == w.shape and q.codes.shape == (8, 36) and q.scale.shape == (8, 3)
    torch.testing.assert_close(q.dequantize(), reference_dequant(w.reshape(8, 36), 8, True, 12).reshape(w.shape))


def test_bad_group_size():
    with pytest.raises(ValueError, match="group_size 7 does not divide the 40 input features"):
        quantize_weight(torch.randn(4, 40), "int8", group_size=7)
    with pytest.raises(ValueError, match="expected a float weight"):
        quantize_weight(torch.ones(4, 4, dtype=torch.int32), "int8")
    with pytest.raises(ValueError, match="unknown optimizer 'best'"):
        quantize_weight(torch.randn(4, 4), "int8", optimizer="best")


def test_detach_clone_to_and_flatten():
    q = quantize_weight(torch.randn(8, 16), "int8", optimizer="minmax")
    for t in (q.detach(), q.clone(), q.to("cpu"), q.cpu()):
        assert isinstance(t, QTensor) and torch.equal(t.dequantize(), q.dequantize())
    c = q.clone()
    assert c.codes.data_ptr() != q.codes.data_ptr()
    h = q.to(torch.float16)
    assert isinstance(h, QTensor) and h.dtype == torch.float16 and h.scale.dtype == torch.float32
    torch.testing.assert_close(h.dequantize(), q.dequantize().half())
    names, ctx = q.__tensor_flatten__()
    assert names == ["codes", "scale", "zero_point"]
    r = QTensor.__tensor_unflatten__({n: getattr(q, n) for n in names}, ctx, q.shape, q.stride())
    assert torch.equal(r.dequantize(), q.dequantize()) and r.qtype is lowbit.qint8
    with pytest.raises(ValueError, match="float dtype"):
        q.to(torch.int32)


def test_functional_routing_matches_float_ops():
    x = torch.randn(3, 5, 16)
    q = quantize_weight(torch.randn(8, 16), "int8")
    torch.testing.assert_close(F.linear(x, q, torch.ones(8)), F.linear(x, q.dequantize(), torch.ones(8)))
    qc = quantize_weight(torch.randn(6, 4, 3), "int8")
    xc = torch.randn(2, 4, 10)
    torch.testing.assert_close(F.conv1d(xc, qc, padding=1), F.conv1d(xc, qc.dequantize(), padding=1))
    q2 = quantize_weight(torch.randn(6, 4, 3, 3), "int8")
    x2 = torch.randn(2, 4, 7, 7)
    torch.testing.assert_close(F.conv2d(x2, q2, stride=2), F.conv2d(x2, q2.dequantize(), stride=2))
    qe = quantize_weight(torch.randn(30, 16), "int8", group_size=8)
    ids = torch.tensor([[0, 29, 5], [5, 5, 1]])
    torch.testing.assert_close(F.embedding(ids, qe), F.embedding(ids, qe.dequantize()))
    qn = quantize_weight(torch.rand(16) + 0.5, "int8")
    torch.testing.assert_close(F.layer_norm(x, (16,), qn), F.layer_norm(x, (16,), qn.dequantize()))


def test_register_kernel_is_tried_first():
    calls = []

    def fake_fast_linear(input, weight, bias=None):
        calls.append(weight.qtype)
        return NotImplemented if input.shape[0] == 1 else torch.zeros(())

    functions.register_kernel(F.linear, fake_fast_linear)
    try:
        q = quantize_weight(torch.randn(4, 8), "int8")
        assert F.linear(torch.randn(2, 8), q).shape == ()
        assert F.linear(torch.randn(1, 8), q).shape == (1, 4)  # declined -> dequantize path
        assert calls == [lowbit.qint8, lowbit.qint8]
    finally:
        functions._KERNELS[F.linear].remove(fake_fast_linear)
    with pytest.raises(ValueError, match="no QTensor routing"):
        functions.register_kernel(torch.matmul, fake_fast_linear)


def test_other_ops_fall_back_with_one_warning():
    q = quantize_weight(torch.randn(4, 8), "int8")
    functions._FALLBACK_SEEN.discard("aten.mul.Tensor")
    with pytest.warns(UserWarning, match="aten.mul.Tensor has no QTensor implementation"):
        out = q * 2
    torch.testing.assert_close(out, q.dequantize() * 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        q * 3  # warned once only
    assert "aten.mul.Tensor" in lowbit.tensor.dequantize_fallback_ops()


def test_meta_qtensor_moves_and_repr():
    q = quantize_weight(torch.randn(4, 8), "int8")
    m = q.to("meta")
    assert m.is_meta and isinstance(m, QTensor) and m.codes.is_meta
    assert "qtype=qint8" in repr(q) and "axis=0" in repr(q)
