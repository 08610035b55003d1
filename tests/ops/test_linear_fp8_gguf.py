"""linear_fp8 / linear_q8_0 / linear_q4_0 against a float64 plain-torch reference.

The reference decodes the weights with plain torch (float8 casts; GGUF block bytes
taken apart by hand, docs/formats.md) and multiplies in float64. Thresholds:
- exact float-activation paths: ||y - ref|| / ||ref|| < 1e-5 for float32 x. The
  decoded weights are exact in float32, so the only error is float32 rounding of
  K-term sums (~sqrt(K) * 2^-24 relative, ~1e-6 for K = 256); float16 / bfloat16
  x add one rounding of the output (2^-11 / 2^-8 relative).
- int8-activation paths: (a) against an emulation of the same arithmetic (x
  quantized per block of 32 to round_half_even(x * (1 / (amax / 127))) in float32,
  integer dots, float64 sums) within 1e-5, which pins the scheme down exactly;
  (b) against the exact reference within 2e-2: per element the rounding error is
  uniform with step amax / 127, so ||x - x_hat|| / ||x|| ~ (amax / rms) / (127 *
  sqrt(12)) ~ 0.5 % for Gaussian blocks (amax / rms <~ 2.5), with margin for the
  spread of short rows.
"""
import pytest
import torch

import lowbit
from lowbit.ops.linear_fp8_gguf import linear_fp8, linear_q4_0, linear_q8_0
from lowbit.ops import gguf as G

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
FP8 = [torch.float8_e4m3fn, torch.float8_e5m2]
MS = [1, 2, 3, 7, 16, 64, 200]
NS = [1, 3, 17, 64, 261]
OUT_TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


# ---------------------------------------------------------------- reference ----

def deq_q8_0(blocks: torch.Tensor) -> torch.Tensor:
    b = blocks.reshape(blocks.shape[0], -1, 34)
    d = b[..., :2].contiguous().view(torch.float16).double()
    q = b[..., 2:].contiguous().view(torch.int8).double()
    return (d * q).reshape(blocks.shape[0], -1)


def deq_q4_0(blocks: torch.Tensor) -> torch.Tensor:
    b = blocks.reshape(blocks.shape[0], -1, 18)
    d = b[..., :2].contiguous().view(torch.float16).double()
    nib = b[..., 2:].to(torch.int64)
    q = torch.cat([nib & 0xF, nib >> 4], dim=-1).double() - 8
    return (d * q).reshape(blocks.shape[0], -1)


def ref_linear(x, w64, bias):
    y = x.double() @ w64.T
    return y + bias.double() if bias is not None else y


def quantize_act_ref(x: torch.Tensor):
    """x [M, K] float32 -> (codes [M, K/32, 32] float64, dx [M, K/32, 1] float64)."""
    b = x.float().reshape(x.shape[0], -1, 32)
    amax = b.abs().amax(-1, keepdim=True)
    d = amax / 127
    inv = torch.where(d != 0, 1 / d, torch.zeros_like(d))
    q = torch.round(b * inv)  # half to even, product rounded to float32 first
    return q.double(), d.double()


def ref_linear_int8(x2d, blocks, fmt, bias):
    """Emulates the int8-activation path: per block d_w * dx * integer dot."""
    w = (deq_q8_0 if fmt == "q8_0" else deq_q4_0)(blocks)  # d * code, exact
    qx, dx = quantize_act_ref(x2d)
    xh = (qx * dx).reshape(x2d.shape[0], -1)
    return ref_linear(xh, w, bias)


def rel(y, ref):
    n = ref.norm()
    return ((y.double() - ref).norm() / (n if n > 0 else 1)).item()


def make_fp8(N, K, dtype, per_channel=True):
    w = torch.randn(N, K)
    fmax = torch.finfo(dtype).max
    scale = (w.abs().amax(1, keepdim=True) / fmax) if per_channel else (w.abs().amax().reshape(1, 1) / fmax)
    return (w / scale).to(dtype), scale.float()


OPS = {"q8_0": (G.quantize_q8_0, deq_q8_0, linear_q8_0), "q4_0": (G.quantize_q4_0, deq_q4_0, linear_q4_0)}


# ------------------------------------------------------------------ float8 ----

@pytest.mark.parametrize("fp8", FP8)
@pytest.mark.parametrize("M", MS)
def test_fp8_shapes(isa, fp8, M):
    for N, K in [(1, 16), (3, 40), (17, 64), (64, 37), (261, 96), (150, 603)]:
        q, s = make_fp8(N, K, fp8, per_channel=N != 3)
        x, bias = torch.randn(M, K), (torch.randn(N) if N % 2 else None)
        y = linear_fp8(x, q, s, bias)
        assert y.shape == (M, N) and y.dtype == torch.float32
        assert rel(y, ref_linear(x, q.double() * s.double(), bias)) < 1e-5, (N, K)


@pytest.mark.parametrize("fp8", FP8)
@pytest.mark.parametrize("dtype", DTYPES)
def test_fp8_dtypes_3d(isa, fp8, dtype):
    q, s = make_fp8(33, 160, fp8)
    x = torch.randn(2, 5, 160).to(dtype)
    bias = torch.randn(33, dtype=torch.bfloat16)
    y = linear_fp8(x, q, s, bias)
    assert y.shape == (2, 5, 33) and y.dtype == dtype
    assert rel(y, ref_linear(x, q.double() * s.double(), bias)) < OUT_TOL[dtype]


@pytest.mark.parametrize("fp8", FP8)
def test_fp8_all_codes_no_nan(isa, fp8):
    # every finite code decodes exactly (subnormals included); 254 / 248 codes
    # cover the SIMD body and the scalar tail
    codes = torch.arange(256, dtype=torch.uint8)
    vals = codes.view(fp8).float()
    keep = vals.isfinite()
    c = codes[keep]
    q = c.view(fp8).reshape(1, -1)
    K = q.shape[1]
    x = torch.eye(K)
    y = linear_fp8(x, q, torch.ones(1, 1))
    assert torch.equal(y[:, 0], vals[keep])


def test_fp8_nan_inf(isa):
    q, s = make_fp8(5, 64, torch.float8_e4m3fn)
    qb = q.view(torch.uint8).clone()
    qb[2, 10] = 0x7F  # e4m3fn NaN
    y = linear_fp8(torch.randn(3, 64), qb.view(torch.float8_e4m3fn), s)
    assert torch.isnan(y[:, 2]).all() and torch.isfinite(y[:, [0, 1, 3, 4]]).all()
    q, s = make_fp8(5, 70, torch.float8_e4m3fn)
    qb = q.view(torch.uint8).clone()
    qb[4, 66] = 0xFF  # in the scalar tail
    qb[0, 5] = 0xFF
    for M in (1, 40):  # tile and packed-panel paths
        y = linear_fp8(torch.randn(M, 70), qb.view(torch.float8_e4m3fn), s)
        assert torch.isnan(y[:, [0, 4]]).all() and torch.isfinite(y[:, 1:4]).all()
    q, s = make_fp8(5, 64, torch.float8_e5m2)
    qb = q.view(torch.uint8).clone()
    qb[1, 3] = 0x7C  # e5m2 +inf
    x = torch.randn(2, 64)
    x[:, 3] = 1.0
    y = linear_fp8(x, qb.view(torch.float8_e5m2), s)
    assert torch.isinf(y[:, 1]).all()
    x = torch.randn(2, 64)
    x[1, 0] = float("nan")
    y = linear_fp8(x, q, s)
    assert torch.isnan(y[1]).all() and torch.isfinite(y[0]).all()


def test_fp8_deterministic():
    q, s = make_fp8(300, 512, torch.float8_e4m3fn)
    x = torch.randn(5, 512)
    y0 = linear_fp8(x, q, s)
    for _ in range(3):
        assert torch.equal(linear_fp8(x, q, s), y0)


# -------------------------------------------------------------------- GGUF ----

@pytest.mark.parametrize("fmt", ["q8_0", "q4_0"])
@pytest.mark.parametrize("M", MS)
def test_gguf_shapes(isa, fmt, M):
    quant, deq, op = OPS[fmt]
    for N, K in [(1, 32), (3, 64), (17, 96), (64, 32), (261, 160), (140, 608)]:
        blocks = quant(torch.randn(N, K))
        x, bias = torch.randn(M, K), (torch.randn(N) if N % 2 else None)
        ref = ref_linear(x, deq(blocks), bias)
        y = op(x, blocks, bias, int8_activations=False)
        assert y.shape == (M, N) and y.dtype == torch.float32
        assert rel(y, ref) < 1e-5, (N, K)
        y8 = op(x, blocks, bias, int8_activations=True)
        if lowbit._C.last_kernels()[f"linear_{fmt}"] == "avx2_packed_gemm_f32act":
            # large M on AVX2: the packed float kernel is faster, so it runs (exact)
            assert M >= 32 and rel(y8, ref) < 1e-5, (N, K)
        else:
            assert rel(y8, ref_linear_int8(x, blocks, fmt, bias)) < 1e-5, (N, K)
            assert rel(y8, ref) < 2e-2, (N, K)


@pytest.mark.parametrize("fmt", ["q8_0", "q4_0"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("int8_act", [False, True])
def test_gguf_dtypes_3d(isa, fmt, dtype, int8_act):
    quant, deq, op = OPS[fmt]
    blocks = quant(torch.randn(37, 128))
    x = torch.randn(2, 3, 128).to(dtype)
    bias = torch.randn(37, dtype=torch.float16)
    y = op(x, blocks, bias, int8_activations=int8_act)
    assert y.shape == (2, 3, 37) and y.dtype == dtype
    x2 = x.float().reshape(-1, 128)
    if int8_act:
        ref = ref_linear_int8(x2, blocks, fmt, bias)
    else:
        ref = ref_linear(x2, deq(blocks), bias)
    assert rel(y.reshape(-1, 37), ref) < OUT_TOL[dtype]


@pytest.mark.parametrize("fmt", ["q8_0", "q4_0"])
def test_gguf_kernel_trace(isa, fmt):
    quant, _, op = OPS[fmt]
    blocks = quant(torch.randn(8, 64))
    op(torch.randn(1, 64), blocks, int8_activations=True)
    k8 = lowbit._C.last_kernels()[f"linear_{fmt}"]
    op(torch.randn(9, 64), blocks, int8_activations=False)
    kf = lowbit._C.last_kernels()[f"linear_{fmt}"]
    op(torch.randn(40, 64), blocks, int8_activations=True)
    kbig = lowbit._C.last_kernels()[f"linear_{fmt}"]
    if isa in ("avx2", "avx512"):  # no AVX-512 version of these kernels
        assert (k8, kf, kbig) == ("avx2_gemv_int8act", "avx2_gemm_f32act", "avx2_packed_gemm_f32act")
    else:
        assert (k8, kf, kbig) == ("portable_int8act", "portable", "portable_int8act")


def test_q4_0_int8_error_is_small_against_weight_error(isa):
    # the int8-activation path adds < 10 % to the error that Q4_0 weights cause
    w = torch.randn(256, 512) * 0.05
    x = torch.randn(16, 512)
    blocks = G.quantize_q4_0(w)
    ref = x.double() @ w.double().T
    e_exact = (linear_q4_0(x, blocks, int8_activations=False).double() - ref).norm()
    e_int8 = (linear_q4_0(x, blocks, int8_activations=True).double() - ref).norm()
    assert (e_int8 - e_exact) / e_exact < 0.10


def test_gguf_nonfinite_x(isa):
    blocks = G.quantize_q4_0(torch.randn(4, 64))
    x = torch.randn(2, 64)
    x[1, 40] = float("inf")
    assert torch.isnan(linear_q4_0(x, blocks, int8_activations=True)[1]).all()
    assert torch.isfinite(linear_q4_0(x, blocks, int8_activations=True)[0]).all()
    x[1, 40] = float("nan")
    for i8 in (False, True):
        y = linear_q4_0(x, blocks, int8_activations=i8)
        assert torch.isnan(y[1]).all() and torch.isfinite(y[0]).all()


def test_gguf_deterministic():
    blocks = G.quantize_q4_0(torch.randn(300, 256))
    x = torch.randn(5, 256)
    for i8 in (False, True):
        y0 = linear_q4_0(x, blocks, int8_activations=i8)
        for _ in range(3):
            assert torch.equal(linear_q4_0(x, blocks, int8_activations=i8), y0)


# ------------------------------------------------------------------- empty ----

def test_empty(isa):
    q, s = make_fp8(5, 64, torch.float8_e5m2)
    assert linear_fp8(torch.randn(0, 64), q, s).shape == (0, 5)
    assert linear_fp8(torch.randn(2, 0, 64), q, s).shape == (2, 0, 5)
    blocks = G.quantize_q8_0(torch.randn(5, 64))
    assert linear_q8_0(torch.randn(0, 64), blocks).shape == (0, 5)
    assert linear_q4_0(torch.randn(3, 64), torch.empty(0, 36, dtype=torch.uint8)).shape == (3, 0)
    # K = 0: the output is the bias (or zeros)
    bias = torch.randn(4)
    torch.testing.assert_close(linear_q4_0(torch.randn(3, 0), torch.empty(4, 0, dtype=torch.uint8), bias),
                               bias.expand(3, 4))
    q0 = torch.empty(4, 0, dtype=torch.float8_e4m3fn)
    assert torch.equal(linear_fp8(torch.randn(2, 0), q0, torch.ones(4, 1)), torch.zeros(2, 4))


def test_non_contiguous(isa):
    q, s = make_fp8(16, 64, torch.float8_e4m3fn)
    x = torch.randn(64, 6).t()
    torch.testing.assert_close(linear_fp8(x, q, s), linear_fp8(x.contiguous(), q, s))
    blocks = G.quantize_q4_0(torch.randn(16, 64))
    bt = torch.cat([blocks, blocks], 1)[:, :36]
    torch.testing.assert_close(linear_q4_0(x, bt), linear_q4_0(x.contiguous(), blocks))


# --------------------------------------------------------------- bad input ----

def test_bad_fp8():
    q, s = make_fp8(5, 64, torch.float8_e4m3fn)
    x = torch.randn(2, 64)
    with pytest.raises(RuntimeError, match="expected q of dtype torch.float8_e4m3fn or torch.float8_e5m2"):
        linear_fp8(x, q.view(torch.uint8), s)
    with pytest.raises(RuntimeError, match=r"expected q of rank 2"):
        linear_fp8(x, q.reshape(5, 8, 8), s)
    with pytest.raises(RuntimeError, match=r"expected scale of shape \[5, 1\]"):
        linear_fp8(x, q, torch.ones(5))
    with pytest.raises(RuntimeError, match=r"expected scale of shape \[5, 1\]"):
        linear_fp8(x, q, torch.ones(4, 1))
    with pytest.raises(RuntimeError, match="expected scale of dtype Float"):
        linear_fp8(x, q, s.double())
    with pytest.raises(RuntimeError, match="expected x with last axis K = 64"):
        linear_fp8(torch.randn(2, 63), q, s)
    with pytest.raises(RuntimeError, match="expected x of dtype float32, float16 or bfloat16"):
        linear_fp8(x.double(), q, s)
    with pytest.raises(RuntimeError, match=r"expected bias of shape \[5\]"):
        linear_fp8(x, q, s, torch.randn(6))
    with pytest.raises(RuntimeError, match="expected bias of dtype float32, float16 or bfloat16"):
        linear_fp8(x, q, s, torch.arange(5))
    with pytest.raises(RuntimeError, match="expected x of rank >= 1"):
        linear_fp8(torch.tensor(1.0), q, s)


@pytest.mark.parametrize("fmt,nbytes", [("q8_0", 34), ("q4_0", 18)])
def test_bad_gguf(fmt, nbytes):
    quant, _, op = OPS[fmt]
    blocks = quant(torch.randn(5, 64))
    x = torch.randn(2, 64)
    with pytest.raises(RuntimeError, match="expected blocks of dtype Byte"):
        op(x, blocks.view(torch.int8))
    with pytest.raises(RuntimeError, match="expected blocks of rank 2"):
        op(x, blocks.reshape(-1))
    with pytest.raises(RuntimeError, match=f"expected the last axis of blocks to be a multiple of {nbytes} bytes"):
        op(x, blocks[:, :-1])
    with pytest.raises(RuntimeError, match="expected x with last axis K = 64"):
        op(torch.randn(2, 96), blocks)
    with pytest.raises(RuntimeError, match="expected x of dtype float32, float16 or bfloat16"):
        op(x.to(torch.int32), blocks)
    with pytest.raises(RuntimeError, match=r"expected bias of shape \[5\]"):
        op(x, blocks, torch.randn(5, 1))


# ---------------------------------------------------------- opcheck / fake ----

# torch's schema-check mode compares inputs before/after with ops that float8
# tensors lack ("mul_cpu_reduced_float" not implemented), so test_schema is left
# out for linear_fp8; the other checks run.
FP8_OPCHECK = ("test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")


def test_opcheck():
    for fp8 in FP8:
        q, s = make_fp8(7, 64, fp8)
        for x, b in [(torch.randn(3, 64), None), (torch.randn(2, 2, 64).half(), torch.randn(7)),
                     (torch.randn(0, 64).bfloat16(), None)]:
            torch.library.opcheck(torch.ops.lowbit.linear_fp8, (x, q, s, b), test_utils=FP8_OPCHECK)
        torch.library.opcheck(torch.ops.lowbit.linear_fp8, (torch.randn(1, 64), q, s[:1]), test_utils=FP8_OPCHECK)
    for fmt in ("q8_0", "q4_0"):
        quant, _, _ = OPS[fmt]
        blocks = quant(torch.randn(7, 64))
        for x, b, i8 in [(torch.randn(3, 64), None, True), (torch.randn(2, 2, 64).bfloat16(), torch.randn(7), False),
                         (torch.randn(0, 64), None, True)]:
            torch.library.opcheck(getattr(torch.ops.lowbit, f"linear_{fmt}"), (x, blocks, b, i8))


def test_fake_matches_cpu():
    from torch._subclasses.fake_tensor import FakeTensorMode
    q, s = make_fp8(7, 64, torch.float8_e5m2)
    blocks = G.quantize_q4_0(torch.randn(7, 64))
    x = torch.randn(2, 3, 64).half()
    real = [linear_fp8(x, q, s), linear_q4_0(x, blocks)]
    bad_blocks, bad_scale = blocks[:, :-1].contiguous(), torch.ones(7)
    with FakeTensorMode() as mode:
        fx, fq, fs, fb = (mode.from_tensor(t) for t in (x, q, s, blocks))
        fake = [linear_fp8(fx, fq, fs), linear_q4_0(fx, fb)]
        for f, r in zip(fake, real):
            assert f.shape == r.shape and f.dtype == r.dtype
        with pytest.raises(RuntimeError, match=r"expected scale of shape \[7, 1\]"):
            linear_fp8(fx, fq, mode.from_tensor(bad_scale))
        with pytest.raises(RuntimeError, match="expected the last axis of blocks to be a multiple of 18"):
            linear_q4_0(fx, mode.from_tensor(bad_blocks))


def test_compile():
    q, s = make_fp8(7, 64, torch.float8_e4m3fn)
    blocks = G.quantize_q8_0(torch.randn(7, 64))
    x = torch.randn(3, 64)

    def f(x):
        return linear_fp8(x, q, s) + linear_q8_0(x, blocks, int8_activations=False)

    torch.testing.assert_close(torch.compile(f, fullgraph=True)(x), f(x))
