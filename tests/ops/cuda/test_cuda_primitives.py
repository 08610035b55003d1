"""CUDA primitive ops (affine, packing, float8, GGUF blocks, GGUF linear) against the
CPU ops and a float64 reference.

Integer codes, packed bytes, float8 bytes and GGUF blocks must equal the CPU op's bit
for bit on the same input; so must dequantized floats, whose math is exactly specified
(one float32 product, then round half to even), NaN payloads aside. Float results are
also checked against a float64 reference by relative error. What the CUDA ops do
differently (no data-dependent errors: NaN parameters / NaN blocks instead; pack_bits
saturates) is tested as documented in docs/cuda.md.

Every test is marked `cuda` and is skipped where no GPU is present (tests/conftest.py).
Dry run without a GPU: `LOWBIT_CUDA_DRY_RUN=1 pytest --noconftest tests/ops/cuda` runs
the device-agnostic tests with the "device" set to the CPU (the op is then compared with
itself): it exercises this file's inputs, references and shape logic; the CUDA-only
tests skip.
"""
import os

import pytest
import torch
from torch.library import opcheck

import lowbit  # noqa: F401  (loads the extension and the fake implementations)
from lowbit.ops import (
    choose_qparams_affine, choose_scale_fp8, dequantize_affine, dequantize_fp8, dequantize_q4_0,
    dequantize_q8_0, linear_q4_0, linear_q8_0, pack_bits, quantize_affine, quantize_fp8, quantize_q4_0,
    quantize_q8_0, unpack_bits,
)

DRY_RUN = os.environ.get("LOWBIT_CUDA_DRY_RUN") == "1"
DEV = "cpu" if DRY_RUN else "cuda"
pytestmark = pytest.mark.cuda
cuda_only = pytest.mark.skipif(DRY_RUN, reason="CUDA-only behaviour (dry run on the CPU)")

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
FP8 = [torch.float8_e4m3fn, torch.float8_e5m2]
FP8_MAX = {torch.float8_e4m3fn: 448.0, torch.float8_e5m2: 57344.0}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# ------------------------------------------------------------------ helpers ----

def dev(t):
    return None if t is None else t.to(DEV)


def poison(nbytes, byte=0xFF):
    """Leaves a freed block of `nbytes` filled with `byte` in the caching allocator, so
    that an output of that size allocated next starts as garbage (0xFF is NaN in every
    float type), not as the result of an earlier call."""
    if DEV == "cuda" and nbytes > 0:
        torch.empty(nbytes, dtype=torch.uint8, device=DEV).fill_(byte)


def nbytes_of(t):
    return t.numel() * t.element_size()


def raw(t):
    """A view whose equality is bit equality for codes / bytes (float8 as uint8)."""
    t = t.cpu()
    return t.view(torch.uint8) if t.dtype in FP8 else t


def assert_same(got, want):
    """Same dtype, shape and values; floats exactly, NaN equal to NaN."""
    got, want = raw(got), raw(want)
    assert got.dtype == want.dtype and got.shape == want.shape, (got.dtype, got.shape, want.dtype, want.shape)
    if got.dtype.is_floating_point:
        torch.testing.assert_close(got, want, rtol=0, atol=0, equal_nan=True)
    else:
        assert torch.equal(got, want), f"{(got != want).sum().item()} of {got.numel()} elements differ"


def rel_err(got, ref64):
    """||got - ref|| / ||ref|| over the reference values that are finite in got's dtype."""
    limit = torch.finfo(got.dtype).max
    got, ref64 = got.cpu().double(), ref64.cpu().double()
    keep = torch.isfinite(ref64) & (ref64.abs() <= limit)
    d, r = (got - ref64)[keep], ref64[keep]
    return (d.norm() / r.norm().clamp_min(1e-300)).item() if r.numel() else 0.0


def make_input(shape, dtype):
    # spread over several magnitudes, with an offset so that asymmetric ranges are real
    x = torch.randn(shape) * torch.exp(torch.randn(shape))
    return (x + 0.3).to(dtype)


def misaligned(x):
    """The same values, contiguous, at a storage offset of one element: the data pointer
    is not 16-byte aligned, so the kernels take their scalar paths."""
    flat = torch.empty(x.numel() + 1, dtype=x.dtype, device=x.device)
    flat[1:] = x.reshape(-1)
    out = flat[1:].view(x.shape)
    assert out.is_contiguous() and out.storage_offset() == 1
    return out


def f32_from_bits(bits):
    return torch.tensor(bits, dtype=torch.int64).to(torch.int32).view(torch.float32)


NEG_NAN = f32_from_bits([0xFFC00000]).item()  # NaN with the sign bit set


def expand(p, x):
    """Parameters in keepdim / group shape -> one value per element of x."""
    if x.dim() and p.shape[-1] not in (1, x.shape[-1]):
        p = p.repeat_interleave(x.shape[-1] // p.shape[-1], -1)
    return p.expand(x.shape)


# Granularities: (shape, axis, group_size). The comments name the CUDA reduction path.
GRANULARITIES = [
    ((1,), None, None), ((7,), None, None), ((3, 33), None, None),   # per tensor, warp per row
    ((3, 70001), None, None),           # per tensor, block per 16K chunk, scalar loads
    ((64, 4224), None, None),           # per tensor, 17 chunks, 16-byte loads
    ((1, 1), 0, None), ((5, 33), 0, None),                  # per axis 0, warp per row
    ((6, 8192), 0, None), ((2, 40000), 0, None),            # per axis 0, block per chunk
    ((2, 3, 40), 1, None), ((2, 3, 40), 0, None),           # middle axis: several rows per channel
    ((5, 33), 1, None), ((5, 33), -1, None), ((1000, 3), -1, None), ((300, 300), 1, None),
    ((2, 3, 40), 2, None),                                  # last axis: column kernel
    ((1, 32), None, 32), ((4, 128), None, 32), ((3, 256), None, 128), ((2, 3, 64), None, 64),
    ((7, 96), None, 96), ((3, 20), None, 1), ((5, 10), None, 5), ((9, 4160), None, 64),
    ((2, 8192), None, 8192),                                # groups, incl. odd sizes and 1
]
GRAN_IDS = [f"{s}-axis{a}-g{g}" for s, a, g in GRANULARITIES]


# ---------------------------------------------------------------- affine ----

@pytest.mark.parametrize("shape,axis,group_size", GRANULARITIES, ids=GRAN_IDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bits,symmetric", [(8, True), (4, False), (2, False)])
def test_choose_qparams_affine_matches_cpu(shape, axis, group_size, dtype, bits, symmetric):
    x = make_input(shape, dtype)
    s_cpu, z_cpu = choose_qparams_affine(x, bits, symmetric, axis=axis, group_size=group_size)
    poison(nbytes_of(s_cpu))
    s, z = choose_qparams_affine(dev(x), bits, symmetric, axis=axis, group_size=group_size)
    assert s.device.type == DEV and z.device.type == DEV
    assert_same(s, s_cpu)
    assert_same(z, z_cpu)


@pytest.mark.parametrize("shape,axis,group_size", [((3, 70001), None, None), ((5, 33), 0, None),
                                                   ((1000, 3), -1, None), ((5, 10), None, 5),
                                                   ((4, 128), None, 32)])
def test_choose_qparams_affine_misaligned_input(shape, axis, group_size):
    x = make_input(shape, torch.float16)
    s_cpu, z_cpu = choose_qparams_affine(x, 4, False, axis=axis, group_size=group_size)
    s, z = choose_qparams_affine(misaligned(dev(x)), 4, False, axis=axis, group_size=group_size)
    assert_same(s, s_cpu)
    assert_same(z, z_cpu)


def test_choose_qparams_affine_against_float64_reference():
    x = make_input((8, 512), torch.float32)
    s, z = choose_qparams_affine(dev(x), 8, False, group_size=64)
    g = x.double().reshape(8, 8, 64)
    lo, hi = g.amin(-1).clamp(max=0), g.amax(-1).clamp(min=0)
    assert rel_err(s, (hi - lo) / 255) < 1e-7
    assert torch.equal(z.cpu(), (-128 - torch.round(lo / s.cpu().double())).clamp(-128, 127).float())


@pytest.mark.parametrize("shape,axis,group_size", GRANULARITIES, ids=GRAN_IDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("with_zero_point", [True, False])
def test_quantize_affine_matches_cpu(shape, axis, group_size, dtype, bits, with_zero_point):
    x = make_input(shape, dtype)
    s, z = choose_qparams_affine(x, bits, not with_zero_point, axis=axis, group_size=group_size)
    zp = z if with_zero_point else None
    flat = x.view(-1)
    if flat.numel() >= 4:  # NaN -> code of 0.0, +-inf -> qmax / qmin
        flat[1], flat[2], flat[3] = float("nan"), float("inf"), float("-inf")
    q_cpu = quantize_affine(x, s, zp, bits)
    poison(nbytes_of(q_cpu), 0xA5)
    q = quantize_affine(dev(x), dev(s), dev(zp), bits)
    assert_same(q, q_cpu)
    if x.numel() <= 300_000:  # the float32 definition, spelled out
        v = torch.nan_to_num(x.float() / expand(s, x), nan=0.0, posinf=float("inf"), neginf=float("-inf"))
        if zp is not None:
            v = v + expand(zp, x)
        lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
        assert torch.equal(q.cpu(), torch.round(v).clamp(lo, hi).to(torch.int8))
    q_mis = quantize_affine(misaligned(dev(x)), dev(s), dev(zp), bits)
    assert_same(q_mis, q_cpu)


@pytest.mark.parametrize("shape,axis,group_size", GRANULARITIES, ids=GRAN_IDS)
@pytest.mark.parametrize("out_dtype", DTYPES)
@pytest.mark.parametrize("with_zero_point", [True, False])
def test_dequantize_affine_matches_cpu(shape, axis, group_size, out_dtype, with_zero_point):
    x = make_input(shape, torch.float32)
    s, z = choose_qparams_affine(x, 4, not with_zero_point, axis=axis, group_size=group_size)
    zp = z if with_zero_point else None
    q = torch.randint(-8, 8, shape, dtype=torch.int8)
    y_cpu = dequantize_affine(q, s, zp, out_dtype)
    poison(nbytes_of(y_cpu))
    y = dequantize_affine(dev(q), dev(s), dev(zp), out_dtype)
    assert_same(y, y_cpu)
    ref = (q.double() - (expand(zp, q).double() if zp is not None else 0.0)) * expand(s, q).double()
    tol = {torch.float32: 1e-6, torch.float16: 1e-3, torch.bfloat16: 8e-3}[out_dtype]
    assert rel_err(y, ref) < tol
    assert_same(dequantize_affine(misaligned(dev(q)), dev(s), dev(zp), out_dtype), y_cpu)


def test_affine_non_contiguous_and_empty_inputs():
    x = make_input((64, 48), torch.float32).t()
    s, z = choose_qparams_affine(x, 4, False, group_size=16)
    assert_same(choose_qparams_affine(dev(x), 4, False, group_size=16)[0], s)
    assert_same(quantize_affine(dev(x), dev(s), dev(z), 4), quantize_affine(x, s, z, 4))
    e = torch.empty(0, 64, device=DEV)
    s, z = choose_qparams_affine(e, 4, False, group_size=32)
    assert s.shape == (0, 2) and quantize_affine(e, s, z, 4).shape == (0, 64)
    assert dequantize_affine(torch.empty(0, 64, dtype=torch.int8, device=DEV), s, z, torch.float16).shape == (0, 64)
    s, z = choose_qparams_affine(torch.empty(0, device=DEV), 8, True)
    assert s.tolist() == [1.0] and z.tolist() == [0.0]
    s, z = choose_qparams_affine(torch.empty(0, 5, device=DEV), 4, False, axis=1)  # channels with no element
    s_cpu, z_cpu = choose_qparams_affine(torch.empty(0, 5), 4, False, axis=1)
    assert_same(s, s_cpu)
    assert_same(z, z_cpu)
    x0 = torch.tensor(-2.5)
    assert_same(choose_qparams_affine(dev(x0), 8, True)[0], choose_qparams_affine(x0, 8, True)[0])


@cuda_only
def test_choose_qparams_affine_non_finite_gives_nan_parameters():
    # The CPU op raises; the CUDA op cannot without a sync: the channels holding NaN or
    # +-inf get scale = zero_point = NaN, the others are unaffected.
    x = make_input((8, 64), torch.float32)
    bad = x.clone()
    bad[1, 3], bad[3, 60], bad[5, 0], bad[6, 10] = float("nan"), float("inf"), float("-inf"), NEG_NAN
    for symmetric in (True, False):
        for kw in ({"axis": 0}, {"group_size": 64}):
            s, z = choose_qparams_affine(dev(bad), 8, symmetric, **kw)
            s_ok, z_ok = choose_qparams_affine(x, 8, symmetric, **kw)
            for r in range(8):
                if r in (1, 3, 5, 6):
                    assert torch.isnan(s[r]).all() and torch.isnan(z[r]).all(), (symmetric, kw, r)
                else:
                    assert_same(s[r], s_ok[r])
                    assert_same(z[r], z_ok[r])
    s, z = choose_qparams_affine(dev(bad), 4, False)  # per tensor
    assert torch.isnan(s).all() and torch.isnan(z).all()


@cuda_only
def test_quantize_affine_unchecked_parameters_keep_codes_in_range():
    # The CPU op rejects scales that are not finite and > 0 and non-finite zero-points;
    # the CUDA op does not look at their values: the codes are meaningless but in range.
    x = dev(make_input((4, 64), torch.float32))
    s = dev(torch.tensor([[0.0], [-1.0], [float("inf")], [float("nan")]]))
    z = dev(torch.tensor([[0.0], [float("nan")], [float("inf")], [1.0]]))
    for bits in (2, 4, 8):
        q = quantize_affine(x, s, z, bits).cpu()
        assert q.min() >= -(2 ** (bits - 1)) and q.max() <= 2 ** (bits - 1) - 1


# --------------------------------------------------------------- packing ----

PACK_SHAPES = [(1,), (7,), (3, 5), (4, 16), (2, 3, 33), (1000,), (17, 64), (5, 4097), (3, 1), (8, 2048),
               (0, 8), (3, 0)]


@pytest.mark.parametrize("shape", PACK_SHAPES)
@pytest.mark.parametrize("bits", [2, 4])
@pytest.mark.parametrize("aligned", [True, False])
def test_pack_unpack_match_cpu(shape, bits, aligned):
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    codes = torch.randint(lo, hi + 1, shape, dtype=torch.int8)
    p_cpu = pack_bits(codes, bits)
    c = dev(codes) if aligned else misaligned(dev(codes))
    poison(nbytes_of(p_cpu), 0xA5)
    p = pack_bits(c, bits)
    assert_same(p, p_cpu)
    n = shape[-1]
    poison(nbytes_of(codes), 0xA5)
    assert_same(unpack_bits(p if aligned else misaligned(p), bits, n), codes)
    # any byte unpacks, padding bits included
    junk = torch.randint(0, 256, p_cpu.shape, dtype=torch.uint8)
    want = unpack_bits(junk, bits, n)
    got = unpack_bits(dev(junk) if aligned else misaligned(dev(junk)), bits, n)
    assert_same(got, want)


def test_pack_bits_non_contiguous():
    codes = torch.randint(-8, 8, (40, 6), dtype=torch.int8).t()
    assert_same(pack_bits(dev(codes), 4), pack_bits(codes, 4))


@cuda_only
def test_pack_bits_saturates_out_of_range_codes():
    # The CPU op raises; the CUDA op saturates each code to the range of `bits`.
    codes = torch.randint(-128, 128, (5, 37), dtype=torch.int8)
    for bits in (2, 4):
        lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
        assert_same(pack_bits(dev(codes), bits), pack_bits(codes.clamp(lo, hi), bits))
        assert_same(pack_bits(misaligned(dev(codes)), bits), pack_bits(codes.clamp(lo, hi), bits))
        flat = torch.randint(-128, 128, (4, 64), dtype=torch.int8)  # rows without padding: 16-byte path
        assert_same(pack_bits(dev(flat), bits), pack_bits(flat.clamp(lo, hi), bits))


# ----------------------------------------------------------------- float8 ----

def fp8_grid_values(fp8):
    """Every finite value of the format, the midpoints between neighbours and the floats
    just around those midpoints, around the max finite and the smallest subnormal,
    with both signs: the places where rounding and saturation decide."""
    codes = torch.arange(256, dtype=torch.int32).to(torch.uint8).view(fp8).float()
    v = torch.unique(codes[torch.isfinite(codes) & (codes >= 0)]).double()
    mids = ((v[1:] + v[:-1]) / 2).float()
    up = torch.nextafter(mids, torch.full_like(mids, float("inf")))
    down = torch.nextafter(mids, torch.zeros_like(mids))
    m = FP8_MAX[fp8]
    edges = torch.tensor([m, m * 1.0625, m * 1.125, m * 1.2, 2 * m, 1e30, float("inf"), 2.0 ** -10, 3 * 2.0 ** -10,
                          2.0 ** -17, 3 * 2.0 ** -17, 1e-40, 0.0])
    pos = torch.cat([v.float(), mids, up, down, edges])
    return torch.cat([pos, -pos, torch.tensor([float("nan"), NEG_NAN])])


@pytest.mark.parametrize("fp8", FP8)
def test_quantize_fp8_rounding_and_saturation_match_cpu(fp8):
    x = fp8_grid_values(fp8)
    x = torch.cat([x, torch.zeros(-x.numel() % 8)])  # whole 16-byte vectors, then a tail below
    one = torch.ones(1)
    for xs in (x, x[:-3]):
        want = quantize_fp8(xs, one, fp8)
        poison(xs.numel(), 0xA5)
        assert_same(quantize_fp8(dev(xs), dev(one), fp8), want)
        assert_same(quantize_fp8(misaligned(dev(xs)), dev(one), fp8), want)
    # torch's own conversion agrees on everything but NaN's sign
    finite = x[~torch.isnan(x)]
    assert_same(quantize_fp8(dev(finite), dev(one), fp8), (finite / 1).clamp(-FP8_MAX[fp8], FP8_MAX[fp8]).to(fp8))


@pytest.mark.parametrize("fp8", FP8)
@pytest.mark.parametrize("xdtype", [torch.float16, torch.bfloat16])
def test_quantize_fp8_every_16_bit_input_matches_cpu(fp8, xdtype):
    x = torch.arange(65536, dtype=torch.int32).to(torch.int16).view(xdtype).reshape(256, 256)
    for scale in (torch.ones(1, 1), torch.rand(256, 1) + 0.25, torch.tensor([[1e-3]])):
        assert_same(quantize_fp8(dev(x), dev(scale), fp8), quantize_fp8(x, scale, fp8))


@pytest.mark.parametrize("fp8", FP8)
def test_quantize_fp8_random_float32_bits_match_cpu(fp8):
    x = torch.randint(-2**31, 2**31, (1 << 18,), dtype=torch.int64).to(torch.int32).view(torch.float32)
    assert_same(quantize_fp8(dev(x), dev(torch.ones(1)), fp8), quantize_fp8(x, torch.ones(1), fp8))
    s = torch.tensor([2.0 ** -20])
    assert_same(quantize_fp8(dev(x), dev(s), fp8), quantize_fp8(x, s, fp8))


@pytest.mark.parametrize("shape,axis,group_size", GRANULARITIES, ids=GRAN_IDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("fp8", FP8)
def test_fp8_ops_match_cpu(shape, axis, group_size, dtype, fp8):
    x = make_input(shape, dtype)
    s_cpu = choose_scale_fp8(x, fp8, axis, group_size)
    poison(nbytes_of(s_cpu))
    s = choose_scale_fp8(dev(x), fp8, axis, group_size)
    assert_same(s, s_cpu)
    q_cpu = quantize_fp8(x, s_cpu, fp8)
    poison(nbytes_of(q_cpu), 0xA5)
    q = quantize_fp8(dev(x), s, fp8)
    assert_same(q, q_cpu)
    y_cpu = dequantize_fp8(q_cpu, s_cpu, dtype)
    poison(nbytes_of(y_cpu))
    y = dequantize_fp8(q, s, dtype)
    assert_same(y, y_cpu)
    ref = q_cpu.double() * expand(s_cpu, x).double()
    assert rel_err(y, ref) < {torch.float32: 1e-6, torch.float16: 1e-3, torch.bfloat16: 8e-3}[dtype]
    assert_same(choose_scale_fp8(misaligned(dev(x)), fp8, axis, group_size), s_cpu)


@pytest.mark.parametrize("fp8", FP8)
@pytest.mark.parametrize("out_dtype", DTYPES)
def test_dequantize_fp8_every_code_matches_cpu(fp8, out_dtype):
    q = torch.arange(256, dtype=torch.int32).to(torch.uint8).view(fp8).reshape(16, 16)
    for scale in (torch.ones(1, 1), torch.rand(16, 1) * 100, torch.rand(1, 16) * 1e-3):
        want = dequantize_fp8(q, scale, out_dtype)
        poison(nbytes_of(want))
        assert_same(dequantize_fp8(dev(q), dev(scale), out_dtype), want)
        assert_same(dequantize_fp8(misaligned(dev(q)), dev(scale), out_dtype), want)


def test_fp8_non_contiguous_and_empty_inputs():
    x = make_input((64, 48), torch.bfloat16).t()
    s = choose_scale_fp8(x, torch.float8_e4m3fn, axis=0)
    assert_same(choose_scale_fp8(dev(x), torch.float8_e4m3fn, axis=0), s)
    assert_same(quantize_fp8(dev(x), dev(s), torch.float8_e4m3fn), quantize_fp8(x, s, torch.float8_e4m3fn))
    e = torch.empty(0, 32, device=DEV)
    s = choose_scale_fp8(e, torch.float8_e5m2, group_size=16)
    assert s.shape == (0, 2)
    assert quantize_fp8(e, s, torch.float8_e5m2).shape == (0, 32)
    assert choose_scale_fp8(torch.empty(0, device=DEV), torch.float8_e4m3fn).tolist() == [1.0]


@cuda_only
def test_choose_scale_fp8_non_finite_gives_nan_scale():
    x = make_input((6, 64), torch.float32)
    bad = x.clone()
    bad[1, 3], bad[2, 0], bad[4, 63] = float("nan"), float("-inf"), NEG_NAN
    s = choose_scale_fp8(dev(bad), torch.float8_e4m3fn, axis=0).cpu()
    s_ok = choose_scale_fp8(x, torch.float8_e4m3fn, axis=0)
    for r in range(6):
        if r in (1, 2, 4):
            assert torch.isnan(s[r]).all()
        else:
            assert_same(s[r], s_ok[r])


# ------------------------------------------------------------------ GGUF ----

GGUF = {
    "q8_0": (quantize_q8_0, dequantize_q8_0, linear_q8_0, 34),
    "q4_0": (quantize_q4_0, dequantize_q4_0, linear_q4_0, 18),
}
GGUF_SHAPES = [(32,), (96,), (3, 64), (5, 224), (2, 3, 96), (1, 1, 32), (700, 96), (0, 64)]


def gguf_input(shape, dtype):
    """Random blocks plus the corner cases of the format in the first blocks."""
    x = make_input(shape, torch.float32)
    b = x.view(-1, 32)
    special = [
        lambda r: r.zero_(),                                            # all zeros: d = 0 (Q4_0: -0)
        lambda r: r.mul_(0.1).index_put_((torch.tensor([3, 7]),), torch.tensor([9.0, -9.0])),  # |max| tie
        lambda r: r.copy_(torch.arange(-15.5, 16.5)).index_put_((torch.tensor([0]),), torch.tensor(127.0)),
        lambda r: r.mul_(1e-39),                                        # 1 / d overflows (float32 only)
        lambda r: r.mul_(2e5),                                          # scale beyond fp16 (not for f16 input)
        lambda r: r.mul_(1e-6),                                         # fp16-subnormal scale
    ]
    for i, f in enumerate(special[:b.shape[0]]):
        if i == 4 and dtype == torch.float16:
            continue
        f(b[i])
    return x.to(dtype)


@pytest.mark.parametrize("fmt", list(GGUF))
@pytest.mark.parametrize("shape", GGUF_SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_gguf_quantize_matches_cpu(fmt, shape, dtype):
    quant, dequant, _, _ = GGUF[fmt]
    x = gguf_input(shape, dtype)
    want = quant(x)
    poison(nbytes_of(want), 0xA5)
    got = quant(dev(x))
    assert_same(got, want)
    assert_same(quant(misaligned(dev(x))), want)
    for out_dtype in DTYPES:
        y_cpu = dequant(want, out_dtype)
        poison(nbytes_of(y_cpu))
        assert_same(dequant(got, out_dtype), y_cpu)


@pytest.mark.parametrize("fmt", list(GGUF))
@pytest.mark.parametrize("out_dtype", DTYPES)
def test_gguf_dequantize_any_bytes_matches_cpu(fmt, out_dtype):
    _, dequant, _, nbytes = GGUF[fmt]
    blocks = torch.randint(0, 256, (37, 5 * nbytes), dtype=torch.uint8)  # random scales: inf, NaN, subnormal
    want = dequant(blocks, out_dtype)
    poison(nbytes_of(want))
    y = dequant(dev(blocks), out_dtype)
    assert_same(y, want)
    assert_same(dequant(misaligned(dev(blocks)), out_dtype), want)
    # float64 reference from the bytes
    b = blocks.view(-1, nbytes)
    d = b[:, :2].contiguous().view(torch.float16).double()
    if fmt == "q8_0":
        q = b[:, 2:].contiguous().view(torch.int8).double()
    else:
        q = torch.cat([b[:, 2:] & 0xF, b[:, 2:] >> 4], dim=1).double() - 8
    ref = (d * q).reshape(y.shape)
    assert rel_err(y, ref) < {torch.float32: 1e-7, torch.float16: 1e-3, torch.bfloat16: 8e-3}[out_dtype]


def test_gguf_non_contiguous_and_empty_inputs():
    x = make_input((96, 64), torch.float32).t()
    for quant, dequant, _, nbytes in GGUF.values():
        assert_same(quant(dev(x)), quant(x))
        assert quant(torch.empty(0, 64, device=DEV)).shape == (0, 2 * nbytes)
        assert dequant(torch.empty(3, 0, dtype=torch.uint8, device=DEV), torch.float16).shape == (3, 0)


@cuda_only
@pytest.mark.parametrize("fmt", list(GGUF))
def test_gguf_quantize_non_finite_block_is_nan(fmt):
    # The CPU op raises; the CUDA op writes the block with an fp16 NaN scale and code 0.
    quant, dequant, _, nbytes = GGUF[fmt]
    x = make_input((4, 128), torch.float32)
    bad = x.clone()
    bad[0, 5], bad[1, 40], bad[2, 127], bad[3, 64] = float("nan"), float("inf"), float("-inf"), NEG_NAN
    got = quant(dev(bad)).cpu().view(4, 4, nbytes)
    want = quant(x).view(4, 4, nbytes)
    bad_blocks = {(0, 0), (1, 1), (2, 3), (3, 2)}
    code_byte = 0x00 if fmt == "q8_0" else 0x88
    for r in range(4):
        for blk in range(4):
            if (r, blk) in bad_blocks:
                assert got[r, blk, :2].tolist() == [0x00, 0x7E]
                assert (got[r, blk, 2:] == code_byte).all()
            else:
                assert torch.equal(got[r, blk], want[r, blk])
    y = dequant(dev(got.view(4, 4 * nbytes)), torch.float32).cpu().view(4, 4, 32)
    for r, blk in bad_blocks:
        assert torch.isnan(y[r, blk]).all()


@pytest.mark.parametrize("fmt", list(GGUF))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("lead,N,K", [((1,), 1, 32), ((5,), 17, 96), ((2, 3), 64, 256), ((33,), 40, 4096)])
@pytest.mark.parametrize("bias", [None, "float32", "x"])
def test_gguf_linear_against_float64_reference(fmt, dtype, lead, N, K, bias):
    quant, dequant, linear, _ = GGUF[fmt]
    blocks = quant(torch.randn(N, K) * 0.05)
    x = torch.randn(*lead, K).to(dtype)
    b = None if bias is None else torch.randn(N).to(torch.float32 if bias == "float32" else dtype)
    w64 = dequant(blocks, torch.float32).double()
    ref = x.double() @ w64.T + (0 if b is None else b.double())
    tol = {torch.float32: 1e-5, torch.float16: 3e-3, torch.bfloat16: 2e-2}[dtype]
    outs = []
    for int8_act in (False, True):  # int8_activations is ignored on CUDA
        poison(x.numel() // K * N * x.element_size())
        y = linear(dev(x), dev(blocks), dev(b), int8_activations=int8_act)
        assert y.dtype == dtype and y.shape == (*lead, N) and y.device.type == DEV
        if not (DRY_RUN and int8_act):  # on the CPU, int8 activations are an approximation
            assert rel_err(y, ref) < tol, (int8_act, rel_err(y, ref))
        outs.append(y)
    if not DRY_RUN:
        assert_same(outs[0], outs[1])
        assert lowbit.last_kernels()[f"linear_{fmt}"] == "cuda_dequant_cublas"


@pytest.mark.parametrize("fmt", list(GGUF))
def test_gguf_linear_empty(fmt):
    quant, _, linear, nbytes = GGUF[fmt]
    blocks = dev(quant(torch.randn(8, 64)))
    assert linear(torch.empty(0, 64, device=DEV), blocks).shape == (0, 8)
    assert linear(torch.empty(2, 0, 64, device=DEV), blocks).shape == (2, 0, 8)
    none = torch.empty(0, 2 * nbytes, dtype=torch.uint8, device=DEV)
    assert linear(torch.randn(3, 64, device=DEV), none).shape == (3, 0)


# ------------------------------------------------------------------ opcheck ----

def test_opcheck_on_device():
    x = dev(make_input((6, 64), torch.float32))
    xh = dev(make_input((3, 5, 32), torch.bfloat16))
    opcheck(torch.ops.lowbit.choose_qparams_affine.default, (x, 4, False, None, 32))
    opcheck(torch.ops.lowbit.choose_qparams_affine.default, (xh, 8, True, 1, None))
    s, z = choose_qparams_affine(x, 4, False, group_size=32)
    opcheck(torch.ops.lowbit.quantize_affine.default, (x, s, z, 4))
    q = quantize_affine(x, s, z, 4)
    opcheck(torch.ops.lowbit.dequantize_affine.default, (q, s, z, torch.float16))
    opcheck(torch.ops.lowbit.pack_bits.default, (q, 4))
    opcheck(torch.ops.lowbit.unpack_bits.default, (pack_bits(q, 4), 4, 64))
    for fp8 in FP8:
        opcheck(torch.ops.lowbit.choose_scale_fp8.default, (xh, fp8, -1, None))
        sf = choose_scale_fp8(xh, fp8, -1, None)
        opcheck(torch.ops.lowbit.quantize_fp8.default, (xh, sf, fp8))
        # test_schema compares inputs with allclose, which has no float8 kernel
        utils = ("test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")
        opcheck(torch.ops.lowbit.dequantize_fp8.default, (quantize_fp8(xh, sf, fp8), sf, torch.float32),
                test_utils=utils)
    w = dev(torch.randn(16, 64))
    bias = dev(torch.randn(16))
    for name in ("q8_0", "q4_0"):
        qop = getattr(torch.ops.lowbit, f"quantize_{name}").default
        opcheck(qop, (x,))
        blocks = qop(w)
        opcheck(getattr(torch.ops.lowbit, f"dequantize_{name}").default, (blocks, torch.bfloat16))
        opcheck(getattr(torch.ops.lowbit, f"linear_{name}").default, (x, blocks, bias, False))


# -------------------------------------------------------------- bad input ----

@cuda_only
@pytest.mark.parametrize(
    "call,match",
    [
        (lambda x: quantize_affine(x, torch.ones(4, 1), None, 8), "expected scale on the device of the input"),
        (lambda x: quantize_affine(x.cpu(), torch.ones(4, 1, device="cuda"), None, 8),
         "expected scale on the device of the input"),
        (lambda x: dequantize_affine(x.to(torch.int8), torch.ones(4, 1, device="cuda"), torch.zeros(4, 1), torch.float32),
         "expected zero_point on the device of scale"),
        (lambda x: quantize_fp8(x, torch.ones(1, 1), torch.float8_e4m3fn), "expected scale on the device of the input"),
        (lambda x: dequantize_fp8(x.to(torch.float8_e5m2), torch.ones(1, 1), torch.float32),
         "expected scale on the device of the input"),
        (lambda x: linear_q8_0(x, quantize_q8_0(torch.randn(8, 128))), "expected blocks on the device of x"),
        (lambda x: linear_q4_0(x.cpu(), quantize_q4_0(torch.randn(8, 128)).cuda()), "expected blocks on the device of x"),
        (lambda x: linear_q8_0(x, quantize_q8_0(torch.randn(8, 128)).cuda(), torch.zeros(8)),
         "expected bias on the device of x"),
    ],
)
def test_device_mix_is_rejected(call, match):
    with pytest.raises(RuntimeError, match=match):
        call(torch.randn(4, 128, device="cuda"))


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda x: choose_qparams_affine(x.int(), 8, True), "dtype float32, float16 or bfloat16"),
        (lambda x: choose_qparams_affine(x, 3, True), r"bits in \{2, 4, 8\}"),
        (lambda x: choose_qparams_affine(x, 4, True, group_size=60), "group_size 60 does not divide"),
        (lambda x: quantize_affine(x, dev(torch.ones(4, 3)), None, 4), "not a per-tensor, per-axis or per-group"),
        (lambda x: quantize_affine(x, dev(torch.ones(4, 1, dtype=torch.float64)), None, 4), "scale of dtype Float"),
        (lambda x: dequantize_affine(x, dev(torch.ones(4, 1)), None, torch.float32), "codes of dtype Char"),
        (lambda x: pack_bits(x, 4), "codes of dtype Char"),
        (lambda x: pack_bits(x.to(torch.int8), 8), "expected bits 2 or 4"),
        (lambda x: unpack_bits(x.to(torch.uint8), 4, 100), "expected the last axis of packed"),
        (lambda x: choose_scale_fp8(x, torch.int8), "expected dtype torch.float8_e4m3fn"),
        (lambda x: dequantize_fp8(x, dev(torch.ones(1, 1)), torch.float32), "expected q of dtype torch.float8"),
        (lambda x: quantize_q8_0(x.int()), "dtype float32, float16 or bfloat16"),
        (lambda x: quantize_q4_0(x[:, :100]), "multiple of 32"),
        (lambda x: dequantize_q8_0(x.to(torch.uint8)[:, :100], torch.float32), "multiple of 34"),
        (lambda x: linear_q4_0(x, dev(torch.zeros(8, 18 * 3, dtype=torch.uint8))), "expected x with last axis K = 96"),
        (lambda x: linear_q8_0(x, dev(torch.zeros(8, 34 * 4, dtype=torch.uint8)), dev(torch.zeros(7))),
         r"expected bias of shape \[8\]"),
    ],
)
def test_bad_input_gives_the_cpu_error(call, match):
    with pytest.raises(RuntimeError, match=match):
        call(dev(torch.randn(4, 128)))


# ------------------------------------------------------------- CUDA graphs ----

@cuda_only
def test_ops_capture_in_a_cuda_graph_and_replay():
    w = torch.randn(48, 256, device="cuda")

    def step(x):
        s, z = choose_qparams_affine(x, 4, False, group_size=64)
        q = quantize_affine(x, s, z, 4)
        p = pack_bits(q, 4)
        y = dequantize_affine(unpack_bits(p, 4, 256), s, z, torch.float16)
        fs = choose_scale_fp8(x, torch.float8_e4m3fn, axis=0)
        f = dequantize_fp8(quantize_fp8(x, fs, torch.float8_e4m3fn), fs, torch.float16)
        g4 = dequantize_q4_0(quantize_q4_0(x), torch.float16)
        g8 = dequantize_q8_0(quantize_q8_0(x), torch.bfloat16)
        lin = linear_q8_0(x, quantize_q8_0(w))
        return [s, z, q, p, y, fs, f, g4, g8, lin]

    static_x = make_input((64, 256), torch.float16).cuda()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up outside the capture, as torch recommends
        for _ in range(2):
            step(static_x)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        outs = step(static_x)
    for _ in range(2):
        new_x = make_input((64, 256), torch.float16).cuda()
        static_x.copy_(new_x)
        graph.replay()
        torch.cuda.synchronize()
        expected = step(new_x)
        for a, b in zip(outs[:-1], expected[:-1]):
            assert_same(a, b)
        torch.testing.assert_close(outs[-1], expected[-1], rtol=1e-3, atol=1e-3)


@cuda_only
@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_second_device():
    x = make_input((5, 64), torch.float32)
    xd = x.to("cuda:1")
    s, z = choose_qparams_affine(xd, 4, False, group_size=32)
    assert s.device == xd.device
    assert_same(quantize_affine(xd, s, z, 4), quantize_affine(x, s.cpu(), z.cpu(), 4))
    assert_same(quantize_q4_0(xd), quantize_q4_0(x))
