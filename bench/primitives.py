"""How fast are lowbit's quantization primitives, against eager PyTorch and against
this machine's memory bandwidth?

For every op, configuration and size, times `lowbit.ops.<op>` and an eager-PyTorch
implementation of the same math in the same run, after checking once that both give
the same result (a mismatching op is reported, never timed). Inputs rotate through
distinct sets that together exceed the last-level cache several times over.

    PYTHONPATH=python python bench/primitives.py [--quick] [--ops SUBSTR[,SUBSTR]]
                                                 [--threads N] [--isa avx2|portable]

Prints a markdown table and writes bench/out/primitives.{json,md}. See bench/README.md.
"""
from __future__ import annotations

import argparse
import gc
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

import _common as C

try:
    import lowbit
except ImportError:  # a source checkout run without PYTHONPATH=python
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))
    import lowbit

OUT_DIR = Path(__file__).resolve().parent / "out"
FP8 = torch.float8_e4m3fn
SHAPES_FULL = [(256, 4096), (4096, 4096), (16384, 4096)]  # 1M, 16M, 64M elements
SHAPES_QUICK = [(64, 1024), (256, 4096)]
GROUP = 128


def qrange(bits: int) -> tuple[int, int]:
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


# ---------------------------------------------------------------------------------
# Eager PyTorch, the same math as the ops (docs/formats.md, COMMON numerics). Written
# as a competent user would: views instead of copies, one promoted op where PyTorch
# can fuse the dtype conversion, in-place ops on temporaries.
# ---------------------------------------------------------------------------------

def _reduce_view(x: torch.Tensor, axis, group_size) -> torch.Tensor:
    """x viewed so that each parameter reduces over the last dim (2-D inputs here)."""
    if group_size is not None:
        return x.view(*x.shape[:-1], x.shape[-1] // group_size, group_size)
    if axis is not None:
        assert x.dim() == 2 and axis in (0, -2), "eager reference covers per-row parameters"
        return x
    return x.reshape(1, -1)


def _param_shape(x: torch.Tensor, axis, group_size) -> list[int]:
    if group_size is not None:
        return [*x.shape[:-1], x.shape[-1] // group_size]
    if axis is not None:
        return [s if d == axis % x.dim() else 1 for d, s in enumerate(x.shape)]
    return [1] * x.dim()


def _absmax(v: torch.Tensor) -> torch.Tensor:
    mn, mx = torch.aminmax(v, dim=-1, keepdim=True)  # one pass, no |x| temporary
    return torch.maximum(-mn, mx).float().abs_()  # abs_: +0.0, never -0.0, for an all-zero row


def eager_choose_qparams_affine(x, bits, symmetric, axis=None, group_size=None):
    qmin, qmax = qrange(bits)
    v = _reduce_view(x, axis, group_size)
    shape = _param_shape(x, axis, group_size)
    if symmetric:
        scale = _absmax(v) / qmax
        return scale.view(shape), torch.zeros(shape)
    mn, mx = torch.aminmax(v, dim=-1, keepdim=True)
    mn, mx = mn.float().clamp_(max=0), mx.float().clamp_(min=0)  # the range holds 0
    scale = (mx - mn) / (qmax - qmin)
    zero_point = qmin - torch.round(mn / scale)
    return scale.view(shape), zero_point.view(shape)


def _grouped(t: torch.Tensor, scale: torch.Tensor):
    """(t, scale) viewed so that they broadcast: per-group scales [..., K/g] -> [..., K/g, 1]."""
    k, s = t.shape[-1], scale.shape[-1]
    if scale.dim() == t.dim() and s not in (1, k):
        return t.view(*t.shape[:-1], s, k // s), scale.unsqueeze(-1)
    return t, scale


def eager_quantize_affine(x, scale, zero_point, bits):
    qmin, qmax = qrange(bits)
    xv, s = _grouped(x, scale)
    t = xv / s  # float32 for any input dtype (type promotion with the float32 scale)
    if zero_point is not None:
        t.add_(_grouped(x, zero_point)[1])
    return t.round_().clamp_(qmin, qmax).to(torch.int8).view(x.shape)


def eager_dequantize_affine(codes, scale, zero_point, dtype):
    cv, s = _grouped(codes, scale)
    if zero_point is None:
        t = cv * s  # int8 * float32 -> float32 in one pass
    else:
        t = (cv - _grouped(codes, zero_point)[1]).mul_(s)
    return t.to(dtype).view(codes.shape)


def eager_pack_bits(codes, bits):
    """Offset-binary fields u = code + 2^(bits-1), element j of a byte at bit offset bits * j."""
    per = 8 // bits
    u = (codes + (1 << (bits - 1))).view(torch.uint8)  # in range, so u < 2^bits
    u = u.view(*codes.shape[:-1], codes.shape[-1] // per, per)
    out = u[..., 0] | (u[..., 1] << bits)
    for j in range(2, per):
        out |= u[..., j] << (bits * j)
    return out


def eager_unpack_bits(packed, bits, n):
    per, mask = 8 // bits, (1 << bits) - 1
    fields = [packed & mask] + [(packed >> (bits * j)) & mask for j in range(1, per - 1)]
    fields.append(packed >> (bits * (per - 1)))
    out = torch.stack(fields, dim=-1).view(torch.int8).sub_(1 << (bits - 1))
    out = out.view(*packed.shape[:-1], packed.shape[-1] * per)
    return out if out.shape[-1] == n else out[..., :n].contiguous()


def eager_choose_scale_fp8(x, dtype, axis=None, group_size=None):
    absmax = _absmax(_reduce_view(x, axis, group_size))
    return (absmax / torch.finfo(dtype).max).view(_param_shape(x, axis, group_size))


def eager_quantize_fp8(x, scale, dtype):
    m = torch.finfo(dtype).max
    xv, s = _grouped(x, scale)
    return (xv / s).clamp_(-m, m).to(dtype).view(x.shape)


def eager_dequantize_fp8(q, scale, dtype):
    qv, s = _grouped(q, scale)
    t = qv.float().mul_(s)  # float8 does not type-promote, so convert first
    return (t if dtype == torch.float32 else t.to(dtype)).view(q.shape)


def _blocks(x):
    return x.reshape(-1, 32).float()  # no copy for float32


def _gguf_out(x, scale_f32, payload, bytes_per_block):
    out = torch.cat([scale_f32.half().view(torch.uint8), payload], dim=1)
    return out.view(*x.shape[:-1], x.shape[-1] // 32 * bytes_per_block)


def eager_quantize_q8_0(x):
    """gguf-py's Q8_0: d = amax / 127, q = roundf(x * (1 / d)) (half away from zero)."""
    b = _blocks(x)
    d = _absmax(b) / 127
    inv = torch.where(d == 0, 0.0, 1.0 / d)
    q = b * inv
    # roundf(q) == trunc(q + copysign(0.49999997, q)) exactly for |q| < 2^23
    q.add_(torch.copysign(torch.tensor(0.49999997), q)).trunc_()
    return _gguf_out(x, d, q.to(torch.int8).view(torch.uint8), 34)


def eager_dequantize_q8_0(blocks, dtype):
    b = blocks.view(-1, 34)
    d = b[:, :2].contiguous().view(torch.float16).float()
    t = b[:, 2:].view(torch.int8) * d  # int8 * float32 -> float32
    t = t if dtype == torch.float32 else t.to(dtype)
    return t.view(*blocks.shape[:-1], blocks.shape[-1] // 34 * 32)


def eager_quantize_q4_0(x):
    """gguf-py's Q4_0: d = (signed value of largest |x|) / -8, q = min(15, trunc(x / d + 8.5)),
    element j in the low nibble of byte j, element 16 + j in its high nibble."""
    b = _blocks(x)
    m = b.gather(1, b.abs().argmax(dim=1, keepdim=True))
    d = m / -8
    inv = torch.where(d == 0, 0.0, 1.0 / d)
    q = (b * inv).add_(8.5).trunc_().clamp_(max=15).to(torch.uint8)
    packed = q[:, :16] | (q[:, 16:] << 4)
    return _gguf_out(x, d, packed, 18)


def eager_dequantize_q4_0(blocks, dtype):
    b = blocks.view(-1, 18)
    d = b[:, :2].contiguous().view(torch.float16).float()
    qs = b[:, 2:]
    q = torch.cat([qs & 15, qs >> 4], dim=1).view(torch.int8).sub_(8)
    t = q * d
    t = t if dtype == torch.float32 else t.to(dtype)
    return t.view(*blocks.shape[:-1], blocks.shape[-1] // 18 * 32)


# ---------------------------------------------------------------------------------
# Cases: each makes the arguments of one call from a float32 and a bfloat16 source
# tensor of the benchmarked shape; ours and eager take the same arguments.
# ---------------------------------------------------------------------------------

@dataclass
class Case:
    op: str
    config: str
    make: Callable  # (x32, x16) -> tuple of arguments
    eager: Callable
    dequant_style: bool = False  # judged against memory bandwidth

    @property
    def ours(self) -> Callable:
        return getattr(lowbit.ops, self.op)


def _codes(x32, bits):
    qmin, qmax = qrange(bits)
    return (x32 * (qmax / 3)).round_().clamp_(qmin, qmax).to(torch.int8)


def _affine_params(x, bits, symmetric, per_channel):
    axis, group = (0, None) if per_channel else (None, GROUP)
    scale, zp = eager_choose_qparams_affine(x, bits, symmetric, axis, group)
    return scale, (None if symmetric else zp)


def build_cases() -> list[Case]:
    cases = []
    # affine: int8 per-channel symmetric, int4 group-128 asymmetric
    affine = [("int8 per-channel sym", 8, True, True), ("int4 g128 asym", 4, False, False)]
    for sym in (True, False):
        for name, bits, per_channel in (("int8 per-channel", 8, True), ("int4 g128", 4, False)):
            axis, group = (0, None) if per_channel else (None, GROUP)
            cases.append(Case("choose_qparams_affine", f"{name} {'sym' if sym else 'asym'}",
                              lambda x32, x16, b=bits, s=sym, a=axis, g=group: (x32, b, s, a, g),
                              eager_choose_qparams_affine))
    for name, bits, sym, per_channel in affine:
        for src in ("f32", "bf16"):
            def make(x32, x16, b=bits, s=sym, pc=per_channel, src=src):
                x = x32 if src == "f32" else x16
                scale, zp = _affine_params(x, b, s, pc)
                return (x, scale, zp, b)
            cases.append(Case("quantize_affine", f"{name}, {src} in", make, eager_quantize_affine))
    for name, bits, sym, per_channel in affine:
        for dtype in (torch.float32, torch.bfloat16):
            def make(x32, x16, b=bits, s=sym, pc=per_channel, dt=dtype):
                scale, zp = _affine_params(x32, b, s, pc)
                return (eager_quantize_affine(x32, scale, zp, b), scale, zp, dt)
            cases.append(Case("dequantize_affine", f"{name} -> {_short(dtype)}", make,
                              eager_dequantize_affine, dequant_style=True))
    for bits in (2, 4):
        cases.append(Case("pack_bits", f"{bits}-bit", lambda x32, x16, b=bits: (_codes(x32, b), b),
                          eager_pack_bits))
    for bits in (2, 4):
        def make(x32, x16, b=bits):
            return (eager_pack_bits(_codes(x32, b), b), b, x32.shape[-1])
        cases.append(Case("unpack_bits", f"{bits}-bit", make, eager_unpack_bits, dequant_style=True))
    # float8 e4m3fn, per tensor and per channel (axis 0)
    for gran, axis in (("per-tensor", None), ("per-channel", 0)):
        cases.append(Case("choose_scale_fp8", f"e4m3fn {gran}",
                          lambda x32, x16, a=axis: (x32, FP8, a, None), eager_choose_scale_fp8))
    for gran, axis in (("per-tensor", None), ("per-channel", 0)):
        for src in ("f32", "bf16"):
            def make(x32, x16, a=axis, src=src):
                x = x32 if src == "f32" else x16
                return (x, eager_choose_scale_fp8(x, FP8, a), FP8)
            cases.append(Case("quantize_fp8", f"e4m3fn {gran}, {src} in", make, eager_quantize_fp8))
    for gran, axis, dtype in (("per-tensor", None, torch.float32), ("per-channel", 0, torch.float32),
                              ("per-channel", 0, torch.bfloat16)):
        def make(x32, x16, a=axis, dt=dtype):
            scale = eager_choose_scale_fp8(x32, FP8, a)
            return (eager_quantize_fp8(x32, scale, FP8), scale, dt)
        cases.append(Case("dequantize_fp8", f"e4m3fn {gran} -> {_short(dtype)}", make,
                          eager_dequantize_fp8, dequant_style=True))
    # GGUF blocks
    for fmt, quant, dequant in (("q8_0", eager_quantize_q8_0, eager_dequantize_q8_0),
                                ("q4_0", eager_quantize_q4_0, eager_dequantize_q4_0)):
        for src in ("f32", "bf16"):
            cases.append(Case(f"quantize_{fmt}", f"{src} in",
                              lambda x32, x16, src=src: (x32 if src == "f32" else x16,), quant))
        for dtype in (torch.float32, torch.bfloat16):
            cases.append(Case(f"dequantize_{fmt}", f"-> {_short(dtype)}",
                              lambda x32, x16, q=quant, dt=dtype: (q(x32), dt), dequant,
                              dequant_style=True))
    return cases


def _short(dtype) -> str:
    return {torch.float32: "f32", torch.bfloat16: "bf16", torch.float16: "f16"}[dtype]


# ---------------------------------------------------------------------------------
# Agreement check: integer, byte and float8 results bit-exact; float results by
# error relative to the largest magnitude.
# ---------------------------------------------------------------------------------

def _flat(out):
    return list(out) if isinstance(out, (tuple, list)) else [out]


def compare(ours, eager) -> tuple[str, str]:
    """('ok' | 'near' | 'mismatch', detail). 'near': integers off by one in <= 1e-5 of
    the elements (timed, flagged); 'mismatch' is not timed."""
    a_list, b_list = _flat(ours), _flat(eager)
    if len(a_list) != len(b_list):
        return "mismatch", f"{len(a_list)} outputs vs {len(b_list)} eager"
    status, details = "ok", []
    for i, (a, b) in enumerate(zip(a_list, b_list)):
        tag = f"out{i}" if len(a_list) > 1 else "out"
        if a.shape != b.shape or a.dtype != b.dtype:
            return "mismatch", f"{tag}: {a.dtype}{list(a.shape)} vs eager {b.dtype}{list(b.shape)}"
        if a.dtype.is_floating_point and a.element_size() > 1:
            if torch.equal(a, b):
                continue
            af, bf = a.float(), b.float()
            if not torch.equal(af.isnan(), bf.isnan()):
                return "mismatch", f"{tag}: NaNs differ"
            err = (af - bf).nan_to_num_(0.0).abs_().max().item()
            ref = bf.nan_to_num(0.0).abs_().max().item()
            rel = err / ref if ref > 0 else err
            tol = 1e-6 if a.dtype == torch.float32 else 1e-2
            if rel > tol:
                return "mismatch", f"{tag}: max error {rel:.2e} of max |x| (tolerance {tol:g})"
            if rel > 0:
                details.append(f"{tag} rel err {rel:.1e}")
        else:
            if a.dtype.is_floating_point:  # float8: compare the bits
                a, b = a.view(torch.uint8), b.view(torch.uint8)
            if torch.equal(a, b):
                continue
            diff = (a.int() - b.int()).abs()
            n_bad = int((diff != 0).sum())
            where = int((diff != 0).flatten().nonzero()[0])
            msg = f"{tag}: {n_bad} of {a.numel()} differ (max {int(diff.max())}, first at flat index {where})"
            if int(diff.max()) <= 1 and n_bad <= 1e-5 * a.numel():
                status = "near"
                details.append(msg)
            else:
                return "mismatch", msg
    return status, "; ".join(details)


is_missing_kernel = C.is_missing_kernel


# ---------------------------------------------------------------------------------

def run_case(case: Case, shape, pool32, pool16, timing: dict, missing: dict) -> dict:
    numel = shape[0] * shape[1]
    row = {"op": case.op, "config": case.config, "shape": list(shape), "elements": numel,
           "ours_ms": None, "eager_ms": None, "speedup": None, "bytes": None, "ours_gbps": None,
           "frac_read_bw": None, "check": None, "sets": None, "dequant_style": case.dequant_style,
           "out_bytes": None, "write_floor_ms": None}
    label = f"{case.op} [{case.config}] {list(shape)}"
    if case.op in missing:  # reported once, at its first call
        row["check"] = missing[case.op]
        return row

    def make(i):
        sl = slice(i * numel, (i + 1) * numel)
        return case.make(pool32[sl].view(shape), pool16[sl].view(shape))

    args0 = make(0)
    try:
        ours0 = case.ours(*args0)
    except Exception as e:  # noqa: BLE001  (report and go on with the other ops)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if is_missing_kernel(e):
            missing[case.op] = row["check"] = "skipped (no kernel)"
            print(f"  SKIPPED {case.op}: no kernel ({type(e).__name__}: {first[:100]})", flush=True)
        else:
            row["check"] = f"error: {type(e).__name__}: {first[:160]}"
            print(f"  ERROR (not timed) {label}: {type(e).__name__}: {first[:160]}", flush=True)
        return row
    try:
        eager0 = case.eager(*args0)
    except Exception as e:  # noqa: BLE001  (a bug of this script: say so, go on)
        row["check"] = f"error in eager: {type(e).__name__}: {e}"[:200]
        print(f"  ERROR (not timed) {label}: eager failed: {type(e).__name__}: {e}", flush=True)
        return row
    status, detail = compare(ours0, eager0)
    row["check"] = status + (f" ({detail})" if detail else "")
    if status == "mismatch":
        print(f"  MISMATCH (not timed) {label}: {detail}", flush=True)
        return row
    row["out_bytes"] = C.tensor_bytes(ours0)
    row["bytes"] = C.tensor_bytes(args0) + row["out_bytes"]
    n_sets = C.sets_needed(row["bytes"], at_most=pool32.numel() // numel)
    del ours0, eager0
    sets = [args0] + [make(i) for i in range(1, n_sets)]
    row["sets"] = n_sets
    (t_ours, t_eager), (all_ours, all_eager) = C.time_interleaved(
        [case.ours, case.eager], sets, return_all=True, **timing)
    row.update(ours_ms=t_ours * 1e3, eager_ms=t_eager * 1e3, speedup=t_eager / t_ours,
               ours_gbps=row["bytes"] / t_ours / 1e9, reps=len(all_ours),
               ours_min_ms=min(all_ours) * 1e3, eager_min_ms=min(all_eager) * 1e3)
    print(f"  {label}: ours {t_ours * 1e3:.3f} ms, eager {t_eager * 1e3:.3f} ms, "
          f"x{t_eager / t_ours:.2f}, {row['ours_gbps']:.1f} GB/s, check {status}", flush=True)
    return row


COLUMNS = [("op", "op"), ("config", "config"), ("shape", "shape"), ("elements", "elements"),
           ("ours_ms", "ours ms"), ("eager_ms", "eager ms"), ("speedup", "speed-up"),
           ("mbytes", "MB moved"), ("ours_gbps", "ours GB/s"), ("pct_bw", "% read BW"),
           ("write_floor_ms", "write floor ms"), ("check", "check")]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes, few repetitions (smoke test)")
    p.add_argument("--ops", default="", help="comma-separated substrings of 'op config' to run")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    p.add_argument("--isa", choices=["avx512", "avx2", "portable"], default=None, help="force lowbit's CPU kernels")
    p.add_argument("--fresh-pages", action="store_true",
                   help="keep glibc's default of returning big freed blocks to the kernel "
                        "(every big output is then page-faulted in)")
    p.add_argument("--out", type=Path, default=OUT_DIR, help="folder for primitives.json/.md")
    args = p.parse_args(argv)

    reuse = False if args.fresh_pages else C.reuse_freed_memory()
    threads = C.set_threads(args.threads)
    if args.isa:
        lowbit.set_cpu_isa(args.isa)
    shapes = SHAPES_QUICK if args.quick else SHAPES_FULL
    timing = (dict(warmup=1, min_reps=3, max_reps=10, target_s=0.02) if args.quick
              else dict(warmup=1, min_reps=5, max_reps=50, target_s=0.25))
    filters = [f.strip() for f in args.ops.split(",") if f.strip()]
    cases = [c for c in build_cases() if not filters or any(f in f"{c.op} {c.config}" for f in filters)]
    if not cases:
        print(f"no op matches --ops {args.ops!r}", file=sys.stderr)
        return 2

    start = time.perf_counter()
    info = C.machine_info()
    torch.manual_seed(0)
    # One pool of distinct random data; each input set is a slice of it, so sets never share
    # memory. It holds two sets of the biggest shape and is also the bandwidth probe.
    big = max(a * b for a, b in shapes)
    pool32 = torch.randn(max(2 * big, 32 << 20))
    pool16 = pool32.bfloat16()
    probe = pool32 if pool32.numel() * 4 >= (512 << 20) else None
    bw_before = C.measure_read_bandwidth(512 << 20, tensor=probe)
    copy_bw = C.measure_copy_bandwidth(256 << 20 if args.quick else 512 << 20)
    write_bw = C.measure_write_bandwidth(256 << 20 if args.quick else 512 << 20)
    print(f"# lowbit primitives: {info['cpu']}, {threads} threads, ISA {info['lowbit_isa']}, "
          f"read bandwidth {bw_before['gbps']:.1f} GB/s ({bw_before['method']}), "
          f"copy {copy_bw['gbps']:.1f} GB/s, write {write_bw['gbps']:.1f} GB/s", flush=True)

    load = info["load_avg_1_5_15"]
    busy = bool(load and load[0] > 0.5 * (info["cores"] or 1))
    if busy:
        print(f"WARNING: the machine is busy (load average {load[0]} on {info['cores']} cores): "
              "other processes will slow and scatter these figures", flush=True)
    rows, missing = [], {}
    for shape in shapes:
        for case in cases:
            t_row = time.perf_counter()
            rows.append(run_case(case, shape, pool32, pool16, timing, missing))
            rows[-1]["row_s"] = round(time.perf_counter() - t_row, 2)
            gc.collect()
            C.release_freed_memory()
    bw_after = C.measure_read_bandwidth(512 << 20, tensor=probe)
    read_bw = max(bw_before["gbps"], bw_after["gbps"])
    for r in rows:
        if r["ours_gbps"] is not None:
            r["frac_read_bw"] = r["ours_gbps"] / read_bw
            # the time fill_ takes to write as many bytes: what ordinary stores need just for
            # the output (non-temporal stores can be faster)
            r["write_floor_ms"] = r["out_bytes"] / (write_bw["gbps"] * 1e9) * 1e3

    table_rows = [dict(r, shape="x".join(map(str, r["shape"])),
                       mbytes=None if r["bytes"] is None else r["bytes"] / 1e6,
                       pct_bw=None if r["frac_read_bw"] is None else 100 * r["frac_read_bw"])
                  for r in rows]
    table = C.markdown_table(table_rows, COLUMNS)
    big_rows = [r for r in rows if r["elements"] >= (16 << 20) and r["speedup"] is not None]
    def why_slow(r):
        text = f"{r['op']} [{r['config']}] x{r['speedup']:.2f}"
        if r["eager_ms"] < 3 * r["write_floor_ms"]:
            text += (f" (eager takes {r['eager_ms']:.2f} ms, less than 3x the "
                     f"{r['write_floor_ms']:.2f} ms fill_ needs to write the output; ours "
                     f"{r['ours_ms']:.2f} ms)")
        return text
    slow = [why_slow(r) for r in big_rows if r["speedup"] < 3]
    low_bw = [f"{r['op']} [{r['config']}] {100 * r['frac_read_bw']:.0f}%"
              for r in big_rows if r["dequant_style"] and r["frac_read_bw"] < 0.5]
    not_timed = [f"{r['op']} [{r['config']}] {r['shape']}: {r['check']}" for r in rows
                 if r["ours_ms"] is None and r["op"] not in missing]
    elapsed = time.perf_counter() - start
    header = C.machine_markdown(info, {
        "read bandwidth": f"{read_bw:.1f} GB/s (best of before {bw_before['gbps']:.1f} / after "
                          f"{bw_after['gbps']:.1f}, {bw_before['method']} over "
                          f"{bw_before['bytes'] >> 20} MiB); copy {copy_bw['gbps']:.1f} GB/s (read + write); "
                          f"write {write_bw['gbps']:.1f} GB/s (fill_)",
        "busy": "YES, load average at start " + str(load) + ": figures unreliable" if busy else "no",
        "allocator": "glibc keeps freed memory (mallopt)" if reuse else "glibc default (fresh pages)",
        "run": f"{'--quick ' if args.quick else ''}{elapsed:.0f} s; times are medians over rotating "
               f"input sets totalling >= {C.CACHE_FLUSH_FACTOR}x L3",
    })
    notes = [
        "",
        "Bytes moved = every input tensor read once + every output tensor written once "
        "(no write-allocate or cache-miss overhead counted). % read BW = ours GB/s / read bandwidth. "
        "Write floor = output bytes / write bandwidth (torch fill_ over 512 MiB), the time "
        "ordinary stores need to write the output alone (non-temporal stores can beat it). Outputs of ops that touch more bytes than the last-level cache "
        "are written with non-temporal stores (lowbit._C.streaming_min_bytes()).",
        "",
        f"Below 3x eager on >= 16M elements: {', '.join(slow) if slow else 'none'}.",
        f"Dequantize-style ops below 50% of read bandwidth on >= 16M elements: "
        f"{', '.join(low_bw) if low_bw else 'none'}.",
        f"Skipped, no kernel: {', '.join(missing) if missing else 'none'}.",
        f"Not timed (mismatch or error): {len(not_timed)}" + "".join(f"\n- {t}" for t in not_timed),
    ]
    md = "# lowbit primitives vs eager PyTorch\n\n" + header + "\n\n" + table + "\n" + "\n".join(notes)
    print()
    print(md)
    C.write_markdown(args.out / "primitives.md", md)
    C.write_json(args.out / "primitives.json", {
        "machine": info, "threads": threads, "quick": args.quick, "allocator_reuses_freed_memory": reuse,
        "read_bandwidth": {"gbps": read_bw, "before": bw_before, "after": bw_after},
        "copy_bandwidth": copy_bw, "write_bandwidth": write_bw, "machine_busy_at_start": busy, "timing": timing, "cache_flush_factor": C.CACHE_FLUSH_FACTOR,
        "bytes_counted_as": "sum of input tensor bytes + output tensor bytes of one call",
        "elapsed_s": elapsed, "rows": rows,
    })
    print(f"\nwrote {args.out / 'primitives.json'} and {args.out / 'primitives.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
