"""linear_int8 (W8A16 and W8A8) against plain-PyTorch references, on both CPU paths.

`ref_f32act` (float64 dequantize-then-matmul) is the spec of the exact path;
`ref_int8act` spells out the per-token int8 quantization of x and the float32
epilogue, and the kernels must match it bit for bit (the int32 sum is exact).
"""
import math

import pytest
import torch
from torch.library import opcheck

import lowbit
from lowbit._cpu import use_cpu_isa
from lowbit.ops.linear_int8 import INT8_ACT_MAX_K, linear_int8

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
MS = [1, 2, 3, 7, 16, 64, 200]
NS = [1, 3, 17, 64, 261]
KS = [1, 7, 16, 33, 100, 259]
# ||y - ref|| / ||ref|| for the exact path: float32 sums of K <= 259 products (a few ulp)
# plus the rounding of y to x.dtype (unit roundoff 2^-24, 2^-11, 2^-8).
F32ACT_TOL = {torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 5e-3}


def make(M, N, K, bias=True, lead=(), dtype=torch.float32):
    x = torch.randn(*lead, M, K).to(dtype)
    codes = torch.randint(-128, 128, (N, K), dtype=torch.int8)
    scale = torch.rand(N, 1) * 0.02 + 1e-3
    b = torch.randn(N) if bias else None
    return x, codes, scale, b


def ref_f32act(x, codes, scale, bias):
    y = x.double() @ (codes.double() * scale.double()).T
    return y + bias.double() if bias is not None else y


def ref_int8act(x, codes, scale, bias):
    """Per-token symmetric int8 x, exact integer dot products, float32 epilogue."""
    xf = x.float().reshape(-1, x.shape[-1])
    finite = torch.isfinite(xf).all(dim=1, keepdim=True)
    sx = xf.abs().amax(dim=1, keepdim=True) / 127 if xf.shape[1] else torch.zeros(xf.shape[0], 1)
    sx = torch.where(finite, sx, torch.full_like(sx, math.nan))
    ok = sx > 0
    xq = torch.where(ok, torch.round(xf / torch.where(ok, sx, torch.ones_like(sx))).clamp(-127, 127),
                     torch.zeros_like(xf))
    acc = (xq.double() @ codes.double().T).float()  # exact: |acc| < 2^24 here
    y = acc * sx * scale.T
    if bias is not None:
        y = y + bias.float()
    return y.to(x.dtype).reshape(*x.shape[:-1], codes.shape[0])


def rel_err(y, ref):
    return ((y.double() - ref).norm() / ref.norm()).item()


@pytest.mark.parametrize("M", MS)
def test_f32act_matches_float64(isa, M):
    for i, N in enumerate(NS):
        K = KS[(i + M) % len(KS)]
        for dtype in DTYPES:
            x, codes, scale, bias = make(M, N, K, bias=(i % 2 == 0), dtype=dtype)
            y = linear_int8(x, codes, scale, bias)
            assert y.dtype == dtype and y.shape == (M, N)
            assert rel_err(y, ref_f32act(x, codes, scale, bias)) < F32ACT_TOL[dtype], (M, N, K, dtype)


@pytest.mark.parametrize("M", MS)
def test_int8act_bit_exact(isa, M):
    for i, N in enumerate(NS):
        K = KS[(i + M + 1) % len(KS)]
        for dtype in DTYPES:
            x, codes, scale, bias = make(M, N, K, bias=(i % 2 == 1), dtype=dtype)
            y = linear_int8(x, codes, scale, bias, int8_activations=True)
            torch.testing.assert_close(y, ref_int8act(x, codes, scale, bias), rtol=0, atol=0)


def test_int8act_error_class():
    # Per-token int8 rounding: |x - sx * xq| <= sx / 2 = max|x| / 254, i.e. noise of rms
    # max|x| / (254 * sqrt(3)); Gaussian rows of K = 4096 have max|x| ~ 4 sigma, so about
    # 0.9% of sigma, and the output error relative to the exact path is about the same.
    x, codes, scale, bias = make(8, 256, 4096, bias=False)
    ref = ref_f32act(x, codes, scale, None)
    e8 = rel_err(linear_int8(x, codes, scale, None, True), ref)
    assert 1e-3 < e8 < 1.5e-2


@pytest.mark.skipif(not lowbit._C.cpu_has_avx2(), reason="needs AVX2")
@pytest.mark.parametrize("int8_act", [False, True])
def test_avx2_vs_portable(int8_act):
    # Large enough for the GEMV (M = 1) and tiled (M > 1) kernels with K tails.
    for M, N, K in [(1, 131, 4096 + 23), (5, 70, 1000), (33, 40, 64)]:
        x, codes, scale, bias = make(M, N, K)
        with use_cpu_isa("portable"):
            yp = linear_int8(x, codes, scale, bias, int8_act)
        with use_cpu_isa("avx2"):
            ya = linear_int8(x, codes, scale, bias, int8_act)
            ya2 = linear_int8(x, codes, scale, bias, int8_act)
        assert torch.equal(ya, ya2)  # deterministic run to run
        if int8_act:
            assert torch.equal(ya, yp)
        else:
            ref = ref_f32act(x, codes, scale, bias)
            assert rel_err(ya, ref) < 1e-5 and rel_err(yp, ref) < 1e-5


@pytest.mark.skipif(not lowbit._C.cpu_has_avx512(), reason="needs AVX-512 VNNI")
def test_avx512_vs_portable_bit_exact():
    # The VNNI kernels sum (w + 128) * xq and subtract 128 * sum(xq): every M = 1 / tile
    # edge (M % 4, N % 4) and K tail of the 64-byte steps, against the portable kernel.
    for M, N, K in [(1, 131, 4096 + 23), (1, 3, 63), (2, 5, 64), (3, 6, 65), (5, 70, 1000),
                    (4, 4, 1), (9, 11, 127), (33, 40, 64), (300, 67, 130)]:
        x, codes, scale, bias = make(M, N, K)
        for b in (None, bias):
            with use_cpu_isa("portable"):
                yp = linear_int8(x, codes, scale, b, True)
            with use_cpu_isa("avx512"):
                ya = linear_int8(x, codes, scale, b, True)
            assert torch.equal(ya, yp), (M, N, K)


@pytest.mark.skipif(not lowbit._C.cpu_has_avx512(), reason="needs AVX-512 VNNI")
def test_avx512_exact_where_the_offset_sum_wraps():
    # codes 127 and xq 127 over the largest K: sum (127 + 128) * 127 * K exceeds 2^31 and
    # wraps in the int32 lanes; the true sum 127 * 127 * K < 2^31 must still come out.
    K = INT8_ACT_MAX_K
    x = torch.ones(2, K)
    codes = torch.full((5, K), 127, dtype=torch.int8)
    scale = torch.ones(5, 1)
    with use_cpu_isa("avx512"):
        y = linear_int8(x, codes, scale, None, True)
    with use_cpu_isa("portable"):
        yp = linear_int8(x, codes, scale, None, True)
    assert torch.equal(y, yp)
    # xq = 127 and sx = 1/127: y = float32(127 * 127 * K) * float32(1/127)
    expect = torch.tensor(127 * 127 * K, dtype=torch.float32) * (torch.tensor(1.0) / 127)
    assert torch.equal(y, expect.expand(2, 5))


@pytest.mark.parametrize("int8_act", [False, True])
def test_3d_noncontiguous_and_bias_dtype(isa, int8_act):
    x, codes, scale, _ = make(6, 19, 40, lead=(3,))
    xt = x.transpose(0, 1)  # [6, 3, 40], non-contiguous: copied by the op
    bias = torch.randn(19).to(torch.bfloat16)
    y = linear_int8(xt, codes, scale, bias, int8_act)
    assert y.shape == (6, 3, 19)
    if int8_act:
        torch.testing.assert_close(y, ref_int8act(xt.contiguous(), codes, scale, bias), rtol=0, atol=0)
    else:
        assert rel_err(y, ref_f32act(xt, codes, scale, bias)) < 1e-5


@pytest.mark.parametrize("int8_act", [False, True])
def test_empty(isa, int8_act):
    codes = torch.randint(-128, 128, (5, 8), dtype=torch.int8)
    scale = torch.rand(5, 1)
    assert linear_int8(torch.randn(0, 8), codes, scale, None, int8_act).shape == (0, 5)
    assert linear_int8(torch.randn(2, 0, 8), codes, scale, None, int8_act).shape == (2, 0, 5)
    y = linear_int8(torch.randn(3, 8), codes[:0], scale[:0], None, int8_act)
    assert y.shape == (3, 0)
    # K = 0: the sum is empty, y = bias
    bias = torch.randn(5)
    y = linear_int8(torch.randn(3, 0), codes[:, :0], scale, bias, int8_act)
    torch.testing.assert_close(y, bias.expand(3, 5), rtol=0, atol=0)


def test_zero_row_and_non_finite(isa):
    x, codes, scale, bias = make(4, 9, 50)
    x[1] = 0
    x[2, 7] = math.nan
    x[3, 0] = math.inf
    y8 = linear_int8(x, codes, scale, bias, True)
    torch.testing.assert_close(y8[1], bias, rtol=0, atol=0)  # zero row: sx = 0
    assert y8[2].isnan().all() and y8[3].isnan().all()      # non-finite row: sx = NaN
    torch.testing.assert_close(y8[0], ref_int8act(x[:1], codes, scale, bias)[0], rtol=0, atol=0)
    y = linear_int8(x, codes, scale, bias, False)
    assert y[2].isnan().all() and not y[3].isfinite().any() and y[0].isfinite().all()


def test_kernel_trace(isa):
    x, codes, scale, _ = make(1, 8, 32)
    linear_int8(x, codes, scale)
    k1 = lowbit._C.last_kernels()["linear_int8"]
    linear_int8(torch.cat([x, x]), codes, scale, None, True)
    k2 = lowbit._C.last_kernels()["linear_int8"]
    if isa == "avx512":  # only the int8-activation kernels have an AVX-512 version
        assert (k1, k2) == ("avx2_gemv_f32act", "avx512_gemm_int8act")
    elif isa == "avx2":
        assert (k1, k2) == ("avx2_gemv_f32act", "avx2_gemm_int8act")
    else:
        assert (k1, k2) == ("portable_f32act", "portable_int8act")


def test_opcheck():
    for M, N, K, lead in [(1, 5, 16, ()), (3, 7, 33, (2,))]:
        x, codes, scale, bias = make(M, N, K, lead=lead)
        for b in (None, bias):
            for int8_act in (False, True):
                opcheck(torch.ops.lowbit.linear_int8.default, (x, codes, scale, b, int8_act))
    x, codes, scale, bias = make(2, 4, 8, dtype=torch.bfloat16)
    opcheck(torch.ops.lowbit.linear_int8.default, (x, codes, scale, bias, True))


def _bad(match, x=None, codes=None, scale=None, bias=None, int8_act=False):
    x0, c0, s0, _ = make(2, 4, 8)
    with pytest.raises(RuntimeError, match=match):
        linear_int8(x0 if x is None else x, c0 if codes is None else codes, s0 if scale is None else scale,
                    bias, int8_act)


def test_bad_codes():
    _bad("expected codes of dtype Char", codes=torch.zeros(4, 8, dtype=torch.uint8))
    _bad(r"expected codes of rank 2 \(\[N, K\]\)", codes=torch.zeros(4, 8, 1, dtype=torch.int8))


def test_bad_scale():
    _bad("expected scale of dtype Float", scale=torch.rand(4, 1, dtype=torch.float64))
    _bad(r"expected scale of shape \[4, 1\]", scale=torch.rand(4))
    _bad(r"expected scale of shape \[4, 1\]", scale=torch.rand(1, 4))
    _bad(r"expected scale of shape \[4, 1\]", scale=torch.rand(4, 8))


def test_bad_x():
    _bad("expected x of dtype float32, float16 or bfloat16", x=torch.zeros(2, 8, dtype=torch.int32))
    _bad("expected x of rank >= 1", x=torch.tensor(1.0))
    _bad(r"expected x with last axis K = 8", x=torch.randn(2, 9))


def test_bad_bias():
    _bad(r"expected bias of shape \[4\]", bias=torch.randn(5))
    _bad(r"expected bias of shape \[4\]", bias=torch.randn(1, 4))
    _bad("expected bias of dtype float32, float16 or bfloat16", bias=torch.zeros(4, dtype=torch.int64))


def test_bad_k_for_int8_activations():
    K = INT8_ACT_MAX_K + 1
    x = torch.randn(1, K)
    codes = torch.zeros(1, K, dtype=torch.int8)
    with pytest.raises(RuntimeError, match=f"expected K <= {INT8_ACT_MAX_K} with int8_activations=True"):
        linear_int8(x, codes, torch.ones(1, 1), None, True)
    assert linear_int8(x, codes, torch.ones(1, 1)).shape == (1, 1)  # the float path has no such limit


def test_fake_shapes():
    from torch._subclasses.fake_tensor import FakeTensorMode
    with FakeTensorMode():
        x = torch.empty(2, 3, 16, dtype=torch.bfloat16)
        y = torch.ops.lowbit.linear_int8(x, torch.empty(5, 16, dtype=torch.int8), torch.empty(5, 1), None, True)
    assert y.shape == (2, 3, 5) and y.dtype == torch.bfloat16
