"""Float8 ops against a plain-PyTorch reference (which doubles as their spec).

Reference: scale = absmax / max_finite in float32 (1 where that is 0);
q = (x.float() / scale).clamp(-max, max).to(float8) (torch converts with round half
to even); x_hat = (q.float() * scale).to(dtype). Codes are compared byte for byte,
dequantized values exactly (the kernel does the same float32 operations).
"""
import pytest
import torch

import lowbit  # noqa: F401  (registers torch.ops.lowbit)
from lowbit._cpu import use_cpu_isa
from lowbit.ops import choose_scale_fp8, dequantize_fp8, quantize_fp8
from lowbit.ops.fp8 import FP8_MAX

FP8 = [torch.float8_e4m3fn, torch.float8_e5m2]
FLOATS = [torch.float32, torch.float16, torch.bfloat16]


# ---- reference ----

def ref_absmax(x, axis, group_size):
    a = x.float().abs()
    if group_size is not None:
        return a.reshape(*x.shape[:-1], x.shape[-1] // group_size, group_size).amax(-1)
    if axis is not None:
        dims = [d for d in range(x.dim()) if d != axis % x.dim()]
        return a.amax(dim=dims, keepdim=True) if dims else a.clone()
    return a.amax().reshape([1] * x.dim()) if x.numel() else torch.zeros([1] * x.dim())


def ref_choose_scale(x, dtype, axis=None, group_size=None):
    s = ref_absmax(x, axis, group_size) / FP8_MAX[dtype]
    return torch.where(s > 0, s, torch.ones_like(s))


def expand_scale(scale, shape):
    """Scale broadcast to the full input shape (per-group scales repeat along the last axis)."""
    if (scale.dim() and list(scale.shape[:-1]) == list(shape[:-1])
            and scale.shape[-1] not in (0, 1, shape[-1])):
        scale = scale.repeat_interleave(shape[-1] // scale.shape[-1], dim=-1)
    return scale.expand(shape)


def ref_quantize(x, scale, dtype):
    m = FP8_MAX[dtype]
    return (x.float() / expand_scale(scale, x.shape)).clamp(-m, m).to(dtype)


def ref_dequantize(q, scale, dtype):
    return (q.float() * expand_scale(scale, q.shape)).to(dtype)


def assert_codes_equal(q, ref):
    assert q.dtype == ref.dtype and q.shape == ref.shape
    qb, rb = q.view(torch.uint8), ref.view(torch.uint8)
    bad = qb != rb
    assert not bad.any(), f"{int(bad.sum())} codes differ, first: got {qb[bad][:8].tolist()} want {rb[bad][:8].tolist()}"


def assert_same(y, ref):
    assert y.dtype == ref.dtype and y.shape == ref.shape
    torch.testing.assert_close(y, ref, rtol=0, atol=0, equal_nan=True)


def rand(shape, dtype):
    # wide dynamic range, never all zeros
    x = torch.randn(shape) * torch.exp2(torch.randint(-6, 7, shape).float())
    return x.to(dtype)


# (shape, axis, group_size); axis on the last axis exercises the per-element scale path
CASES = [
    ((1,), None, None), ((7,), None, None), ((70001,), None, None),
    ((4, 64), None, None), ((3, 5, 96), None, None),
    ((4, 64), 0, None), ((4, 64), 1, None), ((4, 64), -1, None), ((1, 1), 0, None),
    ((3, 5, 96), 1, None), ((3, 5, 96), 2, None), ((3, 5, 37), -1, None), ((2, 3, 70000), 0, None),
    ((4, 64), None, 32), ((4, 64), None, 64), ((3, 5, 96), None, 16), ((3, 5, 39), None, 13),
    ((6, 21), None, 3), ((2, 65536), None, 128), ((1,), None, 1),
]


# ---- correctness ----

@pytest.mark.parametrize("shape,axis,group_size", CASES)
@pytest.mark.parametrize("xdtype", FLOATS)
@pytest.mark.parametrize("fp8", FP8)
def test_roundtrip_matches_reference(isa, shape, axis, group_size, xdtype, fp8):
    x = rand(shape, xdtype)
    scale = choose_scale_fp8(x, fp8, axis, group_size)
    assert scale.dtype == torch.float32
    assert_same(scale, ref_choose_scale(x, fp8, axis, group_size))
    q = quantize_fp8(x, scale, fp8)
    assert_codes_equal(q, ref_quantize(x, scale, fp8))
    for out in FLOATS:
        assert_same(dequantize_fp8(q, scale, out), ref_dequantize(q, scale, out))


def fp8_grid(fp8):
    """Every finite value of the format, the midpoints (exact ties) between neighbours,
    and the float32 values just beside those midpoints, both signs."""
    codes = torch.arange(256, dtype=torch.uint8).view(fp8).float()
    v = codes[torch.isfinite(codes) & (codes >= 0)].unique().double()
    mid = (v[1:] + v[:-1]) / 2  # exact in float32
    beyond = torch.tensor([FP8_MAX[fp8] * 1.0625, FP8_MAX[fp8] * 1.125, FP8_MAX[fp8] * 1.1, 1e30, 3.4e38],
                          dtype=torch.float64)
    m32 = torch.cat([mid, beyond]).float()
    up = torch.nextafter(m32, torch.full_like(m32, float("inf")))
    down = torch.nextafter(m32, torch.zeros_like(m32))
    tiny = torch.tensor([1e-45, 1e-40, 1.1754944e-38, 1e-30, 2.0 ** -130], dtype=torch.float32)
    pos = torch.cat([v.float(), m32, up, down, tiny])
    return torch.cat([pos, -pos])


@pytest.mark.parametrize("fp8", FP8)
def test_quantize_ties_and_subnormal_boundaries(isa, fp8):
    x = fp8_grid(fp8)
    one = torch.ones(1)
    assert_codes_equal(quantize_fp8(x, one, fp8), ref_quantize(x, one, fp8))
    # scaled: the division happens before the rounding
    s = torch.tensor([0.375])
    xs = x * 0.375  # exact: x / 0.375 recovers the grid values
    assert_codes_equal(quantize_fp8(xs, s, fp8), ref_quantize(xs, s, fp8))


@pytest.mark.parametrize("fp8", FP8)
def test_quantize_random_bit_patterns(isa, fp8):
    # any float32 bit pattern (NaN and +-inf included: clamp maps inf to +-max)
    x = torch.randint(-2**31, 2**31 - 1, (1 << 17,), dtype=torch.int32).view(torch.float32)
    x[:4] = torch.tensor([float("inf"), -float("inf"), float("nan"), -float("nan")])
    one = torch.ones(1)
    assert_codes_equal(quantize_fp8(x, one, fp8), ref_quantize(x, one, fp8))


@pytest.mark.parametrize("fp8", FP8)
def test_quantize_inf_saturates_and_nan_stays_nan(isa, fp8):
    nan, inf = float("nan"), float("inf")
    x = torch.tensor([inf, -inf, nan, -nan, 1e38, -1e38, 1.0] * 5)  # 35: vector body and tail
    q = quantize_fp8(x, torch.ones(1), fp8).view(torch.uint8)
    max_code = 0x7E if fp8 == torch.float8_e4m3fn else 0x7B
    assert q[:7].tolist() == [max_code, 0x80 | max_code, 0x7F, 0xFF, max_code, 0x80 | max_code,
                              q[6].item()]
    assert q.view(fp8)[:7].float()[2:4].isnan().all()
    assert_codes_equal(q.view(fp8)[7:], q.view(fp8)[:-7])  # every position alike


@pytest.mark.parametrize("fp8", FP8)
def test_quantize_zero_scale_is_ieee_division(isa, fp8):
    # documented: scale is used as given; x / 0 = +-inf saturates, 0 / 0 is NaN
    x = torch.tensor([1.0, -2.0, 0.0, 3.0])
    q = quantize_fp8(x, torch.zeros(1), fp8).float()
    m = FP8_MAX[fp8]
    assert q[[0, 1, 3]].tolist() == [m, -m, m]
    assert q[2].isnan()


@pytest.mark.parametrize("fp8", FP8)
@pytest.mark.parametrize("out", FLOATS)
def test_dequantize_every_code(isa, fp8, out):
    codes = torch.arange(256, dtype=torch.uint8).repeat(3).view(fp8)  # 768: body and tail
    for s in (1.0, 0.0173, 3.0e4, 1e-30):
        scale = torch.tensor([s])
        assert_same(dequantize_fp8(codes, scale, out), ref_dequantize(codes, scale, out))
    y = dequantize_fp8(codes, torch.ones(1), torch.float32)[:256]
    if fp8 == torch.float8_e5m2:
        assert y[0x7C] == float("inf") and y[0xFC] == -float("inf")
        assert y[[0x7D, 0x7E, 0x7F, 0xFD, 0xFE, 0xFF]].isnan().all()
        assert y.isnan().sum() == 6
    else:
        assert y[[0x7F, 0xFF]].isnan().all() and y.isnan().sum() == 2
        assert y.isinf().sum() == 0


@pytest.mark.skipif(not lowbit._C.cpu_has_avx2(), reason="needs AVX2")
@pytest.mark.parametrize("fp8", FP8)
def test_isas_agree_bit_for_bit_including_nan_payloads(fp8):
    codes = torch.arange(256, dtype=torch.uint8).view(fp8)
    x = torch.randint(-2**31, 2**31 - 1, (4099,), dtype=torch.int32).view(torch.float32)
    out = {}
    for isa in ("portable", "avx2"):
        with use_cpu_isa(isa):
            out[isa] = [dequantize_fp8(codes, torch.tensor([1.5]), d).view(torch.uint8) for d in FLOATS]
            out[isa].append(quantize_fp8(x, torch.ones(1), fp8).view(torch.uint8))
    for a, b in zip(out["portable"], out["avx2"]):
        assert torch.equal(a, b)


@pytest.mark.parametrize("fp8", FP8)
def test_choose_scale_zero_channels_get_one(isa, fp8):
    x = torch.zeros(3, 8)
    x[1, 2] = -4.0
    assert_same(choose_scale_fp8(x, fp8), torch.full((1, 1), 4.0 / FP8_MAX[fp8]))
    assert_same(choose_scale_fp8(x, fp8, 0), torch.tensor([[1.0], [4.0 / FP8_MAX[fp8]], [1.0]]))
    assert_same(choose_scale_fp8(torch.zeros(5), fp8), torch.ones(1))
    # absmax so small that absmax / max underflows float32: also 1, never 0
    assert_same(choose_scale_fp8(torch.tensor([1e-45]), fp8), torch.ones(1))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("axis,group_size", [(None, None), (0, None), (1, None), (None, 4)])
@pytest.mark.parametrize("xdtype", FLOATS)
def test_choose_scale_rejects_non_finite(isa, bad, axis, group_size, xdtype):
    x = rand((3, 40), xdtype)
    x[2, 37] = bad
    with pytest.raises(RuntimeError, match="non-finite values"):
        choose_scale_fp8(x, torch.float8_e4m3fn, axis, group_size)


def test_zero_dim_input(isa):
    x = torch.tensor(-3.5)
    s = choose_scale_fp8(x, torch.float8_e4m3fn)
    assert s.shape == () and s.item() == pytest.approx(3.5 / 448)
    q = quantize_fp8(x, s, torch.float8_e4m3fn)
    assert q.shape == () and q.float().item() == -448.0
    assert dequantize_fp8(q, s, torch.float32).item() == pytest.approx(-3.5)


@pytest.mark.parametrize("shape,axis,group_size,scale_shape", [
    ((0,), None, None, (1,)), ((0, 8), None, None, (1, 1)), ((0, 8), None, 4, (0, 2)),
    ((0, 8), 0, None, (0, 1)), ((3, 0), 0, None, (3, 1)), ((3, 0), None, 4, (3, 0)),
])
def test_empty_tensors(isa, shape, axis, group_size, scale_shape):
    x = torch.empty(shape)
    s = choose_scale_fp8(x, torch.float8_e5m2, axis, group_size)
    assert s.shape == scale_shape and (s == 1).all()
    q = quantize_fp8(x, s, torch.float8_e5m2)
    assert q.shape == shape and q.dtype == torch.float8_e5m2
    y = dequantize_fp8(q, s, torch.bfloat16)
    assert y.shape == shape and y.dtype == torch.bfloat16


def test_non_contiguous_inputs_are_copied(isa):
    x = rand((64, 48), torch.float32).t()  # [48, 64], transposed strides
    s = choose_scale_fp8(x, torch.float8_e4m3fn, group_size=16)
    assert_same(s, choose_scale_fp8(x.contiguous(), torch.float8_e4m3fn, group_size=16))
    q = quantize_fp8(x, s, torch.float8_e4m3fn)
    assert_codes_equal(q, ref_quantize(x, s, torch.float8_e4m3fn))
    qt = q.t().contiguous().t()
    assert_same(dequantize_fp8(qt, s, torch.float32), ref_dequantize(q, s, torch.float32))


# ---- bad inputs ----

def test_bad_dtype_arguments():
    x = torch.randn(4, 8)
    s = torch.ones(1, 1)
    for bad in (torch.int8, torch.float16, torch.uint8):
        with pytest.raises(RuntimeError, match="expected dtype torch.float8_e4m3fn or torch.float8_e5m2"):
            choose_scale_fp8(x, bad)
        with pytest.raises(RuntimeError, match="expected dtype torch.float8_e4m3fn or torch.float8_e5m2"):
            quantize_fp8(x, s, bad)
    q = quantize_fp8(x, s, torch.float8_e4m3fn)
    for bad in (torch.int8, torch.float64, torch.float8_e5m2):
        with pytest.raises(RuntimeError, match="expected dtype to be torch.float32, torch.float16 or torch.bfloat16"):
            dequantize_fp8(q, s, bad)


def test_bad_input_dtypes():
    s = torch.ones(1, 1)
    for bad in (torch.int32, torch.float64, torch.float8_e4m3fn):
        x = torch.ones(4, 8).to(bad)
        with pytest.raises(RuntimeError, match="expected x of dtype float32, float16 or bfloat16"):
            choose_scale_fp8(x, torch.float8_e4m3fn)
        with pytest.raises(RuntimeError, match="expected x of dtype float32, float16 or bfloat16"):
            quantize_fp8(x, s, torch.float8_e4m3fn)
    for bad in (torch.uint8, torch.int8, torch.float32):
        with pytest.raises(RuntimeError, match="expected q of dtype torch.float8_e4m3fn or torch.float8_e5m2"):
            dequantize_fp8(torch.ones(4, 8).to(bad), s, torch.float32)


def test_bad_granularity_arguments():
    x = torch.randn(4, 12)
    fp8 = torch.float8_e4m3fn
    with pytest.raises(RuntimeError, match="does not divide the last axis of size 12"):
        choose_scale_fp8(x, fp8, group_size=5)
    with pytest.raises(RuntimeError, match="expected group_size > 0"):
        choose_scale_fp8(x, fp8, group_size=0)
    with pytest.raises(RuntimeError, match="not both"):
        choose_scale_fp8(x, fp8, axis=0, group_size=4)
    with pytest.raises(RuntimeError, match=r"expected axis in \[-2, 1\]"):
        choose_scale_fp8(x, fp8, axis=2)
    with pytest.raises(RuntimeError, match="need a tensor of rank >= 1"):
        choose_scale_fp8(torch.tensor(1.0), fp8, axis=0)


@pytest.mark.parametrize("scale,match", [
    (torch.ones(1, 1, dtype=torch.float64), "expected scale of dtype Float"),
    (torch.ones(1, 1, dtype=torch.float16), "expected scale of dtype Float"),
    (torch.ones(4), "expected scale of rank 2"),
    (torch.ones(1, 1, 1), "expected scale of rank 2"),
    (torch.ones(4, 5), "is not a per-tensor, per-axis or per-group"),
    (torch.ones(3, 1), "is not a per-tensor, per-axis or per-group"),
    (torch.ones(2, 12), "is not a per-tensor, per-axis or per-group"),
])
def test_bad_scale_shapes(scale, match):
    x = torch.randn(4, 12)
    with pytest.raises(RuntimeError, match=match):
        quantize_fp8(x, scale, torch.float8_e4m3fn)
    q = torch.zeros(4, 12).to(torch.float8_e5m2)
    with pytest.raises(RuntimeError, match=match):
        dequantize_fp8(q, scale, torch.float32)


# ---- fake implementations, opcheck, compile ----

@pytest.mark.parametrize("shape,axis,group_size", [((4, 64), None, None), ((3, 5, 96), 1, None),
                                                   ((4, 64), -1, None), ((3, 5, 96), None, 32)])
def test_fake_matches_cpu(shape, axis, group_size):
    for fp8 in FP8:
        x = rand(shape, torch.bfloat16)
        s = choose_scale_fp8(x, fp8, axis, group_size)
        q = quantize_fp8(x, s, fp8)
        y = dequantize_fp8(q, s, torch.float16)
        xm, sm, qm = x.to("meta"), s.to("meta"), q.to("meta")
        for real, fake in ((s, choose_scale_fp8(xm, fp8, axis, group_size)), (q, quantize_fp8(xm, sm, fp8)),
                           (y, dequantize_fp8(qm, sm, torch.float16))):
            assert fake.device.type == "meta" and fake.shape == real.shape and fake.dtype == real.dtype
    with pytest.raises(RuntimeError, match="does not divide"):
        choose_scale_fp8(torch.empty(4, 12, device="meta"), torch.float8_e4m3fn, group_size=5)
    with pytest.raises(RuntimeError, match="is not a per-tensor, per-axis or per-group"):
        quantize_fp8(torch.empty(4, 12, device="meta"), torch.empty(4, 5, device="meta"), torch.float8_e4m3fn)
    with pytest.raises(RuntimeError, match="expected dtype torch.float8_e4m3fn"):
        quantize_fp8(torch.empty(4, 12, device="meta"), torch.empty(1, 1, device="meta"), torch.int8)


@pytest.mark.parametrize("fp8", FP8)
@pytest.mark.parametrize("xdtype,shape,axis,group_size", [
    (torch.float32, (4, 64), None, None), (torch.bfloat16, (3, 5, 40), 1, None),
    (torch.float16, (6, 32), None, 16), (torch.float32, (5, 37), -1, None),
])
def test_opcheck(fp8, xdtype, shape, axis, group_size):
    x = rand(shape, xdtype)
    torch.library.opcheck(torch.ops.lowbit.choose_scale_fp8.default, (x, fp8, axis, group_size))
    s = choose_scale_fp8(x, fp8, axis, group_size)
    torch.library.opcheck(torch.ops.lowbit.quantize_fp8.default, (x, s, fp8))
    q = quantize_fp8(x, s, fp8)
    # test_schema compares the inputs before and after with torch.allclose, which has no
    # float8 kernel; the other utilities run, and the no-mutation part is checked by hand.
    utils = ("test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")
    torch.library.opcheck(torch.ops.lowbit.dequantize_fp8.default, (q, s, xdtype), test_utils=utils)
    q_before, s_before = q.view(torch.uint8).clone(), s.clone()
    dequantize_fp8(q, s, xdtype)
    assert torch.equal(q.view(torch.uint8), q_before) and torch.equal(s, s_before)


def test_compile_fullgraph():
    def roundtrip(x):
        s = choose_scale_fp8(x, torch.float8_e4m3fn, group_size=32)
        return dequantize_fp8(quantize_fp8(x, s, torch.float8_e4m3fn), s, x.dtype)

    x = rand((8, 64), torch.bfloat16)
    compiled = torch.compile(roundtrip, fullgraph=True, backend="aot_eager")
    assert_same(compiled(x), roundtrip(x))
