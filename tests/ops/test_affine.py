"""Affine quantization ops against a plain-PyTorch float32 reference (the spec)."""
import pytest
import torch
from torch.library import opcheck

from lowbit.ops import choose_qparams_affine, dequantize_affine, quantize_affine

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
BITS = [2, 4, 8]


def qrange(bits):
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


# ---------------------------------------------------------------- reference
def ref_reduce(x, fn, axis, group_size):
    x = x.float()
    if group_size is not None:
        return fn(x.unflatten(-1, (x.shape[-1] // group_size, group_size)), -1)
    if axis is not None:
        dims = [d for d in range(x.dim()) if d != axis % x.dim()]
        return fn(x, dims, keepdim=True) if dims else x.clone()
    return fn(x.reshape(-1), 0).reshape([1] * x.dim())


def ref_choose_qparams(x, bits, symmetric, axis=None, group_size=None):
    qmin, qmax = qrange(bits)
    mn = ref_reduce(x, torch.amin, axis, group_size)
    mx = ref_reduce(x, torch.amax, axis, group_size)
    if symmetric:
        s = torch.maximum(-mn, mx) / qmax
        s = torch.where(s > 0, s, torch.ones_like(s))
        return s, torch.zeros_like(s)
    lo, hi = mn.clamp(max=0), mx.clamp(min=0)
    s = (hi - lo) / float(qmax - qmin)
    s = torch.where(s > 0, s, torch.ones_like(s))
    z = (qmin - torch.round(lo / s)).clamp(qmin, qmax)
    return s, z


def expand(p, x):
    """Parameters in keepdim / group shape -> one value per element of x."""
    if x.dim() and p.shape[-1] not in (1, x.shape[-1]):
        p = p.repeat_interleave(x.shape[-1] // p.shape[-1], -1)
    return p.expand(x.shape)


def ref_quantize(x, s, z, bits):
    qmin, qmax = qrange(bits)
    v = x.float() / expand(s, x)
    v = torch.nan_to_num(v, nan=0.0, posinf=float("inf"), neginf=float("-inf"))
    if z is not None:
        v = v + expand(z, x)
    return torch.round(v).clamp(qmin, qmax).to(torch.int8)


def ref_dequantize(q, s, z, dtype):
    v = q.float() - (expand(z, q) if z is not None else 0.0)
    return (v * expand(s, q)).to(dtype)


# ------------------------------------------------------------------ configs
SHAPES_GRANULARITY = [
    ((1,), None, None), ((7,), None, None), ((3, 33), None, None),
    ((1, 1), 0, None), ((5, 33), 0, None), ((5, 33), 1, None), ((5, 33), -1, None),
    ((2, 3, 40), 1, None), ((2, 3, 40), 2, None), ((2, 3, 40), 0, None),
    ((1, 32), None, 32), ((4, 128), None, 32), ((3, 256), None, 128), ((2, 3, 64), None, 64),
    ((7, 96), None, 96), ((3, 20), None, 1), ((9, 4096 + 64), None, 64),
]


def make_input(shape, dtype):
    # spread across several magnitudes and an offset, so asymmetric ranges are real
    x = torch.randn(shape) * torch.exp(torch.randn(shape))
    return (x + 0.3).to(dtype)


@pytest.mark.parametrize("shape,axis,group_size", SHAPES_GRANULARITY)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("symmetric", [True, False])
def test_matches_reference(isa, shape, axis, group_size, dtype, bits, symmetric):
    x = make_input(shape, dtype)
    s, z = choose_qparams_affine(x, bits, symmetric, axis=axis, group_size=group_size)
    rs, rz = ref_choose_qparams(x, bits, symmetric, axis, group_size)
    assert s.dtype == z.dtype == torch.float32 and s.shape == rs.shape
    torch.testing.assert_close(s, rs, rtol=0, atol=0)
    torch.testing.assert_close(z, rz, rtol=0, atol=0)
    zp = None if symmetric else z
    q = quantize_affine(x, s, zp, bits)
    assert q.dtype == torch.int8 and q.shape == x.shape
    assert torch.equal(q, ref_quantize(x, s, zp, bits))
    for out_dtype in DTYPES:
        y = dequantize_affine(q, s, zp, out_dtype)
        assert y.dtype == out_dtype
        assert torch.equal(y, ref_dequantize(q, s, zp, out_dtype))
    # the quantization error of every element stays within half a step
    err = (dequantize_affine(q, s, zp, torch.float32) - x.float()).abs()
    assert bool((err <= expand(s, x) * 0.5001).all())


@pytest.mark.parametrize("shape,axis", [((300_000,), None), ((700, 257), -1), ((3, 70_000), 0)])
def test_large_tensors_split_across_threads(isa, shape, axis):
    x = make_input(shape, torch.float32)
    s, z = choose_qparams_affine(x, 8, False, axis=axis)
    rs, rz = ref_choose_qparams(x, 8, False, axis)
    assert torch.equal(s, rs) and torch.equal(z, rz)
    q = quantize_affine(x, s, z, 8)
    assert torch.equal(q, ref_quantize(x, s, z, 8))
    assert torch.equal(dequantize_affine(q, s, z, torch.bfloat16), ref_dequantize(q, s, z, torch.bfloat16))


def test_sqnr_on_gaussian_weights():
    w = torch.randn(256, 512)
    for bits, group, min_db in [(8, None, 38.0), (4, 128, 17.0), (2, 64, 5.0)]:
        axis = 0 if group is None else None
        s, z = choose_qparams_affine(w, bits, False, axis=axis, group_size=group)
        w_hat = dequantize_affine(quantize_affine(w, s, z, bits), s, z, torch.float32)
        sqnr = 20 * torch.log10(w.norm() / (w - w_hat).norm())
        assert sqnr > min_db, (bits, sqnr)


def test_non_contiguous_input_is_accepted(isa):
    x = make_input((64, 48), torch.float32).t()
    assert not x.is_contiguous()
    s, z = choose_qparams_affine(x, 4, False, group_size=16)
    assert torch.equal(s, ref_choose_qparams(x, 4, False, None, 16)[0])
    assert torch.equal(quantize_affine(x, s, z, 4), ref_quantize(x, s, z, 4))


def test_all_zero_group_gets_unit_scale(isa):
    x = torch.randn(4, 64)
    x[1, :32] = 0
    s, z = choose_qparams_affine(x, 4, False, group_size=32)
    assert s[1, 0] == 1.0 and z[1, 0] == -8.0  # asymmetric: lo = hi = 0 -> zero_point = qmin
    q = quantize_affine(x, s, z, 4)
    assert torch.equal(q[1, :32], torch.full((32,), -8, dtype=torch.int8))
    assert torch.equal(dequantize_affine(q, s, z, torch.float32)[1, :32], torch.zeros(32))


def test_nan_and_inf(isa):
    x = torch.randn(2, 64)
    bad = x.clone()
    bad[1, 5] = float("nan")
    with pytest.raises(RuntimeError, match="NaN or infinity"):
        choose_qparams_affine(bad, 8, True, axis=0)
    bad[1, 5] = float("inf")
    with pytest.raises(RuntimeError, match="NaN or infinity"):
        choose_qparams_affine(bad, 4, False, group_size=32)
    # quantize: NaN -> code of 0.0, +-inf -> qmax / qmin (documented)
    s, z = choose_qparams_affine(x, 4, False, axis=0)
    y = x.clone()
    y[0, :3] = torch.tensor([float("nan"), float("inf"), float("-inf")])
    q = quantize_affine(y, s, z, 4)
    assert q[0, 0] == int(z[0, 0]) and q[0, 1] == 7 and q[0, 2] == -8
    assert torch.equal(q, ref_quantize(y, s, z, 4))


def test_empty_tensors(isa):
    x = torch.empty(0, 64)
    s, z = choose_qparams_affine(x, 4, False, group_size=32)
    assert s.shape == (0, 2)
    q = quantize_affine(x, s, z, 4)
    assert q.shape == (0, 64) and dequantize_affine(q, s, z, torch.float16).shape == (0, 64)
    s, z = choose_qparams_affine(torch.empty(0), 8, True)
    assert s.tolist() == [1.0] and z.tolist() == [0.0]


def test_zero_dim_tensor(isa):
    x = torch.tensor(-2.5)
    s, z = choose_qparams_affine(x, 8, True)
    assert s.shape == () and torch.equal(s, torch.tensor(2.5 / 127))
    q = quantize_affine(x, s, None, 8)
    assert q.item() == -127


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda x: choose_qparams_affine(x.int(), 8, True), "dtype float32, float16 or bfloat16"),
        (lambda x: choose_qparams_affine(x, 3, True), r"bits in \{2, 4, 8\}"),
        (lambda x: choose_qparams_affine(x, 4, True, group_size=60), "group_size 60 does not divide the last axis of size 128"),
        (lambda x: choose_qparams_affine(x, 4, True, group_size=0), "group_size > 0"),
        (lambda x: choose_qparams_affine(x, 4, True, axis=2), r"axis in \[-2, 1\]"),
        (lambda x: choose_qparams_affine(x, 4, True, axis=0, group_size=32), "not both"),
        (lambda x: quantize_affine(x, torch.ones(4, 3), None, 4), "not a per-tensor, per-axis or per-group"),
        (lambda x: quantize_affine(x, torch.ones(4), None, 4), "expected scale of rank 2"),
        (lambda x: quantize_affine(x, torch.ones(4, 1, dtype=torch.float64), None, 4), "scale of dtype Float"),
        (lambda x: quantize_affine(x, torch.ones(4, 1), torch.zeros(4, 2), 4), "zero_point of the shape of scale"),
        (lambda x: quantize_affine(x, torch.zeros(4, 1), None, 4), "finite and > 0"),
        (lambda x: quantize_affine(x, torch.ones(4, 1), torch.full((4, 1), float("nan")), 4), "finite zero_point"),
        (lambda x: quantize_affine(x, torch.ones(4, 1), None, 16), r"bits in \{2, 4, 8\}"),
        (lambda x: dequantize_affine(x, torch.ones(4, 1), None, torch.float32), "codes of dtype Char"),
        (lambda x: dequantize_affine(x.to(torch.int8), torch.ones(4, 1), None, torch.int32), "dtype to be torch.float32"),
    ],
)
def test_bad_input_is_rejected(call, match):
    with pytest.raises(RuntimeError, match=match):
        call(torch.randn(4, 128))


@pytest.mark.parametrize("dtype", DTYPES)
def test_opcheck(dtype):
    x = make_input((6, 64), dtype)
    for args in [(x, 4, False, None, 32), (x, 8, True, 0, None), (x, 2, False, None, None)]:
        opcheck(torch.ops.lowbit.choose_qparams_affine, args)
    s, z = choose_qparams_affine(x, 4, False, group_size=32)
    opcheck(torch.ops.lowbit.quantize_affine, (x, s, z, 4))
    opcheck(torch.ops.lowbit.quantize_affine, (x, s, None, 4))
    q = quantize_affine(x, s, z, 4)
    opcheck(torch.ops.lowbit.dequantize_affine, (q, s, z, dtype))


def test_compiles_fullgraph():
    x = make_input((8, 64), torch.float32)

    def roundtrip(x):
        s, z = torch.ops.lowbit.choose_qparams_affine(x, 4, False, None, 32)
        q = torch.ops.lowbit.quantize_affine(x, s, z, 4)
        return torch.ops.lowbit.dequantize_affine(q, s, z, torch.float32)

    compiled = torch.compile(roundtrip, fullgraph=True, backend="eager")
    assert torch.equal(compiled(x), roundtrip(x))
