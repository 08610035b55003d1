"""How fast are lowbit's mixed-precision linear kernels, side by side with torch
F.linear (float32, bfloat16), torch's own weight-only CPU ops, optimum-quanto and
torchao, and against this machine's measured memory bandwidth?

For every weight shape (N, K) and batch size M, every variant (format x implementation
x activation dtype) is checked once against a float64 matmul with its own dequantized
weights (a variant that disagrees is reported, never timed), then all variants are
timed in alternation, each cycling through its own distinct weight copies (>= 256 MB of
float32 weights' worth and >= 4x the L3 cache), so no weight is read from cache.

    PYTHONPATH=python python bench/kernels.py [--quick] [--shapes 4096x4096,...]
        [--m 1,16] [--formats int4,int8] [--threads N] [--isa avx512|avx2|portable] [--peer-f32]

Prints a markdown table and writes bench/out/kernels.{json,md,png}. See bench/README.md.
"""
from __future__ import annotations

import argparse
import gc
import logging
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

import _common as C

try:
    import lowbit
except ImportError:  # a source checkout run without PYTHONPATH=python
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))
    import lowbit
import lowbit.ops as L
from lowbit.tensor.kernels import int8_zero_points

OUT_DIR = Path(__file__).resolve().parent / "out"
SHAPES_FULL = [(4096, 4096), (11008, 4096), (4096, 11008), (14336, 4096)]  # (N, K)
SHAPES_QUICK = [(4096, 4096)]
MS_FULL = [1, 2, 4, 8, 16, 32, 64, 128]
MS_QUICK = [1, 16, 128]
FORMATS = ["fp32", "bf16", "int8", "int4", "int2", "fp8", "q8_0", "q4_0"]
# Formats compared with the same peers: 8-bit weights against the int8 peers, 4-bit
# weights against the int4 peers (int2 has no peer).
PEER_CLASS = {"int8": "8-bit", "fp8": "8-bit", "q8_0": "8-bit", "int4": "4-bit", "q4_0": "4-bit"}
FORMAT_LABEL = {"fp32": "float32", "bf16": "bfloat16", "int8": "int8 per-channel",
                "int4": "int4 g128 asym", "int2": "int2 g64 asym", "fp8": "fp8 e4m3fn per-channel",
                "q8_0": "GGUF Q8_0", "q4_0": "GGUF Q4_0"}
INT4_GROUP, INT2_GROUP = 128, 64
CHECK_ROWS = 256      # output channels compared with the float64 reference
N_X = 4               # distinct activation tensors per configuration
# Relative error ||y - y_ref|| / ||y_ref|| allowed against the dequantized-weight reference.
TOL_F32 = 1e-4        # float32 activations and output, float32 accumulation
TOL_BF16 = 1e-2       # bfloat16 output (or bfloat16 weights inside the kernel)
TOL_INT8_ACT = 5e-2   # activations quantized to int8 inside the kernel
# Largest sane error of a format's output against the float32 weights (Gaussian data;
# the expected figures are ~1% for 8-bit, ~10% for int4 g128, ~50% for int2 g64): it
# catches a peer whose own dequantized reference is as wrong as its output.
MAX_ERR_VS_FLOAT = {"fp32": 1e-4, "bf16": 2e-2, "int8": 5e-2, "fp8": 0.1, "q8_0": 5e-2,
                    "int4": 0.25, "q4_0": 0.25, "int2": 0.8}
BF16, F32 = torch.bfloat16, torch.float32


# ---------------------------------------------------------------------------------
# Variants. A builder gets the shape context and returns the prepared weight (one copy;
# the script clones the rest), the call, and the dequantized rows used as reference.
# ---------------------------------------------------------------------------------

@dataclass
class Prepared:
    weight: object                      # a tensor, a tuple of tensors, or a tensor subclass
    call: Callable                      # call(x, weight) -> y
    ref_rows: torch.Tensor              # float32 [r, K]: its dequantized weight rows ctx.rows[:r]
    kernel_op: str | None = None        # lowbit op whose last_kernels() entry names the kernel
    copies: list = field(default_factory=list)
    bytes: int = 0


@dataclass
class Variant:
    fmt: str
    name: str
    who: str                            # "baseline" | "peer" | "ours"
    act: torch.dtype
    tol: float
    build: Callable                     # build(ctx) -> Prepared
    needs: str | None = None            # "quanto" / "torchao" / a lowbit op name

    @property
    def label(self) -> str:
        return f"{self.fmt} | {self.name} | {_short(self.act)}"


class ShapeCtx:
    """The float weights of one shape, the rows checked, and quantizations shared by variants."""

    def __init__(self, n: int, k: int, seed: int):
        gen = torch.Generator().manual_seed(seed)
        self.n, self.k = n, k
        self.W = torch.randn(n, k, generator=gen)
        self.rows = torch.randperm(n, generator=gen)[:min(CHECK_ROWS, n)].sort().values
        self.W_rows = self.W[self.rows]
        self._cache = {}

    def get(self, key, make):
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]


def _short(dtype) -> str:
    return {F32: "f32", BF16: "bf16", torch.float16: "f16"}[dtype]


def _ours_int8(ctx):
    def make():
        scale, _ = L.choose_qparams_affine(ctx.W, 8, True, axis=0)
        return L.quantize_affine(ctx.W, scale, None, 8), scale
    return ctx.get("int8", make)


def _ours_intx(ctx, bits, group):
    def make():
        scale, zp = L.choose_qparams_affine(ctx.W, bits, False, group_size=group)
        codes = L.quantize_affine(ctx.W, scale, zp, bits)
        # minmax zero points are integers: the kernel gets them as int8, as the model path
        # passes them (docs/kernels.md; 1 byte per group instead of 4)
        return codes, L.pack_bits(codes, bits), scale, zp, int8_zero_points(zp)
    return ctx.get(f"int{bits}", make)


def build_float(dtype):
    def build(ctx):
        w = ctx.W.to(dtype) if dtype != F32 else ctx.W.clone()
        return Prepared(w, lambda x, w: F.linear(x, w), ctx.W_rows.to(dtype).float())
    return build


def build_ours_int8(int8_act):
    def build(ctx):
        codes, scale = _ours_int8(ctx)
        ref = L.dequantize_affine(codes[ctx.rows], scale[ctx.rows], None, F32)
        return Prepared((codes, scale), lambda x, w: L.linear_int8(x, w[0], w[1], None, int8_act),
                        ref, kernel_op="linear_int8")
    return build


def build_ours_intx(bits, group, int8_act):
    def build(ctx):
        codes, packed, scale, zp, zp_kernel = _ours_intx(ctx, bits, group)
        r = ctx.rows
        ref = L.dequantize_affine(codes[r], scale[r], zp[r], F32)
        return Prepared((packed, scale, zp_kernel),
                        lambda x, w: L.linear_intx(x, w[0], w[1], w[2], bits, None, int8_act),
                        ref, kernel_op="linear_intx")
    return build


def build_ours_fp8(dtype):
    def build(ctx):
        scale = L.choose_scale_fp8(ctx.W, dtype, axis=0)
        q = L.quantize_fp8(ctx.W, scale, dtype)
        ref = L.dequantize_fp8(q[ctx.rows], scale[ctx.rows], F32)
        return Prepared((q, scale), lambda x, w: torch.ops.lowbit.linear_fp8(x, w[0], w[1], None),
                        ref, kernel_op="linear_fp8")
    return build


def build_ours_gguf(fmt, int8_act):
    def build(ctx):
        quant, dequant = getattr(L, f"quantize_{fmt}"), getattr(L, f"dequantize_{fmt}")
        op = getattr(torch.ops.lowbit, f"linear_{fmt}")
        blocks = ctx.get(fmt, lambda: quant(ctx.W))
        ref = dequant(blocks[ctx.rows], F32)
        return Prepared(blocks, lambda x, w: op(x, w, None, int8_act), ref, kernel_op=f"linear_{fmt}")
    return build


def build_torch_int8(act):
    def build(ctx):
        codes, scale = _ours_int8(ctx)
        s = scale.flatten().to(act)  # the op wants [N] scales of x's dtype
        ref = codes[ctx.rows].float() * s[ctx.rows].float()[:, None]
        return Prepared((codes, s), lambda x, w: torch.ops.aten._weight_int8pack_mm(x, w[0], w[1]), ref)
    return build


def tinygemm_ref(codes: torch.Tensor, scale_zero: torch.Tensor, group: int) -> torch.Tensor:
    """Dequantized rows of a tinygemm int4 weight, w = (q - 8) * scale + zero, from the
    unsigned codes q [rows, K] and the [K / group, rows, 2] (scale, zero) tensor."""
    scale = scale_zero[..., 0].t().float().repeat_interleave(group, dim=1)
    zero = scale_zero[..., 1].t().float().repeat_interleave(group, dim=1)
    return (codes.float() - 8) * scale + zero


def build_torch_int4(act):
    def build(ctx):
        codes, _, scale, zp, _ = _ours_intx(ctx, 4, INT4_GROUP)
        q = codes.to(torch.int32) + 8  # unsigned 0..15; W = (q - 8) * s + (-zp * s)
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 1)
        sz = torch.stack([scale, -zp * scale], dim=-1).transpose(0, 1).contiguous().to(act)
        ref = tinygemm_ref(q[ctx.rows], sz[:, ctx.rows], INT4_GROUP)
        return Prepared((packed, sz), lambda x, w: torch.ops.aten._weight_int4pack_mm_for_cpu(
            x, w[0], INT4_GROUP, w[1]), ref)
    return build


def _float_linear_module(w_float, dtype):
    n, k = w_float.shape
    lin = torch.nn.utils.skip_init(torch.nn.Linear, k, n, bias=False, dtype=dtype)
    lin.weight.data = w_float.to(dtype)
    lin.requires_grad_(False)
    return lin


def _peer_ref(ctx, quant, w, act):
    """Dequantized reference rows of a peer's quantized weight `w = quant(W)`.

    Most peers have a dequantize() in plain torch. The tinygemm int4 layouts (quanto
    qint4, torchao int4 on CPU) are opaque and only unpack through the int4 mm kernel,
    so the rows checked are quantized again on their own (the peers quantize row by row;
    their (scale, zero) must equal those of the full weight) and read back by a matmul
    with the identity. That kernel itself is checked against our codes in the row of
    torch's `_weight_int4pack_mm_for_cpu`, and `check` bounds the error of these weights
    against the float ones, so a peer's broken packing cannot pass unnoticed.
    """
    sz = _tinygemm_scale_zero(w)
    if sz is None:
        return w.dequantize()[ctx.rows].float()
    # The identity matmul costs K * K * rows MACs: with float32 activations the kernel is
    # a scalar loop, so fewer rows are checked there.
    r = len(ctx.rows) if act != F32 else min(32, len(ctx.rows))
    w_sub = quant(ctx.W_rows[:r])
    sz_sub = _tinygemm_scale_zero(w_sub)
    if sz_sub is None or not torch.equal(sz_sub, sz[:, ctx.rows[:r]]):
        raise RuntimeError("quantizing the checked rows alone gives other (scale, zero) than the full weight")
    eye = torch.eye(ctx.k, dtype=act)
    return F.linear(eye, w_sub).t().float()


def _tinygemm_scale_zero(w):
    """The [K / group, N, 2] (scale, zero) tensor of a tinygemm-packed peer weight, else None."""
    for name in ("_scale_shift", "scale_and_zero"):  # optimum-quanto, torchao
        sz = getattr(w, name, None)
        if isinstance(sz, torch.Tensor) and sz.dim() == 3:
            return sz
    return None


def build_quanto(qtype_name, act):
    def quant(w_float):
        from optimum.quanto import freeze, quantize, qint4, qint8
        model = torch.nn.Sequential(_float_linear_module(w_float, act))
        quantize(model, weights={"qint8": qint8, "qint4": qint4}[qtype_name])
        freeze(model)
        return _unparam(model[0].weight)

    def build(ctx):
        w = quant(ctx.W)
        return Prepared(w, lambda x, w: F.linear(x, w), _peer_ref(ctx, quant, w, act))
    return build


def build_torchao(config_name, act):
    def quant(w_float):
        from torchao.quantization import quantize_
        lin = _float_linear_module(w_float, act)
        quantize_(lin, _torchao_config(config_name))
        return _unparam(lin.weight)

    def build(ctx):
        w = quant(ctx.W)
        return Prepared(w, lambda x, w: F.linear(x, w), _peer_ref(ctx, quant, w, act))
    return build


def _unparam(w):
    return w.data if isinstance(w, torch.nn.Parameter) else w


def _torchao_config(name):
    if name == "int4":  # the CPU (tinygemm) int4 layout lives in torchao's prototype
        from torchao.prototype.quantization.int4 import PrototypeInt4WeightOnlyConfig
        return PrototypeInt4WeightOnlyConfig(group_size=INT4_GROUP, set_inductor_config=False)
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, Int8WeightOnlyConfig
    cls = Int8WeightOnlyConfig if name == "int8" else Int8DynamicActivationInt8WeightConfig
    try:
        return cls(set_inductor_config=False)
    except TypeError:
        return cls()


def all_variants(peer_acts) -> list[Variant]:
    v = [Variant("fp32", "F.linear", "baseline", F32, TOL_F32, build_float(F32)),
         Variant("bf16", "F.linear", "baseline", BF16, TOL_BF16, build_float(BF16))]
    for act in peer_acts:
        tol = TOL_F32 if act == F32 else TOL_BF16
        v += [Variant("int8", "torch _weight_int8pack_mm", "peer", act, tol, build_torch_int8(act)),
              Variant("int8", "quanto qint8", "peer", act, max(tol, TOL_BF16), build_quanto("qint8", act), "quanto"),
              Variant("int8", "torchao int8 weight-only", "peer", act, max(tol, TOL_BF16),
                      build_torchao("int8", act), "torchao"),
              Variant("int8", "torchao int8 dyn-act (W8A8)", "peer", act, TOL_INT8_ACT,
                      build_torchao("int8dyn", act), "torchao")]
    v += [Variant("int8", "ours W8A16", "ours", F32, TOL_F32, build_ours_int8(False), "linear_int8"),
          Variant("int8", "ours W8A16", "ours", BF16, TOL_BF16, build_ours_int8(False), "linear_int8"),
          Variant("int8", "ours W8A8", "ours", F32, TOL_INT8_ACT, build_ours_int8(True), "linear_int8")]
    for act in peer_acts:
        tol = TOL_F32 if act == F32 else TOL_BF16
        v += [Variant("int4", "torch _weight_int4pack_mm_for_cpu", "peer", act, tol, build_torch_int4(act)),
              Variant("int4", "quanto qint4", "peer", act, max(tol, TOL_BF16), build_quanto("qint4", act), "quanto"),
              Variant("int4", "torchao int4 weight-only", "peer", act, max(tol, TOL_BF16),
                      build_torchao("int4", act), "torchao")]
    v += [Variant("int4", "ours W4A16 exact", "ours", F32, TOL_F32, build_ours_intx(4, INT4_GROUP, False), "linear_intx"),
          Variant("int4", "ours W4A16 exact", "ours", BF16, TOL_BF16, build_ours_intx(4, INT4_GROUP, False), "linear_intx"),
          Variant("int4", "ours W4A16 int8-act", "ours", F32, TOL_INT8_ACT, build_ours_intx(4, INT4_GROUP, True), "linear_intx"),
          Variant("int2", "ours W2A16 exact", "ours", F32, TOL_F32, build_ours_intx(2, INT2_GROUP, False), "linear_intx"),
          Variant("int2", "ours W2A16 int8-act", "ours", F32, TOL_INT8_ACT, build_ours_intx(2, INT2_GROUP, True), "linear_intx"),
          Variant("fp8", "ours fp8 e4m3fn", "ours", F32, TOL_F32, build_ours_fp8(torch.float8_e4m3fn), "linear_fp8")]
    for fmt in ("q8_0", "q4_0"):
        v += [Variant(fmt, f"ours {fmt} int8-act", "ours", F32, TOL_INT8_ACT, build_ours_gguf(fmt, True), f"linear_{fmt}"),
              Variant(fmt, f"ours {fmt} exact", "ours", F32, TOL_F32, build_ours_gguf(fmt, False), f"linear_{fmt}")]
    return v


# ---------------------------------------------------------------------------------
# What can run here: peer libraries and lowbit ops (some may be declared, not written).
# ---------------------------------------------------------------------------------

def probe_peer_libs() -> dict:
    """{"quanto": None | why not, "torchao": None | why not}."""
    logging.getLogger("torchao").setLevel(logging.ERROR)
    out = {}
    for key, module in (("quanto", "optimum.quanto"), ("torchao", "torchao.quantization")):
        try:
            __import__(module)
            out[key] = None
        except Exception as e:  # noqa: BLE001  (any import failure: report and go on)
            out[key] = f"import {module} failed: {C.first_line(e)}"
    return out


def probe_lowbit_ops(ops) -> dict:
    """{op: None if it runs on CPU, else why not}: hasattr AND a small try-call."""
    torch.manual_seed(1)
    n, k = 64, 256
    w, x = torch.randn(n, k), torch.randn(3, k)
    calls = {
        "linear_int8": lambda: L.linear_int8(x, *_probe_int8(w)),
        "linear_intx": lambda: L.linear_intx(x, *_probe_intx(w), 4),
        "linear_fp8": lambda: torch.ops.lowbit.linear_fp8(x, *_probe_fp8(w), None),
        "linear_q8_0": lambda: torch.ops.lowbit.linear_q8_0(x, L.quantize_q8_0(w), None, True),
        "linear_q4_0": lambda: torch.ops.lowbit.linear_q4_0(x, L.quantize_q4_0(w), None, True),
    }
    out = {}
    for op in ops:
        if not hasattr(torch.ops.lowbit, op):
            out[op] = "not in torch.ops.lowbit"
            continue
        try:
            y = calls[op]()
            out[op] = None if tuple(y.shape) == (3, n) else f"wrong output shape {tuple(y.shape)}"
        except Exception as e:  # noqa: BLE001
            out[op] = ("no CPU kernel: " if C.is_missing_kernel(e) else "error: ") + C.first_line(e)
    return out


def _probe_int8(w):
    s, _ = L.choose_qparams_affine(w, 8, True, axis=0)
    return L.quantize_affine(w, s, None, 8), s


def _probe_intx(w):
    s, zp = L.choose_qparams_affine(w, 4, False, group_size=128)
    return L.pack_bits(L.quantize_affine(w, s, zp, 4), 4), s, zp


def _probe_fp8(w):
    s = L.choose_scale_fp8(w, torch.float8_e4m3fn, axis=0)
    return L.quantize_fp8(w, s, torch.float8_e4m3fn), s


# ---------------------------------------------------------------------------------

def rel_err(y: torch.Tensor, ref: torch.Tensor) -> float:
    d = (y - ref).norm().item()
    r = ref.norm().item()
    return d / r if r > 0 else d


def check(variant: Variant, prep: Prepared, y, x, ctx) -> tuple[bool, str, float | None, float | None]:
    """(ok, message, error vs dequantized reference, error vs the float32 weights)."""
    m = x.shape[0]
    if not isinstance(y, torch.Tensor) or tuple(y.shape) != (m, ctx.n) or y.dtype != variant.act:
        what = f"{y.dtype}{list(y.shape)}" if isinstance(y, torch.Tensor) else type(y).__name__
        return False, f"output {what}, expected {variant.act}{[m, ctx.n]}", None, None
    r = prep.ref_rows.shape[0]
    ys = y[:, ctx.rows[:r]].double()
    if not torch.isfinite(ys).all():
        return False, "non-finite output", None, None
    xd = x.double()
    err = rel_err(ys, xd @ prep.ref_rows.double().t())
    qerr = rel_err(ys, xd @ ctx.W_rows[:r].double().t())
    if not err <= variant.tol:
        return False, f"error {err:.2e} vs dequantized reference > {variant.tol:g}", err, qerr
    if not qerr <= MAX_ERR_VS_FLOAT[variant.fmt]:
        return False, f"error {qerr:.2e} vs the float32 weights > {MAX_ERR_VS_FLOAT[variant.fmt]:g}", err, qerr
    return True, "ok", err, qerr


def prepare_shape(ctx, variants, skip_why, failed) -> dict:
    """Builds each variant's weight and its copies; returns {variant index: Prepared} and
    records {variant index: why} in `failed` for those that could not be built."""
    f32_bytes = ctx.n * ctx.k * 4
    out = {}
    for i, v in enumerate(variants):
        if v.label in skip_why:
            continue
        t0 = time.perf_counter()
        try:
            prep = v.build(ctx)
        except Exception as e:  # noqa: BLE001  (a peer that cannot quantize this: say why, go on)
            failed[i] = f"build failed: {C.first_line(e)}"
            print(f"  SKIPPED {v.label} on {ctx.n}x{ctx.k}: {failed[i]}", flush=True)
            continue
        prep.bytes = C.storage_bytes(prep.weight)
        n_copies = C.weight_copies(prep.bytes, float32_bytes=f32_bytes)
        prep.copies = [prep.weight] + [C.clone_tensor(prep.weight) for _ in range(n_copies - 1)]
        first = _leaf(prep.copies[0])
        if n_copies > 1 and _leaf(prep.copies[1]).data_ptr() == first.data_ptr():
            print(f"  WARNING {v.label}: weight copies share memory (timed from cache)", flush=True)
        out[i] = prep
        print(f"  built {v.label}: {prep.bytes / 1e6:.1f} MB x {n_copies} copies "
              f"({time.perf_counter() - t0:.1f} s)", flush=True)
    return out


def _leaf(w) -> torch.Tensor:
    if isinstance(w, (tuple, list)):
        return _leaf(w[0])
    if type(w) is not torch.Tensor and hasattr(w, "__tensor_flatten__"):
        names, _ = w.__tensor_flatten__()
        return _leaf(getattr(w, names[0]))
    return w


def run_config(ctx, m, variants, preps, failed, timing, too_slow, max_call_s) -> list[dict]:
    """Checks, then times in alternation, every prepared variant at batch size m."""
    gen = torch.Generator().manual_seed(1000 + m)
    xs32 = [torch.randn(m, ctx.k, generator=gen) for _ in range(N_X)]
    xs = {F32: xs32, BF16: [x.to(BF16) for x in xs32]}
    rows, live = [], []
    for i, why in failed.items():
        v = variants[i]
        rows.append({"format": v.fmt, "variant": v.name, "who": v.who, "act": _short(v.act), "M": m,
                     "N": ctx.n, "K": ctx.k, "weight_bytes": None, "copies": 0, "ms": None, "check": why,
                     "err": None, "err_vs_float": None, "kernel": None})
    for i, prep in preps.items():
        v = variants[i]
        row = {"format": v.fmt, "variant": v.name, "who": v.who, "act": _short(v.act), "M": m,
               "N": ctx.n, "K": ctx.k, "weight_bytes": prep.bytes, "copies": len(prep.copies),
               "ms": None, "check": None, "err": None, "err_vs_float": None, "kernel": None}
        rows.append(row)
        if i in too_slow:
            row["check"] = f"skipped: too slow ({too_slow[i]})"
            continue
        x0 = xs[v.act][0]
        try:
            t0 = time.perf_counter()
            y = prep.call(x0, prep.copies[0])
            first_s = time.perf_counter() - t0
            ok, msg, row["err"], row["err_vs_float"] = check(v, prep, y, x0, ctx)
        except Exception as e:  # noqa: BLE001
            ok, msg = False, "error: " + C.first_line(e)
        if prep.kernel_op and ok:
            row["kernel"] = lowbit.last_kernels().get(prep.kernel_op)
        row["check"] = msg
        if not ok:
            print(f"  NOT TIMED {v.label} M={m} {ctx.n}x{ctx.k}: {msg}", flush=True)
            continue
        if first_s > max_call_s:
            too_slow[i] = f"{first_s:.1f} s per call at M={m}"
            print(f"  {v.label}: {first_s:.1f} s per call at M={m}: timed with few repetitions, "
                  f"skipped at larger M of {ctx.n}x{ctx.k}", flush=True)
        live.append((row, v, prep))
    if live:
        fns = [prep.call for _, _, prep in live]
        sets = [[(xs[v.act][j % N_X], prep.copies[j]) for j in range(len(prep.copies))]
                for _, v, prep in live]
        meds, times = C.time_interleaved_sets(fns, sets, **timing)
        for (row, v, prep), med, ts in zip(live, meds, times):
            row.update(ms=med * 1e3, min_ms=min(ts) * 1e3, reps=len(ts))
    return rows


def add_ratios(rows, read_bw) -> None:
    """Speed-up over F.linear float32 and over the fastest peer of the same class, and
    effective weight-read bandwidth, per row."""
    by_cfg = {}
    for r in rows:
        by_cfg.setdefault((r["N"], r["K"], r["M"]), []).append(r)
    for group in by_cfg.values():
        base = next((r["ms"] for r in group if r["format"] == "fp32" and r["ms"]), None)
        best_peer = {}
        for r in group:
            cls = PEER_CLASS.get(r["format"])
            if r["who"] == "peer" and r["ms"] and cls:
                if cls not in best_peer or r["ms"] < best_peer[cls][0]:
                    best_peer[cls] = (r["ms"], f"{r['variant']} ({r['act']})")
        for r in group:
            ms = r["ms"]
            peer = best_peer.get(PEER_CLASS.get(r["format"]))
            r["vs_fp32"] = base / ms if ms and base else None
            r["vs_best_peer"] = peer[0] / ms if ms and peer else None
            r["best_peer"] = peer[1] if peer else None
            r["gbps"] = r["weight_bytes"] / (ms * 1e-3) / 1e9 if ms else None
            r["frac_bw"] = r["gbps"] / read_bw if ms else None


# ---------------------------------------------------------------------------------
# Targets of issue 4 (on >= the shapes run), evaluated from the rows.
# ---------------------------------------------------------------------------------

def _best(rows, pred):
    cands = [r for r in rows if r["ms"] and pred(r)]
    return min(cands, key=lambda r: r["ms"]) if cands else None


def evaluate_targets(rows) -> list[str]:
    lines = []
    shapes = sorted({(r["N"], r["K"]) for r in rows}, key=lambda s: SHAPES_FULL.index(s) if s in SHAPES_FULL else 99)

    def verdict(name, value, target, unit, detail=""):
        if value is None:
            return f"- {name}: not measured"
        ok = value >= target
        miss = "" if ok else f", MISSED by {100 * (1 - value / target):.0f}%"
        shown = f"{value:.0f}" if unit == "%" else f"{value:.2f}"
        return f"- {name}: {shown}{unit} (target >= {target:g}{unit}{miss}){' ' + detail if detail else ''}"

    for n, k in shapes:
        cfg = [r for r in rows if r["N"] == n and r["K"] == k]
        at = lambda m: [r for r in cfg if r["M"] == m]  # noqa: E731
        lines.append(f"\n{n}x{k}:")
        r1 = at(1)
        if r1:
            b = _best(r1, lambda r: r["who"] == "ours" and r["format"] == "int4")
            lines.append(verdict("M=1 W4A16 g128 (best of ours) x F.linear fp32", b and b["vs_fp32"], 5, "x",
                                 b and f"[{b['variant']} {b['act']}]"))
            lines.append(verdict("M=1 W4A16 g128 (best of ours) % of read bandwidth",
                                 b and 100 * b["frac_bw"], 70, "%"))
            b = _best(r1, lambda r: r["who"] == "ours" and r["format"] == "int4" and "exact" in r["variant"])
            lines.append(verdict("M=1 W4A16 exact float-activation path x F.linear fp32", b and b["vs_fp32"], 2.5, "x",
                                 b and f"[{b['act']}]"))
            b = _best(r1, lambda r: r["who"] == "ours" and r["variant"] == "ours W8A16")
            lines.append(verdict("M=1 W8A16 x F.linear fp32", b and b["vs_fp32"], 3.5, "x", b and f"[{b['act']}]"))
            b = _best(r1, lambda r: r["who"] == "ours" and r["format"] == "q4_0")
            lines.append(verdict("M=1 Q4_0 x F.linear fp32", b and b["vs_fp32"], 5, "x", b and f"[{b['variant']}]"))
            b = _best(r1, lambda r: r["who"] == "ours" and r["format"] == "int4")
            lines.append(verdict("M=1 int4 (best of ours) x fastest int4 peer", b and b["vs_best_peer"], 1.5, "x",
                                 b and b["best_peer"] and f"[peer: {b['best_peer']}]"))
        for fmt in ("int8", "int4"):
            worst = None
            for m in sorted({r["M"] for r in cfg if r["M"] <= 16}):
                b = _best(at(m), lambda r: r["who"] == "ours" and r["format"] == fmt)
                if b and b["vs_best_peer"] is not None and (worst is None or b["vs_best_peer"] < worst[0]):
                    worst = (b["vs_best_peer"], m, b["best_peer"])
            if worst:
                lines.append(verdict(f"M<=16 {fmt} (best of ours) x fastest {fmt} peer, worst M", worst[0], 1, "x",
                                     f"[M={worst[1]}, peer: {worst[2]}]"))
        r128 = at(128)
        if r128:
            b = _best(r128, lambda r: r["who"] == "ours" and r["variant"] == "ours W8A8")
            lines.append(verdict("M=128 W8A8 x F.linear fp32", b and b["vs_fp32"], 1.3, "x"))
    return lines


# ---------------------------------------------------------------------------------

COLUMNS = [("format", "format"), ("variant", "variant"), ("act", "act"), ("M", "M"),
           ("ms", "median ms"), ("vs_fp32", "x F.linear fp32"), ("vs_best_peer", "x best peer"),
           ("weight_mb", "weight MB"), ("gbps", "weight GB/s"), ("pct_bw", "% read BW"),
           ("err", "err vs deq"), ("err_vs_float", "err vs fp32 W"), ("kernel", "kernel"),
           ("note", "check")]


def markdown(rows, variants_order) -> str:
    order = {lbl: i for i, lbl in enumerate(variants_order)}
    out = []
    for n, k in sorted({(r["N"], r["K"]) for r in rows}, key=lambda s: SHAPES_FULL.index(s) if s in SHAPES_FULL else 99):
        sel = [r for r in rows if r["N"] == n and r["K"] == k]
        sel.sort(key=lambda r: (r["M"], order.get(f"{r['format']} | {r['variant']} | {r['act']}", 99)))
        table_rows = [dict(r, weight_mb=None if r["weight_bytes"] is None else r["weight_bytes"] / 1e6,
                           pct_bw=None if r.get("frac_bw") is None else 100 * r["frac_bw"],
                           err=None if r["err"] is None else float(f"{r['err']:.1e}"),
                           err_vs_float=None if r["err_vs_float"] is None else float(f"{r['err_vs_float']:.1e}"),
                           note="" if r["check"] == "ok" else r["check"])
                      for r in sel]
        out.append(f"\n### N x K = {n} x {k}\n")
        out.append(C.markdown_table(table_rows, COLUMNS))
    return "\n".join(out)


def plot(rows, path) -> str | None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib import ticker
    except Exception as e:  # noqa: BLE001
        return f"no plot: matplotlib unavailable ({C.first_line(e)})"
    shapes = sorted({(r["N"], r["K"]) for r in rows if r.get("vs_fp32")},
                    key=lambda s: SHAPES_FULL.index(s) if s in SHAPES_FULL else 99)
    fmts = [f for f in FORMATS if f != "fp32" and any(r["format"] == f and r.get("vs_fp32") for r in rows)]
    ms = sorted({r["M"] for r in rows})
    if not shapes or not fmts:
        return "no plot: nothing timed"
    fig, axes = plt.subplots(len(shapes), len(fmts), figsize=(3.6 * len(fmts), 3.0 * len(shapes)),
                             squeeze=False, sharex=True)
    style = {"ours": "-", "peer": "--", "baseline": ":"}
    for i, (n, k) in enumerate(shapes):
        for j, fmt in enumerate(fmts):
            ax = axes[i][j]
            sel = [r for r in rows if r["N"] == n and r["K"] == k and r["format"] == fmt and r.get("vs_fp32")]
            for key in dict.fromkeys((r["variant"], r["act"], r["who"]) for r in sel):
                pts = sorted((r["M"], r["vs_fp32"]) for r in sel if (r["variant"], r["act"], r["who"]) == key)
                ax.plot([p[0] for p in pts], [p[1] for p in pts], style[key[2]], marker="o", markersize=3,
                        label=f"{key[0]} ({key[1]})")
            ax.axhline(1.0, color="gray", linewidth=0.8)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xticks(ms)
            ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
            ax.yaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
            ax.yaxis.set_minor_formatter(ticker.NullFormatter())
            ax.set_title(f"{FORMAT_LABEL[fmt]}, {n}x{k}", fontsize=9)
            if i == len(shapes) - 1:
                ax.set_xlabel("M")
            if j == 0:
                ax.set_ylabel("speed-up vs F.linear fp32")
            ax.legend(fontsize=6)
            ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


def parse_shapes(text):
    out = []
    for part in text.split(","):
        n, k = part.lower().split("x")
        out.append((int(n), int(k)))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="M in {1,16,128}, 4096x4096 only, few repetitions")
    p.add_argument("--shapes", default=None, help="comma-separated NxK weight shapes, e.g. 4096x4096,14336x4096")
    p.add_argument("--m", default=None, help="comma-separated batch sizes M")
    p.add_argument("--formats", default=None,
                   help=f"comma-separated formats among {','.join(FORMATS)} (fp32, the reference, always runs)")
    p.add_argument("--peer-f32", action="store_true",
                   help="also run the peers with float32 activations (their kernels are bfloat16; slow)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    p.add_argument("--isa", choices=["avx512", "avx2", "portable"], default=None, help="force lowbit's CPU kernels")
    p.add_argument("--target-s", type=float, default=None, help="timed seconds per variant and configuration (default 0.25; --quick 0.03)")
    p.add_argument("--max-call-s", type=float, default=1.5,
                   help="a variant slower than this per call is timed with few repetitions and skipped "
                        "at larger M of the same shape")
    p.add_argument("--budget-min", type=float, default=12.0,
                   help="when the run falls behind this budget (minutes, in proportion of the work "
                        "done), the remaining configurations are timed with fewer repetitions")
    p.add_argument("--fresh-pages", action="store_true", help="keep glibc's default of unmapping big freed blocks")
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("--out", type=Path, default=OUT_DIR, help="folder for kernels.json/.md/.png")
    args = p.parse_args(argv)

    shapes = parse_shapes(args.shapes) if args.shapes else (SHAPES_QUICK if args.quick else SHAPES_FULL)
    ms = [int(m) for m in args.m.split(",")] if args.m else (MS_QUICK if args.quick else MS_FULL)
    fmts = FORMATS if not args.formats else ["fp32"] + [f.strip() for f in args.formats.split(",") if f.strip()]
    unknown = [f for f in fmts if f not in FORMATS]
    if unknown:
        print(f"unknown format(s) {unknown}; known: {FORMATS}", file=sys.stderr)
        return 2
    timing = (dict(warmup=1, min_reps=3, max_reps=10, target_s=args.target_s or 0.03, max_fn_s=1.0)
              if args.quick else
              dict(warmup=1, min_reps=7, max_reps=40, target_s=args.target_s or 0.25, max_fn_s=2.0))
    timing_initial = dict(timing)

    reuse = False if args.fresh_pages else C.reuse_freed_memory()
    threads = C.set_threads(args.threads)
    if args.isa:
        lowbit.set_cpu_isa(args.isa)
    start = time.perf_counter()
    info = C.machine_info()
    bw_before = C.measure_read_bandwidth(512 << 20)
    print(f"# lowbit kernels: {info['cpu']}, {threads} threads, ISA {info['lowbit_isa']}, "
          f"read bandwidth {bw_before['gbps']:.1f} GB/s ({bw_before['method']})", flush=True)
    load = info["load_avg_1_5_15"]
    busy = bool(load and load[0] > 0.5 * (info["cores"] or 1))
    if busy:
        print(f"WARNING: the machine is busy (load average {load[0]} on {info['cores']} cores): "
              "other processes will slow and scatter these figures (a parallel op whose thread is "
              "descheduled waits a scheduler tick, several ms; --threads 1 is steadier)", flush=True)

    peer_acts = [BF16, F32] if args.peer_f32 else [BF16]
    variants = [v for v in all_variants(peer_acts) if v.fmt in fmts]
    libs = probe_peer_libs()
    ops = probe_lowbit_ops(sorted({v.needs for v in variants if v.needs and v.needs.startswith("linear_")}))
    unavailable = {**{k: why for k, why in libs.items() if why}, **{k: why for k, why in ops.items() if why}}
    skip_why = {v.label: unavailable[v.needs] for v in variants if v.needs in unavailable}
    for what, why in unavailable.items():
        print(f"SKIPPED {what}: {why}", flush=True)

    def work(n, k, m):  # rough cost of one configuration: weight traffic plus compute
        return n * k * (m + 8)
    total_work, done_work, timed_s, lean_from = sum(work(n, k, m) for n, k in shapes for m in ms), 0, 0.0, None
    budget_s = 60 * args.budget_min
    rows = []
    for si, (n, k) in enumerate(shapes):
        t_shape = time.perf_counter()
        print(f"\n## {n} x {k}", flush=True)
        ctx = ShapeCtx(n, k, seed=si)
        failed = {}
        preps = prepare_shape(ctx, variants, skip_why, failed)
        too_slow = {}
        for m in ms:
            t_cfg = time.perf_counter()
            # behind schedule: the configurations timed so far took more than their share of
            # the budget (80% of it goes to timing, the rest to building weights)
            if lean_from is None and timed_s > 30 + 0.8 * budget_s * done_work / total_work:
                lean_from = f"{n}x{k} M={m}"
                timing = dict(timing, min_reps=3, target_s=timing["target_s"] / 3, max_fn_s=timing["max_fn_s"] / 2)
                print(f"  behind the {args.budget_min:g}-minute budget: fewer repetitions from here on "
                      f"({timing})", flush=True)
            cfg_rows = run_config(ctx, m, variants, preps, failed, timing, too_slow, args.max_call_s)
            timed_s += time.perf_counter() - t_cfg
            done_work += work(n, k, m)
            rows += cfg_rows
            base = next((r["ms"] for r in cfg_rows if r["format"] == "fp32" and r["ms"]), None)
            summary = ", ".join(f"{r['variant']}/{r['act']} {r['ms']:.2f}" + (f" ({base / r['ms']:.1f}x)" if base else "")
                                for r in cfg_rows if r["ms"] and r["format"] != "fp32")
            print(f"  M={m}: fp32 {base and f'{base:.2f}'} ms; {summary} [{time.perf_counter() - t_cfg:.1f} s]",
                  flush=True)
        del preps, ctx
        gc.collect()
        C.release_freed_memory()
        print(f"  ({time.perf_counter() - t_shape:.0f} s for {n}x{k})", flush=True)

    bw_after = C.measure_read_bandwidth(512 << 20)
    read_bw = max(bw_before["gbps"], bw_after["gbps"])
    add_ratios(rows, read_bw)
    elapsed = time.perf_counter() - start

    header = C.machine_markdown(info, {
        "read bandwidth": f"{read_bw:.1f} GB/s (best of before {bw_before['gbps']:.1f} / after "
                          f"{bw_after['gbps']:.1f}, {bw_before['method']} over {bw_before['bytes'] >> 20} MiB)",
        "busy": "YES, load average at start " + str(load) + ": figures unreliable" if busy else "no",
        "peers": "; ".join(f"{k}: {'ok' if not why else why}" for k, why in libs.items()) +
                 f"; activations of peers: {', '.join(_short(a) for a in peer_acts)}",
        "lowbit ops": "; ".join(f"{k}: {'ok' if not why else why}" for k, why in ops.items()),
        "run": f"{'--quick ' if args.quick else ''}{elapsed:.0f} s; medians over each variant's own weight "
               f"copies (>= 256 MB of float32 weights and >= {C.CACHE_FLUSH_FACTOR}x L3 per variant)" +
               (f"; fewer repetitions from {lean_from} on (behind the time budget)" if lean_from else ""),
    })
    not_timed = [f"{r['format']} | {r['variant']} | {r['act']} M={r['M']} {r['N']}x{r['K']}: {r['check']}"
                 for r in rows if r["ms"] is None]
    targets = evaluate_targets(rows)
    md = ("# lowbit linear kernels vs F.linear and peers\n\n" + header + "\n" +
          "\nx F.linear fp32 = F.linear fp32 ms / this ms; x best peer = fastest peer of the same class "
          "(8-bit: int8 peers, 4-bit: int4 peers) ms / this ms; weight GB/s = weight bytes / median; "
          "err = relative error against the variant's own dequantized weights (float64). See bench/README.md.\n"
          + markdown(rows, [v.label for v in variants]) +
          "\n\n## Targets (issue 4)\n" + "\n".join(targets) +
          f"\n\n## Not timed: {len(not_timed)}\n" + "".join(f"- {t}\n" for t in not_timed))
    print()
    print(md)
    args.out.mkdir(parents=True, exist_ok=True)
    C.write_markdown(args.out / "kernels.md", md)
    plot_note = None if args.no_plot else plot(rows, args.out / "kernels.png")
    if plot_note:
        print(plot_note)
    C.write_json(args.out / "kernels.json", {
        "machine": info, "threads": threads, "quick": args.quick, "shapes": shapes, "ms": ms,
        "formats": fmts, "peer_acts": [_short(a) for a in peer_acts], "allocator_reuses_freed_memory": reuse,
        "read_bandwidth": {"gbps": read_bw, "before": bw_before, "after": bw_after},
        "machine_busy_at_start": busy, "timing_initial": timing_initial, "timing": timing, "lean_timing_from": lean_from, "peer_libs": libs, "lowbit_ops": ops,
        "tolerances": {"f32": TOL_F32, "bf16": TOL_BF16, "int8_act": TOL_INT8_ACT},
        "check_rows": CHECK_ROWS, "elapsed_s": elapsed, "targets": targets, "rows": rows,
    })
    outs = "kernels.json, kernels.md" + ("" if args.no_plot or plot_note else ", kernels.png")
    print(f"\nwrote {outs} in {args.out} ({elapsed:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
