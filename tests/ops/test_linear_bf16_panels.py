"""The large-M path for bfloat16 activations (cpu/panel_gemm.h): weights decoded into
bfloat16 panels and multiplied with vdpbf16ps, on CPUs with AVX512_BF16.

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
SHAPES = [(32, 45, 288), (37, 128, 512), (200, 7, 64), ((2, 20), 33, 160)]


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
            assert lowbit.last_kernels()[op] == PANEL_KERNEL
        assert y.dtype == torch.bfloat16 and y.shape == (*x.shape[:-1], N)
        assert rel_err(y, reference(x, w64, bias)) < tol, (fmt, shape, with_bias)


@pytest.mark.parametrize("fmt", ["int8", "int4", "q4_0"])
def test_same_result_class_as_the_float32_path(fmt):
    """The AVX2 tier runs the float32 panels for the same call: both are near float64."""
    call, w64, tol, op = weights(fmt, 96, 512)
    x, bias = make_x(64, 512), torch.randn(96)
    with lowbit.use_cpu_isa("avx512"):
        y_bf16 = call(x, bias)
    with lowbit.use_cpu_isa("avx2"):
        y_f32 = call(x, bias)
        assert lowbit.last_kernels()[op] != PANEL_KERNEL
    assert rel_err(y_bf16, y_f32.double()) < tol


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
