"""GGUF Q8_0 / Q4_0 ops: bytes identical to the `gguf` package, on both CPU paths.

The plain-PyTorch functions `ref_*` below are the specification (gguf-py's numpy
code, gguf/quants.py, written with torch ops in float32); every test also checks
the bytes against `gguf.quants` itself.
"""
import warnings

import numpy as np
import pytest
import torch

import lowbit
from lowbit.ops import gguf as G

gguf_quants = pytest.importorskip("gguf.quants")
from gguf import GGMLQuantizationType as QT  # noqa: E402

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
SHAPES = [(32,), (96,), (3, 64), (5, 224), (2, 3, 96), (1, 1, 32)]


# ---------------------------------------------------------------- reference ----

def _scale_bytes(d: torch.Tensor) -> torch.Tensor:
    """float32 [n, 1] -> the fp16 scale as 2 little-endian bytes per row."""
    return d.to(torch.float16).view(torch.uint8).reshape(-1, 2)


def _low_byte(v: torch.Tensor) -> torch.Tensor:
    """float -> int32 by truncation, then its low byte (numpy's float -> int8/uint8
    cast on x86-64: NaN, inf and values outside int32 become 0x80000000)."""
    ok = (v >= -2.0**31) & (v < 2.0**31)
    i = torch.where(ok, v, torch.zeros_like(v)).to(torch.int64)
    i = torch.where(ok, i, torch.full_like(i, -2**31))
    return (i & 0xFF).to(torch.uint8)


def ref_quantize_q8_0(x: torch.Tensor) -> torch.Tensor:
    b = x.float().reshape(-1, 32)
    d = b.abs().amax(dim=1, keepdim=True) / 127
    inv = torch.where(d == 0, torch.zeros_like(d), 1 / d)
    p = b * inv
    a = p.abs()
    fl = a.floor()
    r = torch.sign(p) * (fl + (2 * (a - fl)).floor())  # round half away from zero
    out = torch.cat([_scale_bytes(d), _low_byte(r)], dim=1)
    return out.reshape(*x.shape[:-1], x.shape[-1] // 32 * 34)


def ref_quantize_q4_0(x: torch.Tensor) -> torch.Tensor:
    b = x.float().reshape(-1, 32)
    imax = b.abs().argmax(dim=1, keepdim=True)  # first index on ties, as numpy
    m = b.gather(1, imax)
    d = m / -8
    inv = torch.where(d == 0, torch.zeros_like(d), 1 / d)
    q = _low_byte(torch.trunc(b * inv + 8.5)).clamp(max=15)
    packed = q[:, :16] | (q[:, 16:] << 4)
    out = torch.cat([_scale_bytes(d), packed], dim=1)
    return out.reshape(*x.shape[:-1], x.shape[-1] // 32 * 18)


def ref_dequantize_q8_0(blocks: torch.Tensor, dtype) -> torch.Tensor:
    b = blocks.reshape(-1, 34)
    d = b[:, :2].contiguous().view(torch.float16).float()
    q = b[:, 2:].contiguous().view(torch.int8).float()
    return (d * q).to(dtype).reshape(*blocks.shape[:-1], blocks.shape[-1] // 34 * 32)


def ref_dequantize_q4_0(blocks: torch.Tensor, dtype) -> torch.Tensor:
    b = blocks.reshape(-1, 18)
    d = b[:, :2].contiguous().view(torch.float16).float()
    q = torch.cat([b[:, 2:] & 0x0F, b[:, 2:] >> 4], dim=1).to(torch.int32) - 8
    return (d * q.float()).to(dtype).reshape(*blocks.shape[:-1], blocks.shape[-1] // 18 * 32)


def gguf_quantize(x: torch.Tensor, qtype) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numpy warns on 1 / d overflow for tiny blocks
        with np.errstate(all="ignore"):
            return torch.from_numpy(np.ascontiguousarray(gguf_quants.quantize(x.float().numpy(), qtype)))


def gguf_dequantize(blocks: torch.Tensor, qtype) -> torch.Tensor:
    with np.errstate(all="ignore"):
        return torch.from_numpy(np.ascontiguousarray(gguf_quants.dequantize(blocks.numpy(), qtype)))


OPS = {
    "q8_0": (G.quantize_q8_0, G.dequantize_q8_0, ref_quantize_q8_0, ref_dequantize_q8_0, QT.Q8_0, 34),
    "q4_0": (G.quantize_q4_0, G.dequantize_q4_0, ref_quantize_q4_0, ref_dequantize_q4_0, QT.Q4_0, 18),
}


def check_quantize(fmt: str, x: torch.Tensor) -> torch.Tensor:
    quant, _, ref, _, qtype, _ = OPS[fmt]
    got = quant(x)
    assert got.dtype == torch.uint8
    want = gguf_quantize(x, qtype)
    assert got.shape == want.shape
    diff = (got != want).reshape(-1, OPS[fmt][5]).any(dim=1).nonzero()
    assert diff.numel() == 0, f"{fmt}: {diff.numel()} blocks differ from gguf, first block {diff[0].item()}"
    assert torch.equal(ref(x), want), "the test's reference disagrees with gguf"
    return got


# ----------------------------------------------------- byte identity vs gguf ----

@pytest.mark.parametrize("fmt", ["q8_0", "q4_0"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("scale", [1e-3, 1.0, 300.0])
def test_quantize_matches_gguf(isa, fmt, dtype, shape, scale):
    x = (torch.randn(shape) * scale).to(dtype)
    check_quantize(fmt, x)


@pytest.mark.parametrize("fmt", ["q8_0", "q4_0"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_quantize_per_block_scales(isa, fmt, dtype):
    # Every block gets its own magnitude, from subnormal to large: exercises
    # subnormal and overflowing fp16 scales and tiny-block arithmetic.
    lo, hi = {torch.float32: (-140, 120), torch.float16: (-24, 14), torch.bfloat16: (-140, 120)}[dtype]
    e = torch.randint(lo, hi, (512, 1)).double()
    x = (torch.randn(512, 32).double() * torch.exp2(e)).to(dtype)
    x = torch.where(torch.isfinite(x), x, torch.ones_like(x))
    check_quantize(fmt, x)


@pytest.mark.parametrize("fmt", ["q8_0", "q4_0"])
def test_quantize_random_bit_patterns(isa, fmt):
    bits = torch.randint(-2**31, 2**31 - 1, (2048, 32), dtype=torch.int64).to(torch.int32)
    x = bits.view(torch.float32)
    x = torch.where(torch.isfinite(x), x, torch.full_like(x, 0.5))
    check_quantize(fmt, x)


def _special_blocks() -> torch.Tensor:
    rows = []
    rows.append(torch.full((32,), 2.5))                      # all equal, positive
    rows.append(torch.full((32,), -0.75))                    # all equal, negative
    one = torch.zeros(32); one[7] = -3.0; rows.append(one)   # one nonzero value (negative)
    one = torch.zeros(32); one[31] = 1e-3; rows.append(one)  # one nonzero value, last slot
    neg = torch.randn(32); neg[11] = -10.0; rows.append(neg)  # negative max
    tie = torch.randn(32); tie[3] = 9.0; tie[20] = -9.0; rows.append(tie)   # |x| tie: +9 first
    tie = torch.randn(32); tie[3] = -9.0; tie[20] = 9.0; rows.append(tie)   # |x| tie: -9 first
    rows.append(torch.zeros(32))                             # +0 block
    rows.append(torch.full((32,), -0.0))                     # -0 block (sign of d matters)
    mixed = torch.zeros(32); mixed[0] = -0.0; rows.append(mixed)
    half8 = torch.arange(-16, 16).float() + 0.5; half8[0] = 127.0; rows.append(half8)   # Q8 rounding ties
    half4 = (torch.arange(32) % 16 - 8).float() + 0.5; half4[5] = -8.0; rows.append(half4)  # Q4 ties
    rows.append(torch.linspace(-1, 1, 32) * 1e-37)           # 1 / d overflows (Q8_0)
    rows.append(torch.linspace(-1, 1, 32) * 1e-38)
    rows.append(torch.linspace(-0.7, 1, 32) * 1e-36)         # subnormal d, codes wrap like numpy
    rows.append(torch.linspace(-1, 1, 32) * 1e-45)           # subnormal inputs
    rows.append(torch.linspace(-1, 1, 32) * 3e38)            # near float32 max, fp16 scale inf
    rows.append(torch.linspace(-1, 1, 32) * 8.3e6)           # fp16 scale right at overflow
    return torch.stack(rows)


@pytest.mark.parametrize("fmt", ["q8_0", "q4_0"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_quantize_special_blocks(isa, fmt, dtype):
    x = _special_blocks().to(dtype)
    x = torch.where(torch.isfinite(x), x, torch.ones_like(x))
    check_quantize(fmt, x)


def _fma_sensitive_values(fmt: str, a: np.float32) -> np.ndarray:
    """Values x (|x| <= a) of a block with max |x| = a whose code would change if
    x * id and the following addition were fused into one FMA (one rounding
    instead of two)."""
    d = a / np.float32(127) if fmt == "q8_0" else a / np.float32(-8)
    inv = np.float32(1) / d
    if fmt == "q8_0":
        targets = np.concatenate([np.arange(127) + 0.5, -(np.arange(127) + 0.5)])
    else:
        targets = np.arange(1, 17) - 8.5
    centers = (targets / np.float64(inv)).astype(np.float32)
    offsets = np.arange(-8, 9, dtype=np.int32)
    cand = (centers.view(np.int32)[:, None] + offsets[None, :]).view(np.float32).ravel()
    cand = cand[np.abs(cand) <= a]
    p = cand * inv                                       # float32 product
    exact = cand.astype(np.float64) * np.float64(inv)    # exact product
    if fmt == "q8_0":
        half = np.copysign(np.float32(0.49999997), p)
        two_roundings = np.trunc(p + half)
        one_rounding = np.trunc((exact + half.astype(np.float64)).astype(np.float32))
    else:
        two_roundings = np.trunc(p + np.float32(8.5))
        one_rounding = np.trunc((exact + 8.5).astype(np.float32))
    return np.unique(cand[two_roundings != one_rounding])


def _fma_sensitive_blocks(fmt: str) -> torch.Tensor:
    rows = []
    for a in np.random.default_rng(0).uniform(0.01, 100, 400).astype(np.float32):
        vals = _fma_sensitive_values(fmt, a)
        if vals.size:
            vals = np.resize(vals, (-(-vals.size // 31), 31))
            rows.append(np.concatenate([np.full((vals.shape[0], 1), a, np.float32), vals], axis=1))
    blocks = np.concatenate(rows)
    assert blocks.shape[0] >= 50, "too few FMA-sensitive values found"
    return torch.from_numpy(blocks)


@pytest.mark.parametrize("fmt", ["q8_0", "q4_0"])
def test_quantize_no_fused_multiply_add(isa, fmt):
    check_quantize(fmt, _fma_sensitive_blocks(fmt))


@pytest.mark.parametrize("fmt", ["q8_0", "q4_0"])
def test_quantize_large_parallel(isa, fmt):
    # More blocks than one parallel task holds (1024 blocks), odd block count.
    x = torch.randn(67, 32 * 97) * torch.rand(67, 1) * 10
    check_quantize(fmt, x)


@pytest.mark.parametrize("fmt", ["q8_0", "q4_0"])
def test_quantize_noncontiguous(isa, fmt):
    x = torch.randn(64, 10)
    got = OPS[fmt][0](x.t())
    assert torch.equal(got, OPS[fmt][0](x.t().contiguous()))
    check_quantize(fmt, x.t())


def test_portable_and_avx2_agree():
    if not lowbit._C.cpu_has_avx2():
        pytest.skip("no AVX2 on this machine")
    from lowbit._cpu import use_cpu_isa
    x = torch.randn(128, 256) * 5
    outs = {}
    for name in ("portable", "avx2"):
        with use_cpu_isa(name):
            outs[name] = (G.quantize_q8_0(x), G.quantize_q4_0(x))
    assert torch.equal(outs["portable"][0], outs["avx2"][0])
    assert torch.equal(outs["portable"][1], outs["avx2"][1])


# ----------------------------------------------------------------- dequantize ----

@pytest.mark.parametrize("fmt", ["q8_0", "q4_0"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_dequantize_matches_gguf(isa, fmt, dtype, shape):
    quant, dequant, _, ref_dq, qtype, _ = OPS[fmt]
    blocks = quant(torch.randn(shape) * 4)
    got = dequant(blocks, dtype)
    assert got.dtype == dtype and got.shape == shape
    want32 = gguf_dequantize(blocks, qtype)
    assert torch.equal(ref_dq(blocks, torch.float32), want32)
    assert torch.equal(got, want32.to(dtype))
    assert torch.equal(got, ref_dq(blocks, dtype))


@pytest.mark.parametrize("fmt", ["q8_0", "q4_0"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_dequantize_any_bytes(isa, fmt, dtype):
    # Arbitrary bytes, including inf/NaN/subnormal fp16 scales: IEEE results.
    _, dequant, _, ref_dq, qtype, nbytes = OPS[fmt]
    blocks = torch.randint(0, 256, (3, 41 * nbytes), dtype=torch.uint8)
    # 0x7FFF / 0xFFFF: NaNs whose float32 payload would carry into the sign if rounded to
    # bfloat16 like a number.
    scales = torch.tensor([0x7C00, 0xFC00, 0x7E00, 0x0001, 0x8000, 0x7BFF, 0x7FFF, 0xFFFF], dtype=torch.int32)
    scales = scales.to(torch.int16).view(torch.uint8)
    blocks.view(3, 41, nbytes)[0, :8, :2] = scales.reshape(8, 2)
    got = dequant(blocks, dtype)
    assert torch.equal(got.isnan(), ref_dq(blocks, dtype).isnan())
    torch.testing.assert_close(got, ref_dq(blocks, dtype), rtol=0, atol=0, equal_nan=True)
    torch.testing.assert_close(dequant(blocks, torch.float32), gguf_dequantize(blocks, qtype),
                               rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("fmt", ["q8_0", "q4_0"])
def test_dequantize_noncontiguous_and_large(isa, fmt):
    quant, dequant, _, ref_dq, _, nbytes = OPS[fmt]
    blocks = quant(torch.randn(40, 32 * 60))
    assert torch.equal(dequant(blocks, torch.float32), ref_dq(blocks, torch.float32))
    wide = torch.cat([blocks, blocks], dim=1)[:, ::2]  # strided view
    assert not wide.is_contiguous()
    torch.testing.assert_close(dequant(wide, torch.bfloat16), ref_dq(wide.contiguous(), torch.bfloat16),
                               rtol=0, atol=0, equal_nan=True)  # any bytes: NaN scales possible


@pytest.mark.parametrize("fmt", ["q8_0", "q4_0"])
def test_roundtrip_error(isa, fmt):
    quant, dequant, *_ = OPS[fmt]
    x = torch.randn(16, 256)
    x_hat = dequant(quant(x), torch.float32)
    sqnr = 20 * torch.log10(x.norm() / (x - x_hat).norm())
    assert sqnr > (35 if fmt == "q8_0" else 15)


# ----------------------------------------------------------- empty and errors ----

@pytest.mark.parametrize("fmt", ["q8_0", "q4_0"])
@pytest.mark.parametrize("shape", [(0,), (0, 64), (3, 0), (2, 0, 32)])
def test_empty(isa, fmt, shape):
    quant, dequant, _, _, _, nbytes = OPS[fmt]
    x = torch.empty(shape)
    q = quant(x)
    assert q.dtype == torch.uint8 and q.shape == (*shape[:-1], shape[-1] // 32 * nbytes)
    y = dequant(q, torch.float16)
    assert y.dtype == torch.float16 and y.shape == shape


@pytest.mark.parametrize("fmt", ["q8_0", "q4_0"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("dtype", DTYPES)
def test_non_finite_raises(isa, fmt, bad, dtype):
    x = torch.randn(4, 96).to(dtype)
    x[2, 40] = bad  # flattened block 2 * 3 + 1 = 7
    with pytest.raises(RuntimeError, match=r"non-finite value in block 7 \(elements 224\.\.255"):
        OPS[fmt][0](x)


@pytest.mark.parametrize("fmt", ["q8_0", "q4_0"])
def test_non_finite_reports_first_block_across_threads(isa, fmt):
    x = torch.randn(4096, 64)
    x[3000, 5] = float("nan")
    x[100, 63] = float("inf")  # block 201
    x[4000, 40] = float("-inf")
    with pytest.raises(RuntimeError, match="non-finite value in block 201 "):
        OPS[fmt][0](x)


@pytest.mark.parametrize("fmt", ["q8_0", "q4_0"])
def test_bad_k(fmt):
    with pytest.raises(RuntimeError, match=r"multiple of 32, got K = 48"):
        OPS[fmt][0](torch.randn(2, 48))
    with pytest.raises(RuntimeError, match=r"got K = 33"):
        OPS[fmt][0](torch.randn(33))


@pytest.mark.parametrize("fmt", ["q8_0", "q4_0"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.int32, torch.uint8])
def test_bad_input_dtype(fmt, dtype):
    with pytest.raises(RuntimeError, match="expected x of dtype float32, float16 or bfloat16"):
        OPS[fmt][0](torch.ones(2, 32, dtype=dtype))


@pytest.mark.parametrize("fmt", ["q8_0", "q4_0"])
def test_zero_dim(fmt):
    quant, dequant, *_ = OPS[fmt]
    with pytest.raises(RuntimeError, match="rank >= 1.*0-d"):
        quant(torch.tensor(1.0))
    with pytest.raises(RuntimeError, match="rank >= 1.*0-d"):
        dequant(torch.tensor(1, dtype=torch.uint8), torch.float32)


@pytest.mark.parametrize("fmt", ["q8_0", "q4_0"])
def test_bad_blocks(fmt):
    _, dequant, _, _, _, nbytes = OPS[fmt]
    with pytest.raises(RuntimeError, match=rf"multiple of {nbytes} bytes .*got {nbytes + 1}"):
        dequant(torch.zeros(2, nbytes + 1, dtype=torch.uint8), torch.float32)
    with pytest.raises(RuntimeError, match="expected blocks of dtype"):
        dequant(torch.zeros(2, nbytes, dtype=torch.int8), torch.float32)
    with pytest.raises(RuntimeError, match="expected dtype to be torch.float32"):
        dequant(torch.zeros(2, nbytes, dtype=torch.uint8), torch.int32)


# ------------------------------------------------------- opcheck / fake / compile ----

@pytest.mark.parametrize("fmt", ["q8_0", "q4_0"])
def test_opcheck(fmt):
    op_q = getattr(torch.ops.lowbit, f"quantize_{fmt}")
    op_d = getattr(torch.ops.lowbit, f"dequantize_{fmt}")
    for x in [torch.randn(64), torch.randn(3, 96).half(), torch.randn(2, 2, 32).bfloat16(), torch.randn(0, 32)]:
        torch.library.opcheck(op_q, (x,))
        blocks = op_q(x.float())
        for dtype in DTYPES:
            torch.library.opcheck(op_d, (blocks, dtype))


@pytest.mark.parametrize("fmt", ["q8_0", "q4_0"])
def test_fake_matches_cpu(fmt):
    from torch._subclasses.fake_tensor import FakeTensorMode
    quant, dequant, *_ = OPS[fmt]
    x = torch.randn(2, 3, 64).half()
    real_q = quant(x)
    real_d = dequant(real_q, torch.bfloat16)
    with FakeTensorMode() as mode:
        fx = mode.from_tensor(x)
        fq = quant(fx)
        fd = dequant(fq, torch.bfloat16)
        assert fq.shape == real_q.shape and fq.dtype == real_q.dtype
        assert fd.shape == real_d.shape and fd.dtype == real_d.dtype
        with pytest.raises(RuntimeError, match="got K = 48"):
            quant(mode.from_tensor(torch.randn(2, 48)))
        with pytest.raises(RuntimeError, match="multiple of"):
            dequant(mode.from_tensor(torch.zeros(3, 7, dtype=torch.uint8)), torch.float32)


def test_compile_fullgraph():
    def f(x):
        return G.dequantize_q4_0(G.quantize_q4_0(x), torch.float32) + G.dequantize_q8_0(G.quantize_q8_0(x), torch.float32)
    x = torch.randn(4, 64)
    torch.testing.assert_close(torch.compile(f, fullgraph=True, backend="eager")(x), f(x), rtol=0, atol=0)
