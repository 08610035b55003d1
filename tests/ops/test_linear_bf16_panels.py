"""The vdpbf16ps kernels for bfloat16 activations on CPUs with AVX512_BF16: the large-M
path of every format (cpu/panel_gemm.h: weights decoded into bfloat16 panels) and, at
the end of this file, linear_intx's 4-bit kernel for M < 64.

Every format is checked against a float64 dequantize-then-matmul reference of the same
bfloat16 x. Thresholds (||y - ref|| / ||ref||): the output is rounded to bfloat16 (unit
roundoff 2^-9, about 2e-3 relative in norm), plus, for the formats whose dequantized
weight is rounded to bfloat16 in the panel (group-wise int4 / int2, Q8_0, Q4_0,
per-tensor float8), a second error of the same size. int8 and per-channel float8 keep
their codes (exact in bfloat16) and scale the float32 sums, so they get the tolerance of
the float32-activation path for bfloat16 x.
"""
import pytest
import torch

import lowbit
from lowbit.ops.linear_fp8_gguf import linear_fp8, linear_q4_0, linear_q8_0
from lowbit.ops.linear_int8 import linear_int8
from lowbit.ops.linear_intx import linear_intx
from lowbit.ops.packing import pack_bits
from lowbit.ops import gguf as G
from test_linear_fp8_gguf import deq_q4_0, deq_q8_0, make_fp8
from test_linear_intx import dequant_ref, make_weight

pytestmark = pytest.mark.skipif(not lowbit._C.cpu_has_avx512_bf16(),
                                reason="needs a CPU with AVX512_BF16 (and a build with those kernels)")

PANEL_KERNEL = "avx512_packed_gemm_bf16act"
EXACT_CODES_TOL = 3e-3   # int8, per-channel float8: one bfloat16 rounding of y (1.7e-3 seen)
ROUNDED_W_TOL = 4e-3    # plus the bfloat16 rounding of each dequantized weight (2.4e-3 seen)
# (M, N, K): M >= 32 (the panel path's threshold), N not a multiple of the 32-column
# strip, K a multiple of 32 (the GGUF block) that leaves a short last K block (288 =
# 256 + 32), a 3-D x.
SHAPES = [(32, 45, 288), (37, 128, 512), (200, 7, 64), ((2, 40), 33, 160)]


def rel_err(y, ref):
    return ((y.double() - ref).norm() / ref.norm()).item()


def make_x(M, K):
    lead = M if isinstance(M, tuple) else (M,)
    return torch.randn(*lead, K).bfloat16()


def reference(x, w64, bias):
    y = x.double() @ w64.T
    return y + bias.double() if bias is not None else y


def weights(fmt, N, K):
    """-> (call(x, bias), float64 dequantized weight, tolerance, op name)."""
    if fmt == "int8":
        codes = torch.randint(-128, 128, (N, K), dtype=torch.int8)
        scale = torch.rand(N, 1) * 0.02 + 1e-3
        return (lambda x, b: linear_int8(x, codes, scale, b)), codes.double() * scale.double(), EXACT_CODES_TOL, "linear_int8"
    if fmt in ("int4", "int2", "int4_asym"):
        bits = 2 if fmt == "int2" else 4
        codes, scale, zp = make_weight(N, K, bits, 32, asym=fmt == "int4_asym")
        packed = pack_bits(codes, bits)
        return ((lambda x, b: linear_intx(x, packed, scale, zp, bits, b)), dequant_ref(codes, scale, zp),
                ROUNDED_W_TOL, "linear_intx")
    if fmt in ("fp8_channel", "fp8_tensor"):
        q, scale = make_fp8(N, K, torch.float8_e4m3fn, per_channel=fmt == "fp8_channel")
        w = q.double() * scale.double()
        tol = EXACT_CODES_TOL if fmt == "fp8_channel" else ROUNDED_W_TOL
        return (lambda x, b: linear_fp8(x, q, scale, b)), w, tol, "linear_fp8"
    blocks = (G.quantize_q8_0 if fmt == "q8_0" else G.quantize_q4_0)(torch.randn(N, K))
    deq, op = (deq_q8_0, linear_q8_0) if fmt == "q8_0" else (deq_q4_0, linear_q4_0)
    return (lambda x, b: op(x, blocks, b)), deq(blocks), ROUNDED_W_TOL, f"linear_{fmt}"


FORMATS = ["int8", "int4", "int4_asym", "int2", "fp8_channel", "fp8_tensor", "q8_0", "q4_0"]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("shape", SHAPES)
def test_matches_float64(fmt, shape):
    M, N, K = shape
    call, w64, tol, op = weights(fmt, N, K)
    for with_bias in (True, False):
        x = make_x(M, K)
        bias = torch.randn(N) if with_bias else None
        with lowbit.use_cpu_isa("avx512"):
            y = call(x, bias)
            # 2/4-bit weights below M = 64 take their register-decoding kernel (end of file)
            small_intx = fmt.startswith(("int4", "int2")) and x.numel() // K < 64
            assert lowbit.last_kernels()[op] == ("avx512_gemm_bf16act" if small_intx else PANEL_KERNEL)
        assert y.dtype == torch.bfloat16 and y.shape == (*x.shape[:-1], N)
        assert rel_err(y, reference(x, w64, bias)) < tol, (fmt, shape, with_bias)


@pytest.mark.parametrize("fmt", ["int8", "int4", "q4_0"])
def test_same_result_class_as_the_float32_path(fmt):
    """The AVX2 tier runs the float32 panels for the same call: both are near float64."""
    call, w64, tol, op = weights(fmt, 96, 512)
    x, bias = make_x(64, 512), torch.randn(96)  # M = 64: the panels for every format
    with lowbit.use_cpu_isa("avx512"):
        y_bf16 = call(x, bias)
    with lowbit.use_cpu_isa("avx2"):
        y_f32 = call(x, bias)
        assert lowbit.last_kernels()[op] != PANEL_KERNEL
    assert rel_err(y_bf16, y_f32.double()) < tol


@pytest.fixture
def matmul_precision():
    before = torch.get_float32_matmul_precision()
    yield torch.set_float32_matmul_precision
    torch.set_float32_matmul_precision(before)


@pytest.mark.parametrize("fmt", FORMATS)
def test_float32_x_at_medium_precision_takes_the_panels(matmul_precision, fmt):
    """torch.set_float32_matmul_precision("medium") lets float32 x be rounded to bfloat16:
    then the bfloat16 panels run for it too, with a float32 result; at "high" / "highest"
    the float32 kernels do."""
    M, N, K = 64, 45, 288
    call, w64, tol, op = weights(fmt, N, K)
    x, bias = torch.randn(M, K), torch.randn(N)
    ref = reference(x, w64, bias)
    with lowbit.use_cpu_isa("avx512"):
        for precision in ("highest", "high"):
            matmul_precision(precision)
            call(x, bias)
            assert lowbit.last_kernels()[op] != PANEL_KERNEL, precision
        matmul_precision("medium")
        y = call(x, bias)
        assert lowbit.last_kernels()[op] == PANEL_KERNEL
    assert y.dtype == torch.float32
    # x rounded to bfloat16 (~1.1e-3 rms) on top of the format's own bfloat16 class
    assert rel_err(y, ref) < tol + 3e-3


def test_small_m_and_odd_k_stay_on_the_other_kernels():
    codes = torch.randint(-128, 128, (64, 100), dtype=torch.int8)
    scale = torch.rand(64, 1) + 0.1
    with lowbit.use_cpu_isa("avx512"):
        linear_int8(make_x(31, 100)[:, :96].contiguous(), codes[:, :96].contiguous(), scale)  # M < 32
        assert lowbit.last_kernels()["linear_int8"] != PANEL_KERNEL
        linear_int8(make_x(64, 100), codes, scale)  # K % 8 != 0
        assert lowbit.last_kernels()["linear_int8"] != PANEL_KERNEL
        linear_int8(make_x(64, 96).float(), codes[:, :96].contiguous(), scale)  # float32 x
        assert lowbit.last_kernels()["linear_int8"] != PANEL_KERNEL


def test_nan_row_stays_in_its_row():
    codes = torch.randint(-128, 128, (40, 64), dtype=torch.int8)
    scale = torch.rand(40, 1) + 0.1
    x = make_x(48, 64)
    x[5, 3] = float("nan")
    with lowbit.use_cpu_isa("avx512"):
        y = linear_int8(x, codes, scale)
        assert lowbit.last_kernels()["linear_int8"] == PANEL_KERNEL
    assert torch.isnan(y[5]).all()
    assert torch.isfinite(torch.cat([y[:5], y[6:]])).all()


# ------------------------------------ 4-bit weights, small M, register decoding ----
# linear_intx's register-decoded kernel: bfloat16 1 + u / 2^bits (exact) meets x in
# vdpbf16ps, then 2^bits scale * sum((1 + u / 2^bits) x) - (2^bits + 2^(bits-1) + zp) *
# scale * sum(x) per group in float32 (4 bits: 16 and 24 + zp; 2 bits: 4 and 6 + zp). x is one bfloat16 term (bfloat16 x), two (float16 x, exact), or three
# (float32 x, exact; two or one under torch.set_float32_matmul_precision("high" /
# "medium")).

def small_m_kernel(M, terms=None):
    stem = "avx512_gemv_" if M == 1 else "avx512_gemm_"
    return stem + ("bf16act" if terms is None else f"bf16x{terms}act")


@pytest.mark.parametrize("bits", [4, 2])
@pytest.mark.parametrize("M", [1, 2, 3, 5, 16, 31, 63])
@pytest.mark.parametrize("group,asym", [(32, False), (64, True), (128, True), (256, False)])
def test_small_m_matches_float64(bits, M, group, asym):
    # groups smaller than the unit (64 elements at 4 bits, 128 at 2): 2 or 4 per unit
    N, K = 2 * 4 + 3, 2 * max(group, 128)  # N: tails of the 4- and 2-row tiles
    codes, scale, zp = make_weight(N, K, bits, group, asym)
    packed = pack_bits(codes, bits)
    x, bias = make_x(M, K), torch.randn(N)
    with lowbit.use_cpu_isa("avx512"):
        y = linear_intx(x, packed, scale, zp, bits, bias)
        assert lowbit.last_kernels()["linear_intx"] == small_m_kernel(M)
    assert rel_err(y, reference(x, dequant_ref(codes, scale, zp), bias)) < EXACT_CODES_TOL


# Float32 x, by matmul precision: (terms, largest M that takes the kernel, threshold).
# "highest": exact x, float32 rounding only (1.3e-6 worst seen, 2.8e-6 for all-positive
# x); "high": x to 16 significant bits (relative 2^-17 per element; 2.5-3.1e-6 seen);
# "medium": x rounded to bfloat16 (unit roundoff 2^-9: ~1.1e-3 rms relative on the
# output, 3.3e-3 seen on the 11 outputs of M = 1; the class of bfloat16 x).
PRECISIONS = {"highest": (3, 31, 1e-5), "high": (2, 63, 2e-5), "medium": (1, 63, 6e-3)}


@pytest.mark.parametrize("bits", [4, 2])
@pytest.mark.parametrize("precision", list(PRECISIONS))
@pytest.mark.parametrize("M", [1, 2, 3, 7, 31])
@pytest.mark.parametrize("group,asym", [(32, True), (64, False), (128, False), (256, True)])
def test_small_m_float32_x(matmul_precision, bits, precision, M, group, asym):
    terms, _, tol = PRECISIONS[precision]
    N, K = 2 * 4 + 3, 2 * max(group, 128)
    codes, scale, zp = make_weight(N, K, bits, group, asym)
    x, bias = torch.randn(M, K), torch.randn(N)
    matmul_precision(precision)
    with lowbit.use_cpu_isa("avx512"):
        y = linear_intx(x, pack_bits(codes, bits), scale, zp, bits, bias)
        if bits == 2 and terms == 3 and M > 2:  # the AVX2 float kernel is faster there
            assert lowbit.last_kernels()["linear_intx"] == "avx2_gemm_f32act"
        else:
            assert lowbit.last_kernels()["linear_intx"] == small_m_kernel(M, terms)
    assert y.dtype == torch.float32
    assert rel_err(y, reference(x, dequant_ref(codes, scale, zp), bias)) < tol


def test_2bit_three_terms_threshold():
    """2-bit weights, float32 x in three terms: the register kernel to M = 2, then the
    AVX2 float kernel (faster there); bfloat16 x stays on the register kernel."""
    codes, scale, zp = make_weight(16, 256, 2, 64, True)
    packed = pack_bits(codes, 2)
    with lowbit.use_cpu_isa("avx512"):
        linear_intx(torch.randn(2, 256), packed, scale, zp, 2)
        assert lowbit.last_kernels()["linear_intx"] == small_m_kernel(2, 3)
        linear_intx(torch.randn(3, 256), packed, scale, zp, 2)
        assert lowbit.last_kernels()["linear_intx"] == "avx2_gemm_f32act"
        linear_intx(make_x(3, 256), packed, scale, zp, 2)
        assert lowbit.last_kernels()["linear_intx"] == small_m_kernel(3)


@pytest.mark.parametrize("precision", list(PRECISIONS))
def test_int4_small_m_float32_x_threshold(matmul_precision, precision):
    """Above its M limit the float32 kernels (AVX2 rows, then the float32 panels) run; at
    "medium" (M = 64) the bfloat16 panels, x rounded to bfloat16."""
    terms, max_m, _ = PRECISIONS[precision]
    codes, scale, zp = make_weight(16, 256, 4, 128, False)
    packed = pack_bits(codes, 4)
    matmul_precision(precision)
    with lowbit.use_cpu_isa("avx512"):
        linear_intx(torch.randn(max_m, 256), packed, scale, zp, 4)
        assert lowbit.last_kernels()["linear_intx"] == small_m_kernel(max_m, terms)
        linear_intx(torch.randn(max_m + 1, 256), packed, scale, zp, 4)
        above = lowbit.last_kernels()["linear_intx"]
        assert above == PANEL_KERNEL if precision == "medium" else above.startswith("avx2_")


@pytest.mark.parametrize("M", [1, 4])
def test_int4_small_m_float16_x_is_exact(M):
    """float16 x is two bfloat16 terms exactly: only the float16 rounding of y remains."""
    codes, scale, zp = make_weight(11, 512, 4, 64, True)
    x = torch.randn(M, 512).half()
    with lowbit.use_cpu_isa("avx512"):
        y = linear_intx(x, pack_bits(codes, 4), scale, zp, 4)
        assert lowbit.last_kernels()["linear_intx"] == small_m_kernel(M, 2)
    ref = reference(x, dequant_ref(codes, scale, zp), None)
    assert y.dtype == torch.float16
    assert rel_err(y, ref) < 1e-3  # float16 unit roundoff 4.9e-4; ~2.2e-4 seen
    assert rel_err(y, ref.half().double()) < 1e-3


@pytest.mark.parametrize("bits", [4, 2])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_small_m_positive_activations(bits, dtype):
    """All-positive x (after a ReLU / GELU) makes 2^bits sum((1 + u / 2^bits) x) and
    (2^bits + 2^(bits-1) + zp) sum(x) large and close: their float32 difference must keep
    the accuracy."""
    codes, scale, zp = make_weight(64, 1024, bits, 128, True)
    M = 2 if bits == 2 else 4  # 2-bit, three terms: the register kernel runs to M = 2
    x = (make_x(M, 1024).abs() + 1).to(dtype)
    with lowbit.use_cpu_isa("avx512"):
        y = linear_intx(x, pack_bits(codes, bits), scale, zp, bits)
        assert lowbit.last_kernels()["linear_intx"] == small_m_kernel(M, None if dtype == torch.bfloat16 else 3)
    tol = EXACT_CODES_TOL if dtype == torch.bfloat16 else 1e-5
    assert rel_err(y, reference(x, dequant_ref(codes, scale, zp), None)) < tol


@pytest.mark.parametrize("M", [1, 2])
@pytest.mark.parametrize("bits,K,group", [(4, 96, 32), (2, 96, 32), (2, 160, 32), (2, 192, 64), (2, 64, 64)])
def test_small_m_partial_last_unit(M, bits, K, group):
    """K not a multiple of the unit (64 elements at 4 bits, 128 at 2): the last unit is
    partly the row's (masked load), and its groups past the row's get no scale."""
    codes, scale, zp = make_weight(9, K, bits, group, True)
    for x in (make_x(M, K), torch.randn(M, K)):
        with lowbit.use_cpu_isa("avx512"):
            y = linear_intx(x, pack_bits(codes, bits), scale, zp, bits)
            assert lowbit.last_kernels()["linear_intx"].startswith("avx512_gem")
        tol = EXACT_CODES_TOL if x.dtype == torch.bfloat16 else 1e-5
        assert rel_err(y, reference(x, dequant_ref(codes, scale, zp), None)) < tol


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_int4_small_m_nonfinite_x_stays_in_its_row(dtype):
    """inf in x gives NaN (inf - inf of the two terms), NaN gives NaN: that row only."""
    codes, scale, zp = make_weight(12, 256, 4, 64, True)
    x = torch.randn(4, 256).to(dtype)
    x[1, 5], x[2, 200] = float("inf"), float("nan")
    with lowbit.use_cpu_isa("avx512"):
        y = linear_intx(x, pack_bits(codes, 4), scale, zp, 4)
        assert "bf16" in lowbit.last_kernels()["linear_intx"]
    assert torch.isnan(y[1:3]).all()
    assert torch.isfinite(y[[0, 3]]).all()


def test_int4_small_m_other_cases_keep_their_kernels():
    codes, scale, zp = make_weight(16, 256, 4, 128, False)
    packed = pack_bits(codes, 4)
    with lowbit.use_cpu_isa("avx512"):
        linear_intx(make_x(2, 256), packed, scale, zp, 4, int8_activations=True)  # int8 requested
        assert "int8act" in lowbit.last_kernels()["linear_intx"]
    codes2, scale2, _ = make_weight(16, 192, 2, 96, False)  # 2-bit group 96: not a divisor nor a multiple of 128
    with lowbit.use_cpu_isa("avx512"):
        linear_intx(make_x(2, 192), pack_bits(codes2, 2), scale2, None, 2)
        assert lowbit.last_kernels()["linear_intx"] == "avx2_gemm_f32act"
    codes3, scale3, _ = make_weight(16, 288, 4, 96, False)  # group 96: neither 32 nor a multiple of 64
    with lowbit.use_cpu_isa("avx512"):
        linear_intx(torch.randn(2, 288), pack_bits(codes3, 4), scale3, None, 4)
        assert lowbit.last_kernels()["linear_intx"] == "avx2_gemm_f32act"
