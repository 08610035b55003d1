"""CUDA mixed-precision linear ops (linear_intx, linear_int8, linear_fp8) against a float64
dequantize-then-matmul reference and against the CPU op on the same inputs.

Thresholds (||y - ref|| / ||ref||, ref from the same rounded x):
- float32 x: dequantize to float32 + cuBLAS sgemm (TF32 off, torch's default): 1e-5.
- float16 x: the tensor-core kernel rounds each 4/2-bit weight to float16 (2^-11 relative,
  ~3e-4 on the output) and the output is rounded to float16 (2^-11): 2e-3, as the CPU tests.
- bfloat16 x: the same with 2^-8: ~2e-3 weight rounding + ~2e-3 output rounding: 1.6e-2.
  int8 / float8 weights are exact in 16 bits, so there only the output rounding counts.
- Against the CPU op (float32 weights and sums, rounded once): twice the tolerance above.
- W8A8 (int8_activations=True): the activation codes and scales are bit-identical to the
  CPU's; the at::_int_mm path is exact, so its output equals the CPU op bit for bit; the
  tensor-core path sums exact integer products in float32 (exact below 2^24): 1e-6.
tests/ops/test_gemm_cuda_emulation.py checks the kernel's index math and bit tricks on the CPU
(an emulation); these tests check the kernel itself.
"""
import os

import pytest
import torch
import torch.nn.functional as F

import lowbit
from lowbit.ops.linear_fp8_gguf import linear_fp8
from lowbit.ops.linear_int8 import linear_int8
from lowbit.ops.linear_intx import linear_intx
from lowbit.ops.packing import pack_bits

pytestmark = pytest.mark.cuda

DEV = "cuda"
SMALL_M = int(os.environ.get("LOWBIT_CUDA_SMALL_M_MAX", "64"))
W8A16_M_MAX = int(os.environ.get("LOWBIT_CUDA_W8A16_M_MAX", "128"))
MS = [1, 2, 3, 7, 16, 17, 33, 64, 65, 200, 1100]
DTYPES = [torch.float16, torch.bfloat16, torch.float32]
TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


# ---------------------------------------------------------------- helpers ----

@pytest.fixture(autouse=True)
def _poison_allocator():
    """Fills freed blocks of torch's caching allocator with NaN, so that an output element a
    kernel forgets to write shows up as NaN instead of a stale plausible value."""
    if torch.cuda.is_available():
        blocks = [torch.full((n,), float("nan"), device=DEV) for n in (256, 4096, 65536, 1 << 20, 16 << 20)
                  for _ in range(4)]
        del blocks
    yield


def rel_err(y, ref):
    return ((y.double().cpu() - ref).norm() / ref.norm().clamp_min(1e-30)).item()


def kernel(op):
    return lowbit.last_kernels()[op]


def make_intx(n, k, bits, group, asym):
    lo, hi = -2 ** (bits - 1), 2 ** (bits - 1) - 1
    codes = torch.randint(lo, hi + 1, (n, k), dtype=torch.int8)
    scale = torch.rand(n, k // group) * 0.1 + 0.01
    zp = (torch.rand(n, k // group) * 3 - 1.5) if asym else None  # non-integral, as HQQ gives
    return codes, scale, zp


def dequant_ref(codes, scale, zp):
    g = codes.shape[1] // scale.shape[1]
    w = codes.double()
    if zp is not None:
        w = w - zp.double().repeat_interleave(g, 1)
    return w * scale.double().repeat_interleave(g, 1)


def linear_ref(x, w64, bias):
    y = x.double().reshape(-1, x.shape[-1]) @ w64.T
    if bias is not None:
        y = y + bias.double()
    return y.reshape(*x.shape[:-1], w64.shape[0])


def cuda(*ts):
    return [None if t is None else t.to(DEV) for t in ts]


def check_paths(op, m, dtype, mma_ok=True, small_m=None):
    k = kernel(op)
    if dtype != torch.float32 and m <= (small_m or SMALL_M) and mma_ok:
        assert k.startswith("cuda_mma"), k
    else:
        assert k == "cuda_dequant_cublas", k


# ---------------------------------------------------------------- linear_intx ----

INTX_SHAPES = [  # (N, K, group): N not a multiple of 8, every group size, one split-K shape
    (1, 256, 256), (13, 512, 32), (61, 384, 128), (261, 512, 64), (40, 4096, 128),
]


@pytest.mark.parametrize("bits", [4, 2])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("asym", [False, True])
@pytest.mark.parametrize("m", MS)
def test_intx_matches_reference_and_cpu(bits, dtype, asym, m):
    for n, k, g in INTX_SHAPES:
        if m >= 200 and n * k > 200_000:
            continue  # keep the CPU op affordable
        codes, scale, zp = make_intx(n, k, bits, g, asym)
        packed = pack_bits(codes, bits)
        x = torch.randn(m, k).to(dtype)
        bias = torch.randn(n) if n % 2 else None
        y = linear_intx(*cuda(x, packed, scale, zp), bits, *cuda(bias))
        assert y.shape == (m, n) and y.dtype == dtype and y.device.type == "cuda"
        check_paths("linear_intx", m, dtype)
        assert torch.isfinite(y).all()
        ref = linear_ref(x, dequant_ref(codes, scale, zp), bias)
        assert rel_err(y, ref) < TOL[dtype], (n, k, g)
        y_cpu = linear_intx(x, packed, scale, zp, bits, bias)
        assert rel_err(y, y_cpu.double()) < 2 * TOL[dtype], (n, k, g)


@pytest.mark.parametrize("bits", [4, 2])
def test_intx_group_not_multiple_of_32_and_odd_k_take_dequant_path(bits):
    # group 8 / 24: allowed by the format, not by the tensor-core kernel
    for n, k, g in [(9, 64, 8), (7, 96, 24), (5, 40, 8)]:
        codes, scale, zp = make_intx(n, k, bits, g, True)
        x = torch.randn(3, k, dtype=torch.float16)
        y = linear_intx(*cuda(x, pack_bits(codes, bits), scale, zp), bits)
        assert kernel("linear_intx") == "cuda_dequant_cublas"
        assert rel_err(y, linear_ref(x, dequant_ref(codes, scale, zp), None)) < TOL[torch.float16]


def test_intx_split_k_and_all_warp_layouts_run():
    # N = 40 channels and K = 4096 leave the GPU mostly idle without split-K; M = 1..4 uses 4
    # warps along K, 5..16 two, 17+ one.
    codes, scale, zp = make_intx(40, 4096, 4, 128, True)
    packed = pack_bits(codes, 4)
    w64 = dequant_ref(codes, scale, zp)
    seen = set()
    for m in (1, 4, 5, 16, 17, 40):
        x = torch.randn(m, 4096, dtype=torch.bfloat16)
        y = linear_intx(*cuda(x, packed, scale, zp), 4)
        seen.add(kernel("linear_intx"))
        assert rel_err(y, linear_ref(x, w64, None)) < TOL[torch.bfloat16]
    assert "cuda_mma_splitk" in seen


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_intx_3d_and_non_contiguous_input(dtype):
    codes, scale, zp = make_intx(24, 256, 4, 64, True)
    packed = pack_bits(codes, 4)
    x = torch.randn(2, 5, 512).to(dtype)[..., ::2]  # non-contiguous [2, 5, 256]
    bias = torch.randn(24)
    y = linear_intx(*cuda(x, packed, scale, zp), 4, *cuda(bias))
    assert y.shape == (2, 5, 24)
    assert rel_err(y, linear_ref(x, dequant_ref(codes, scale, zp), bias)) < TOL[dtype]


def test_intx_deterministic():
    codes, scale, zp = make_intx(40, 4096, 4, 128, False)
    args = cuda(torch.randn(8, 4096, dtype=torch.bfloat16), pack_bits(codes, 4), scale, zp)
    y1 = linear_intx(*args, 4)
    y2 = linear_intx(*args, 4)
    assert torch.equal(y1, y2)


def test_intx_int8_activations_flag_is_ignored_on_cuda():
    codes, scale, zp = make_intx(16, 256, 4, 32, False)
    args = cuda(torch.randn(3, 256, dtype=torch.float16), pack_bits(codes, 4), scale, zp)
    assert torch.equal(linear_intx(*args, 4, None, True), linear_intx(*args, 4, None, False))


# ---------------------------------------------------------------- linear_int8 (W8A16) ----

INT8_SHAPES = [(1, 64), (13, 512), (61, 336), (40, 4096), (21, 100)]  # K = 100: dequantize path


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("m", MS)
def test_int8_w8a16_matches_reference_and_cpu(dtype, m):
    for n, k in INT8_SHAPES:
        codes = torch.randint(-128, 128, (n, k), dtype=torch.int8)
        scale = torch.rand(n, 1) * 0.01 + 1e-3
        x = torch.randn(m, k).to(dtype)
        bias = torch.randn(n) if n % 2 else None
        y = linear_int8(*cuda(x, codes, scale, bias))
        assert y.shape == (m, n) and y.dtype == dtype
        check_paths("linear_int8", m, dtype, mma_ok=k % 16 == 0, small_m=W8A16_M_MAX)
        ref = linear_ref(x, codes.double() * scale.double(), bias)
        assert rel_err(y, ref) < TOL[dtype], (n, k)
        assert rel_err(y, linear_int8(x, codes, scale, bias).double()) < 2 * TOL[dtype], (n, k)


# ---------------------------------------------------------------- linear_int8 (W8A8) ----

def w8a8_ref(x, codes, scale, bias):
    """The CPU op's math in plain torch: per-row scale amax / 127, codes rint(x / s) (IEEE
    division), exact integer dot product, then ((acc * s) * scale) + bias in float32."""
    xf = x.float().reshape(-1, x.shape[-1])
    amax = xf.abs().amax(1, keepdim=True)
    finite = torch.isfinite(xf).all(1, keepdim=True)
    s = torch.where(finite, amax / torch.full_like(amax, 127.0), torch.full_like(amax, float("nan")))
    q = torch.where(s > 0, torch.round(xf / s).clamp(-127, 127), torch.zeros_like(xf))
    acc = (q.double() @ codes.double().T).float()
    y = acc * s * scale.reshape(1, -1)
    if bias is not None:
        y = y + bias.float()
    return y.reshape(*x.shape[:-1], codes.shape[0]).to(x.dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("m", MS)
def test_int8_w8a8_matches_cpu(dtype, m):
    # (N, K): _int_mm for large M when N % 8 == K % 8 == 0; tensor-core kernel for small M
    # and for N % 8 != 0; float32 cuBLAS for K % 16 != 0 and no _int_mm.
    for n, k in [(16, 256), (40, 1024), (20, 512), (24, 100), (13, 72)]:
        codes = torch.randint(-128, 128, (n, k), dtype=torch.int8)
        scale = torch.rand(n, 1) * 0.01 + 1e-3
        x = torch.randn(m, k).to(dtype)
        x[0, :] = 0  # zero row: y = bias
        bias = torch.randn(n)
        y = linear_int8(*cuda(x, codes, scale, bias), True).cpu()
        path = kernel("linear_int8")
        y_cpu = linear_int8(x, codes, scale, bias, True)
        ref = w8a8_ref(x, codes, scale, bias)
        assert torch.equal(y_cpu, ref), "the CPU op and the plain-torch W8A8 emulation differ"
        if path == "cuda_int_mm":
            assert torch.equal(y, y_cpu), (path, n, k)
        else:  # exact integer sums in float32: equal up to a rounding of the 16-bit output
            assert rel_err(y, y_cpu.double()) < (1e-6 if dtype == torch.float32 else TOL[dtype]), (path, n, k)
        if m > SMALL_M and n % 8 == 0 and k % 8 == 0:
            assert path == "cuda_int_mm", path


def test_int8_w8a8_int_mm_is_bit_exact():
    codes = torch.randint(-128, 128, (64, 512), dtype=torch.int8)
    scale = torch.rand(64, 1) * 0.01 + 1e-3
    x = torch.randn(300, 512, dtype=torch.bfloat16)
    y = linear_int8(*cuda(x, codes, scale), None, True).cpu()
    assert kernel("linear_int8") == "cuda_int_mm"
    assert torch.equal(y, linear_int8(x, codes, scale, None, True))


def test_int8_w8a8_nan_row_and_k_limit():
    codes = torch.randint(-128, 128, (16, 64), dtype=torch.int8)
    scale = torch.rand(16, 1) + 0.1
    x = torch.randn(3, 64)
    x[1, 5] = float("nan")
    x[2, 7] = float("inf")
    y = linear_int8(*cuda(x, codes, scale), None, True).cpu()
    assert torch.isnan(y[1:]).all() and torch.isfinite(y[0]).all()
    big = torch.zeros(1, 131080, dtype=torch.int8, device=DEV)
    with pytest.raises(RuntimeError, match="expected K <= 131072"):
        linear_int8(torch.zeros(1, 131080, device=DEV), big, torch.ones(1, 1, device=DEV), None, True)


# ---------------------------------------------------------------- linear_fp8 ----

def make_fp8(n, k, fmt, finite=True):
    b = torch.randint(0, 256, (n, k), dtype=torch.uint8)
    if finite:
        nan = (b & 0x7F) == 0x7F if fmt == torch.float8_e4m3fn else (b & 0x7C) == 0x7C
        b[nan] = 0x21
    return b.view(fmt)


@pytest.mark.parametrize("fmt", [torch.float8_e4m3fn, torch.float8_e5m2], ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("m", MS)
def test_fp8_matches_reference_and_cpu(fmt, dtype, m):
    for n, k, per_tensor in [(1, 64, False), (13, 512, True), (61, 336, False), (40, 4096, False), (21, 100, True)]:
        q = make_fp8(n, k, fmt)
        scale = torch.rand(1 if per_tensor else n, 1) * 0.01 + 1e-3
        x = torch.randn(m, k).to(dtype)
        bias = torch.randn(n) if n % 2 else None
        y = linear_fp8(*cuda(x, q, scale, bias))
        assert y.shape == (m, n) and y.dtype == dtype
        check_paths("linear_fp8", m, dtype, mma_ok=k % 16 == 0)
        ref = linear_ref(x, q.double() * scale.double(), bias)
        # the dequantize path rounds decode * scale to x's dtype once more
        tol = TOL[dtype] * (2 if kernel("linear_fp8") == "cuda_dequant_cublas" else 1)
        assert rel_err(y, ref) < tol, (n, k)
        assert rel_err(y, linear_fp8(x, q, scale, bias).double()) < 2 * tol, (n, k)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32], ids=str)
def test_fp8_nan_codes_make_their_column_nan(dtype):
    q = make_fp8(24, 64, torch.float8_e4m3fn).view(torch.uint8)
    q[5, 3] = 0x7F
    q[17, 60] = 0xFF
    q = q.view(torch.float8_e4m3fn)
    x = torch.randn(2, 64).to(dtype)
    y = linear_fp8(*cuda(x, q, torch.ones(24, 1))).cpu()
    nan_cols = torch.isnan(y).all(0)
    assert nan_cols[5] and nan_cols[17] and nan_cols.sum() == 2 and not torch.isnan(y[:, ~nan_cols]).any()


# ---------------------------------------------------------------- edge cases and errors ----

def test_empty_and_k0():
    codes, scale, zp = make_intx(8, 64, 4, 32, True)
    packed, scale, zp = cuda(pack_bits(codes, 4), scale, zp)
    y = linear_intx(torch.zeros(0, 64, device=DEV, dtype=torch.float16), packed, scale, zp, 4)
    assert y.shape == (0, 8)
    y = linear_int8(torch.randn(3, 0, device=DEV), torch.zeros(5, 0, dtype=torch.int8, device=DEV),
                    torch.ones(5, 1, device=DEV), torch.arange(5.0, device=DEV))
    assert torch.equal(y.cpu(), torch.arange(5.0).expand(3, 5))


def test_errors_name_the_problem():
    codes, scale, zp = make_intx(8, 64, 4, 32, True)
    packed = pack_bits(codes, 4)
    x = torch.randn(2, 64)
    with pytest.raises(RuntimeError, match="expected packed on the device of x"):
        linear_intx(x, packed.to(DEV), scale.to(DEV), zp.to(DEV), 4)
    with pytest.raises(RuntimeError, match="expected scale on the device of x"):
        linear_intx(x.to(DEV), packed.to(DEV), scale, None, 4)
    with pytest.raises(RuntimeError, match="expected x of dtype float32, float16 or bfloat16"):
        linear_intx(x.to(DEV).to(torch.int32), packed.to(DEV), scale.to(DEV), None, 4)
    with pytest.raises(RuntimeError, match="expected bias on the device of x"):
        linear_int8(x.to(DEV), torch.zeros(8, 64, dtype=torch.int8, device=DEV), torch.ones(8, 1, device=DEV),
                    torch.zeros(8))
    with pytest.raises(RuntimeError, match="expected q of dtype torch.float8_e4m3fn or torch.float8_e5m2"):
        linear_fp8(x.to(DEV), torch.zeros(8, 64, dtype=torch.int8, device=DEV), torch.ones(8, 1, device=DEV))
    with pytest.raises(RuntimeError, match="expected x on a CUDA device"):
        linear_int8(x, torch.zeros(8, 64, dtype=torch.int8), torch.ones(8, 1), torch.zeros(8, device=DEV))
    with pytest.raises(RuntimeError, match="expected x with last axis K = 64"):
        linear_int8(torch.randn(2, 63, device=DEV), torch.zeros(8, 64, dtype=torch.int8, device=DEV),
                    torch.ones(8, 1, device=DEV))


# ---------------------------------------------------------------- opcheck / graphs ----

def _op_cases():
    codes, scale, zp = make_intx(24, 256, 4, 64, True)
    packed = pack_bits(codes, 4)
    i8 = torch.randint(-128, 128, (24, 256), dtype=torch.int8)
    s8 = torch.rand(24, 1) + 0.01
    q8 = make_fp8(24, 256, torch.float8_e5m2)
    out = []
    for m, dt in [(3, torch.bfloat16), (100, torch.float16), (2, torch.float32)]:
        x = torch.randn(m, 256).to(dt)
        b = torch.randn(24)
        out += [
            (torch.ops.lowbit.linear_intx.default, (*cuda(x, packed, scale, zp), 4, *cuda(b), False)),
            (torch.ops.lowbit.linear_int8.default, (*cuda(x, i8, s8, b), False)),
            (torch.ops.lowbit.linear_int8.default, (*cuda(x, i8, s8, b), True)),
            (torch.ops.lowbit.linear_fp8.default, tuple(cuda(x, q8, s8, b))),
        ]
    return out


def test_opcheck():
    fp8 = (torch.float8_e4m3fn, torch.float8_e5m2)
    for op, args in _op_cases():
        if any(isinstance(a, torch.Tensor) and a.dtype in fp8 for a in args):
            # torch's schema check compares the inputs before and after the call with allclose,
            # which has no CUDA kernel for float8 (torch 2.11); the other checks run here, and
            # the CPU opcheck of linear_fp8 (tests/ops/test_linear_fp8_gguf.py) runs them all.
            torch.library.opcheck(op, args, test_utils=("test_autograd_registration", "test_faketensor",
                                                        "test_aot_dispatch_dynamic"))
        else:
            torch.library.opcheck(op, args)


def test_cuda_graph_capture_and_replay():
    cases = _op_cases()
    static = [(op, [a.clone() if isinstance(a, torch.Tensor) else a for a in args]) for op, args in cases]
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):  # warm-up outside the capture (caches, cuBLAS handles)
        for op, args in static:
            op(*args)
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        outs = [op(*args) for op, args in static]
    for (op, args), out in zip(static, outs):
        args[0].copy_(torch.randn_like(args[0], dtype=torch.float32).to(args[0].dtype))
    g.replay()
    torch.cuda.synchronize()
    for (op, args), out in zip(static, outs):
        # replayed on the new inputs; cuBLAS paths may pick another algorithm outside the graph
        torch.testing.assert_close(out, op(*args), rtol=2e-2, atol=1e-3, msg=str(op))


# ---------------------------------------------------------------- model level ----

class MLP(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.up = torch.nn.Linear(256, 384)
        self.down = torch.nn.Linear(384, 72)

    def forward(self, x):
        return self.down(F.gelu(self.up(x)))


@pytest.mark.parametrize("weights,group", [("qint4", 64), ("qint2", 32), ("qint8", None), ("qfloat8", None)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_model_on_cuda_matches_cpu_and_saves_across_devices(weights, group, dtype, tmp_path):
    torch.manual_seed(0)
    model = MLP()
    lowbit.quantize(model, weights, group_size=group)
    lowbit.freeze(model)
    model = model.to(dtype)
    x = torch.randn(3, 5, 256).to(dtype)
    with torch.no_grad():
        y_cpu = model(x)
        model_cuda = model.to(DEV)
        assert model_cuda.up.weight.codes.device.type == "cuda"
        y_cuda = model_cuda(x.to(DEV))
        assert lowbit.last_kernels()[{"qint4": "linear_intx", "qint2": "linear_intx", "qint8": "linear_int8",
                                      "qfloat8": "linear_fp8"}[weights]].startswith("cuda_")
    assert rel_err(y_cuda, y_cpu.double()) < (1e-5 if dtype == torch.float32 else 3e-2)
    # saved from CUDA, loaded on the CPU and on CUDA: the same canonical bytes
    lowbit.save(model_cuda, str(tmp_path))
    fresh = MLP().to(dtype)
    lowbit.load(fresh, str(tmp_path))
    assert fresh.up.weight.codes.device.type == "cpu"
    assert torch.equal(fresh.up.weight.codes, model_cuda.up.weight.codes.cpu())
    with torch.no_grad():
        assert torch.equal(fresh(x), y_cpu)
    fresh_cuda = lowbit.load(MLP().to(dtype), str(tmp_path), device=DEV)
    with torch.no_grad():
        assert torch.equal(fresh_cuda(x.to(DEV)), y_cuda)
    # and back to the CPU
    back = model_cuda.to("cpu")
    with torch.no_grad():
        assert torch.equal(back(x), y_cpu)


# ---------------------------------------------------------------- W8A8 modules ----

def _per_token_fake_reference(x, w: "lowbit.QTensor", bias, qmax, to_codes):
    """float64 product of the per-token fake-quantized x (scale = absmax / qmax) and the
    dequantized weight: what the quantized GEMM computes before its output rounding."""
    x64 = x.double().reshape(-1, x.shape[-1])
    s = (x.float().reshape(-1, x.shape[-1]).abs().amax(-1, keepdim=True) / qmax).clamp_min(1e-12)
    xd = to_codes(x.float().reshape(-1, x.shape[-1]).cpu(), s.cpu()).double() * s.cpu().double()
    y = xd @ w.dequantize().double().cpu().T
    if bias is not None:
        y = y + bias.double().cpu()
    assert x64.shape[0] == y.shape[0]
    return y.reshape(*x.shape[:-1], -1)


@pytest.mark.parametrize("m", [1, 3, 16, 17, 64, 65, 300])
def test_w8a8_per_token_modules_run_one_quantized_gemm(m, monkeypatch):
    from lowbit.ops import quantize_fp8
    torch.manual_seed(0)
    calls = []
    real = torch._scaled_mm
    monkeypatch.setattr(torch, "_scaled_mm", lambda *a, **k: calls.append(1) or real(*a, **k))
    x = torch.randn(2, m, 256)
    for act, qmax in (("qint8", 127.0), ("qfloat8", 448.0)):
        model = torch.nn.Sequential(torch.nn.Linear(256, 96))
        lowbit.quantize(model, act, act, activation_granularity="per_token")
        lowbit.freeze(model)
        model = model.to(DEV, torch.bfloat16)
        xb = x.to(DEV, torch.bfloat16)
        calls.clear()
        with torch.no_grad():
            y = model(xb)
        assert y.dtype == torch.bfloat16 and y.shape == (2, m, 96)
        if act == "qint8":
            assert kernel("linear_int8").startswith("cuda_"), kernel("linear_int8")
            codes = lambda t, s: torch.round(t / s).clamp(-127, 127)  # noqa: E731
        else:
            assert calls, "the float8 x float8 GEMM did not run"
            codes = lambda t, s: quantize_fp8(t, s, torch.float8_e4m3fn).float()  # noqa: E731
        ref = _per_token_fake_reference(xb, model[0].weight, model[0].bias, qmax, codes)
        assert rel_err(y, ref) < 1e-2, act
