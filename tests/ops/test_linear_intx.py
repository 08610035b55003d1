"""linear_intx (W4A16 / W2A16) against a float64 dequantize-then-matmul reference.

Thresholds:
- exact path, float32 x: ||y - ref|| / ||ref|| < 1e-5. The kernels accumulate in
  float32 (eps 6e-8) along K <= 512 here with per-element weights rounded once
  (fma(u, s, -(off + zp) s)); random-walk error is ~1e-7, worst seen 3e-7. The
  AVX512_BF16 kernel (x as three bfloat16 terms, exact; the offset taken out per group,
  which multiplies float32 rounding by ~5): worst seen 1.3e-6.
- float16 / bfloat16 x: the reference uses the same rounded x, and the output is
  rounded to x's dtype: 2e-3 (fp16, eps 4.9e-4) and 1.6e-2 (bf16, eps 3.9e-3).
- int8 path: against a reference that quantizes x exactly as the kernel does (per
  block of 32, scale amax / 127, round-half-even), 1e-5 as above; against the exact
  reference < 2e-2 (8-bit x error is ~0.5% relative on Gaussian data).
"""
import pytest
import torch

import lowbit
from conftest import ran_on
from lowbit.ops.linear_intx import linear_intx
from lowbit.ops.packing import pack_bits

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


# ---------------------------------------------------------------- reference ----

def make_weight(n, k, bits, group, asym):
    lo, hi = -2 ** (bits - 1), 2 ** (bits - 1) - 1
    codes = torch.randint(lo, hi + 1, (n, k), dtype=torch.int8)
    scale = torch.rand(n, k // group) * 0.1 + 0.01
    zp = (torch.rand(n, k // group) * 3 - 1.5) if asym else None  # non-integral, as HQQ
    return codes, scale, zp


def dequant_ref(codes, scale, zp):
    g = codes.shape[1] // scale.shape[1]
    w = codes.double()
    if zp is not None:
        w = w - zp.double().repeat_interleave(g, 1)
    return w * scale.double().repeat_interleave(g, 1)


def quantize_x_ref(x):
    """int8 activations as the kernel does them: per block of 32, float32 math."""
    xb = x.float().reshape(-1, 32)
    amax = xb.abs().amax(1, keepdim=True)
    # tensor / tensor: a true IEEE division (scalar / tensor is reciprocal-then-multiply)
    inv = torch.where(amax > 0, torch.full_like(amax, 127) / amax, torch.zeros_like(amax))
    q = torch.round(xb * inv).clamp(-127, 127)
    return (q.double() * (amax / 127).double()).reshape(x.shape)


def linear_ref(x, codes, scale, zp, bias, int8=False):
    xx = quantize_x_ref(x) if int8 else x.double()
    y = xx @ dequant_ref(codes, scale, zp).T
    return y + bias.double() if bias is not None else y


def rel_err(y, ref):
    return ((y.double() - ref).norm() / ref.norm().clamp_min(1e-30)).item()


def kernel():
    return lowbit._C.last_kernels()["linear_intx"]


# -------------------------------------------------------------- correctness ----

@pytest.mark.parametrize("bits", [4, 2])
@pytest.mark.parametrize("m", [1, 2, 3, 7, 16, 64, 200])
@pytest.mark.parametrize("asym", [False, True])
def test_shapes_f32(isa, bits, m, asym):
    for n, k, g in [(1, 128, 128), (3, 64, 32), (17, 256, 64), (64, 512, 256), (261, 256, 128)]:
        codes, scale, zp = make_weight(n, k, bits, g, asym)
        x = torch.randn(m, k)
        bias = torch.randn(n) if n % 2 else None
        y = linear_intx(x, pack_bits(codes, bits), scale, zp, bits, bias)
        assert y.shape == (m, n) and y.dtype == torch.float32
        assert rel_err(y, linear_ref(x, codes, scale, zp, bias)) < 1e-5, (n, k, g)
        assert ran_on(kernel(), isa)


@pytest.mark.parametrize("bits", [4, 2])
@pytest.mark.parametrize("m", [1, 3, 16, 64])
@pytest.mark.parametrize("asym", [False, True])
@pytest.mark.parametrize("g", [32, 64, 128, 256])
def test_int8_activations(isa, bits, m, asym, g):
    n, k = 37, 512
    codes, scale, zp = make_weight(n, k, bits, g, asym)
    x = torch.randn(m, k)
    bias = torch.randn(n)
    y = linear_intx(x, pack_bits(codes, bits), scale, zp, bits, bias, True)
    assert "int8act" in kernel() and ran_on(kernel(), isa)
    assert rel_err(y, linear_ref(x, codes, scale, zp, bias, int8=True)) < 1e-5
    assert rel_err(y, linear_ref(x, codes, scale, zp, bias)) < 2e-2


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("int8", [False, True])
def test_dtypes_3d(isa, dtype, int8):
    bits, n, k, g = 4, 45, 256, 64
    codes, scale, zp = make_weight(n, k, bits, g, True)
    x = torch.randn(2, 5, k).to(dtype)
    bias = torch.randn(n).to(torch.bfloat16)
    y = linear_intx(x, pack_bits(codes, bits), scale, zp, bits, bias, int8)
    assert y.shape == (2, 5, n) and y.dtype == dtype
    ref = linear_ref(x.reshape(-1, k), codes, scale, zp, bias.float(), int8).reshape(2, 5, n)
    assert rel_err(y, ref) < TOL[dtype]


@pytest.mark.parametrize("bits", [4, 2])
def test_unusual_groups(isa, bits):
    # group sizes that are multiples of 8 but not of the fast kernels' units
    for k, g in [(48, 8), (48, 16), (96, 24), (160, 40), (192, 96), (96, 32)]:
        codes, scale, zp = make_weight(5, k, bits, g, True)
        x = torch.randn(3, k)
        for int8 in (False, True):
            y = linear_intx(x, pack_bits(codes, bits), scale, zp, bits, None, int8)
            use_int8 = int8 and g % 32 == 0
            assert ("int8act" in kernel()) == use_int8
            assert rel_err(y, linear_ref(x, codes, scale, zp, None, use_int8)) < 1e-5, (k, g, int8)


@pytest.mark.parametrize("bits", [4, 2])
@pytest.mark.parametrize("int8", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
def test_int8_zero_points(isa, bits, int8, dtype):
    # Integer zero points given as int8 are the same values as float32 ones: every kernel
    # (small-M register kernels, panels at M >= 32, int8 activations, all x dtypes) gives
    # the identical output, and both match the reference.
    for n, k, g, m in [(19, 256, 32, 1), (37, 512, 128, 3), (70, 1024, 256, 7), (33, 256, 64, 64)]:
        codes, scale, _ = make_weight(n, k, bits, g, False)
        zp8 = torch.randint(-2 ** (bits - 1), 2 ** (bits - 1), (n, k // g), dtype=torch.int8)
        x = torch.randn(m, k).to(dtype)
        bias = torch.randn(n)
        p = pack_bits(codes, bits)
        y8 = linear_intx(x, p, scale, zp8, bits, bias, int8)
        name8 = kernel()
        yf = linear_intx(x, p, scale, zp8.float(), bits, bias, int8)
        assert kernel() == name8 and ran_on(name8, isa)
        assert torch.equal(y8, yf), (n, k, g, m, name8)
        use_int8 = int8 and g % 32 == 0
        tol = 1e-5 if dtype == torch.float32 else TOL[dtype]
        assert rel_err(y8, linear_ref(x, codes, scale, zp8.float(), bias, use_int8)) < tol, (n, k, g, m, name8)


def test_deterministic_and_thread_independent(isa):
    codes, scale, zp = make_weight(300, 512, 4, 128, True)
    p = pack_bits(codes, 4)
    x = torch.randn(5, 512)
    y0 = linear_intx(x, p, scale, zp, 4)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        y1 = linear_intx(x, p, scale, zp, 4)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(y0, y1) and torch.equal(y0, linear_intx(x, p, scale, zp, 4))


def test_avx2_matches_portable_int8_codes():
    # Both ISAs quantize x identically, so their int8 results agree to float32 rounding.
    if "avx2" not in lowbit._C.cpu_isa() and not lowbit._C.cpu_has_avx2():
        pytest.skip("no AVX2")
    from lowbit._cpu import use_cpu_isa
    codes, scale, zp = make_weight(33, 256, 4, 64, False)
    x = torch.randn(4, 256) * 3
    ys = []
    for name in ("portable", "avx2"):
        with use_cpu_isa(name):
            ys.append(linear_intx(x, pack_bits(codes, 4), scale, zp, 4, None, True))
    assert rel_err(ys[1], ys[0].double()) < 1e-6


def test_empty_and_noncontiguous(isa):
    codes, scale, zp = make_weight(8, 64, 4, 32, False)
    p = pack_bits(codes, 4)
    assert linear_intx(torch.randn(0, 64), p, scale, zp, 4).shape == (0, 8)
    assert linear_intx(torch.randn(2, 0, 64), p, scale, zp, 4).shape == (2, 0, 8)
    x = torch.randn(64, 3).T  # non-contiguous: copied
    ref = linear_ref(x, codes, scale, zp, None)
    assert rel_err(linear_intx(x, p, scale, zp, 4), ref) < 1e-5


def test_nan_inf(isa):
    codes, scale, _ = make_weight(4, 64, 4, 32, False)
    p = pack_bits(codes, 4)
    x = torch.randn(2, 64)
    x[0, 5] = float("nan")
    y = linear_intx(x, p, scale, None, 4)
    assert y[0].isnan().all() and y[1].isfinite().all()
    x[0, 5] = float("inf")
    y = linear_intx(x, p, scale, None, 4, None, True)  # int8 path: the row becomes NaN
    assert y[0].isnan().all() and y[1].isfinite().all()


def test_opcheck():
    codes, scale, zp = make_weight(16, 128, 4, 64, True)
    p = pack_bits(codes, 4)
    bias = torch.randn(16)
    for args in [(torch.randn(3, 128), p, scale, zp, 4, bias, False),
                 (torch.randn(2, 2, 128, dtype=torch.bfloat16), p, scale, None, 4, None, True),
                 (torch.randn(1, 256), pack_bits(make_weight(16, 256, 2, 128, False)[0], 2),
                  torch.rand(16, 2), None, 2, None, False)]:
        torch.library.opcheck(torch.ops.lowbit.linear_intx.default, args)


# ---------------------------------------------------------------- bad input ----

@pytest.fixture
def w4():
    codes, scale, zp = make_weight(8, 64, 4, 32, True)
    return pack_bits(codes, 4), scale, zp


@pytest.mark.parametrize("case, match", [
    ("bits8", "expected bits 2 or 4"),
    ("packed_dtype", "expected packed of dtype"),
    ("packed_rank", "expected packed of rank 2"),
    ("scale_dtype", "expected scale of dtype"),
    ("scale_rows", "expected scale with N = 8"),
    ("scale_groups", r"expected scale of shape \[N, K / group_size\]"),
    ("group_not_8", "to be a multiple of 8"),
    ("zp_shape", "expected zero_point of the shape of scale"),
    ("zp_dtype", "expected zero_point of dtype float32 or int8, got Double"),
    ("x_dtype", "expected x of dtype float32"),
    ("x_k", "expected x with last axis K = 64"),
    ("x_0d", "expected x of rank >= 1"),
    ("bias_shape", r"expected bias of shape \[8\]"),
])
def test_bad_input(w4, case, match):
    p, s, z = w4
    x, bits, b = torch.randn(2, 64), 4, None
    if case == "bits8": bits = 8
    if case == "packed_dtype": p = p.view(torch.int8)
    if case == "packed_rank": p = p.reshape(-1)
    if case == "scale_dtype": s = s.double()
    if case == "scale_rows": s, z = s[:4], z[:4]
    if case == "scale_groups": s, z = torch.rand(8, 3), torch.rand(8, 3)
    if case == "group_not_8": s, z = torch.rand(8, 16), torch.rand(8, 16)
    if case == "zp_shape": z = z[:, :1]
    if case == "zp_dtype": z = z.double()
    if case == "x_dtype": x = x.to(torch.int32)
    if case == "x_k": x = torch.randn(2, 32)
    if case == "x_0d": x = torch.tensor(1.0)
    if case == "bias_shape": b = torch.randn(7)
    with pytest.raises(RuntimeError, match=match):
        linear_intx(x, p, s, z, bits, b)


@pytest.mark.skipif(not lowbit._C.cpu_has_avx512(), reason="needs AVX-512 VNNI")
def test_avx512_int4_int8_tiles():
    # 4 x 4 tiles of (rows of x) x (weight rows): every edge, and a long K (x beyond the L1).
    from lowbit._cpu import use_cpu_isa
    for n, k, g in [(70, 1024, 128), (5, 256, 256), (3, 11008, 128)]:
        codes, scale, zp = make_weight(n, k, 4, g, True)
        for m in (2, 3, 5, 6, 7):
            x = torch.randn(m, k)
            bias = torch.randn(n)
            with use_cpu_isa("avx512"):
                y = linear_intx(x, pack_bits(codes, 4), scale, zp, 4, bias, True)
                assert kernel() == "avx512_gemm_int8act"
            assert rel_err(y, linear_ref(x, codes, scale, zp, bias, int8=True)) < 1e-5, (n, k, g, m)
    # shapes the AVX-512 kernel does not take run the AVX2 one: 2-bit, group 64, M = 1
    codes, scale, zp = make_weight(8, 512, 4, 64, True)
    with use_cpu_isa("avx512"):
        linear_intx(torch.randn(3, 512), pack_bits(codes, 4), scale, zp, 4, None, True)
        assert kernel() == "avx2_gemm_int8act"
        codes, scale, zp = make_weight(8, 512, 4, 128, True)
        linear_intx(torch.randn(1, 512), pack_bits(codes, 4), scale, zp, 4, None, True)
        assert kernel() == "avx2_gemv_int8act"
