"""How fast are lowbit's CUDA mixed-precision GEMMs, side by side with torch's own GPU GEMMs,
and against this GPU's measured memory bandwidth and bf16 GEMM peak?

Variants, for every weight shape (N, K) and batch size M (activations bfloat16):
  peers   bf16       F.linear(x, W) with a bfloat16 W (cuBLAS)
          int8_mm    torch._int_mm(x_int8, W_int8.t()) (cuBLASLt int8, int32 out, no rescale;
                     M <= 16 is padded to 32 rows: the op needs M > 16)
          fp8_mm     torch._scaled_mm(x_e4m3, W_e4m3.t(), 1, 1, out_dtype=bf16) (M padded to 16)
          int4pack   torch.ops.aten._weight_int4pack_mm(x, _convert_weight_to_int4pack(W), 128, sz)
  ours    w4a16      lowbit linear_intx, int4, group 128, asymmetric
          w2a16      lowbit linear_intx, int2, group 128, asymmetric
          w8a16      lowbit linear_int8, int8 per output channel
          fp8a16     lowbit linear_fp8, e4m3fn per output channel
          w8a8       lowbit linear_int8(int8_activations=True): per-token int8 x, int32 sums, rescale
          fp8a8      lowbit's float8 W8A8 (per-token e4m3 x with lowbit's quantize_fp8, then
                     torch._scaled_mm with row-wise scales; what a frozen qfloat8/qfloat8
                     per-token QLinear runs on CUDA)

Every variant cycles through its own copies of the weight (>= 2.5x the 50 MB L2 of an H100
in total), so no call finds its weight in L2; data is random (never zeros). Each call is
timed with CUDA events around the call ("eager": what a Python caller sees, dispatch
included) and, for calls under 2 ms, also as a CUDA graph of many calls ("graph": the
kernels alone). Medians. Every variant of ours is checked against a float32 matmul of its
own dequantized weight first (a variant that disagrees is reported, not timed).

    PYTHONPATH=python python3 bench/kernels_cuda.py --out DIR [--quick] [--budget-s 300]
        [--shapes 8192x8192,...] [--m 1,16,1024] [--variants bf16,w4a16,...]
    python3 bench/kernels_cuda.py --plot-from DIR/kernels_cuda.json --out DIR   (plot only)

Writes DIR/kernels_cuda.json, DIR/kernels_cuda.md and DIR/kernels_cuda.png (the PNG needs
matplotlib; without it, re-plot later with --plot-from).
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

try:
    import lowbit
except ImportError:  # a source checkout run without PYTHONPATH=python
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))
    import lowbit
import lowbit.ops as L

SHAPES_FULL = [(8192, 8192), (4096, 4096), (28672, 8192), (8192, 28672)]  # (N, K); targets first
SHAPES_QUICK = [(8192, 8192)]
MS_FULL = [1, 2, 4, 8, 16, 32, 64, 128, 256, 1024, 4096]
MS_QUICK = [1, 16, 64, 1024]
PEERS = ["bf16", "int8_mm", "fp8_mm", "int4pack"]
OURS = ["w4a16", "w2a16", "w8a16", "fp8a16", "w8a8", "fp8a8"]
GROUP = 128
L2_BYTES = 50 << 20
ROTATE_FACTOR = 2.5
OP_OF = {"w4a16": "linear_intx", "w2a16": "linear_intx", "w8a16": "linear_int8", "fp8a16": "linear_fp8",
         "w8a8": "linear_int8", "fp8a8": "quantize_fp8"}
# Relative error allowed against float32 x @ (own dequantized W).T; bf16 output rounding and,
# for 4/2-bit weights, bf16 rounding of each weight inside the kernel; int8 activations ~1%.
TOL = {"w4a16": 2e-2, "w2a16": 2e-2, "w8a16": 1e-2, "fp8a16": 1e-2, "w8a8": 5e-2, "fp8a8": 8e-2}


# ------------------------------------------------------------------ machine limits ----

def time_events(fn, reps: int, warmup: int = 2) -> list:
    for _ in range(warmup):
        fn(0)
    torch.cuda.synchronize()
    out = []
    for i in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn(i)
        b.record()
        b.synchronize()
        out.append(a.elapsed_time(b) * 1e-3)
    return out


def measure_bandwidth() -> dict:
    """Device-to-device copy of 1 GiB: GB/s counting read + write."""
    n = 1 << 30
    src = torch.randint(0, 255, (n,), dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    t = statistics.median(time_events(lambda i: dst.copy_(src), 10))
    return {"gbps": 2 * n / t / 1e9, "bytes": n, "method": "D2D copy_ of 1 GiB (read + write)"}


def measure_bf16_peak() -> dict:
    n = 8192
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    t = statistics.median(time_events(lambda i: torch.mm(a, b), 10))
    return {"tflops": 2 * n ** 3 / t / 1e12, "shape": [n, n, n]}


# ------------------------------------------------------------------ weights ----

def copies_for(nbytes: int) -> int:
    return max(1, math.ceil(ROTATE_FACTOR * L2_BYTES / max(1, nbytes)))


def make_variant(name: str, n: int, k: int):
    """(weight sets, bytes of one set, call(x, set) -> y, dequantized float32 W or None)."""
    dev = "cuda"
    if name == "bf16":
        def one():
            return (torch.randn(n, k, device=dev, dtype=torch.bfloat16) * 0.02,)
        nbytes = n * k * 2
        call = lambda x, s: F.linear(x, s[0])
        deq = None
    elif name == "int8_mm":
        def one():
            return (torch.randint(-127, 128, (n, k), device=dev, dtype=torch.int8),)
        nbytes = n * k
        call = lambda x, s: torch._int_mm(x, s[0].t())
        deq = None
    elif name == "fp8_mm":
        def one():
            return ((torch.randn(n, k, device=dev) * 0.5).to(torch.float8_e4m3fn),)
        nbytes = n * k
        one_ = torch.ones((), device=dev)
        call = lambda x, s: torch._scaled_mm(x, s[0].t(), scale_a=one_, scale_b=one_, out_dtype=torch.bfloat16)
        deq = None
    elif name == "int4pack":
        def one():
            u8 = torch.randint(0, 256, (n, k // 2), device=dev, dtype=torch.uint8)
            try:
                packed = torch.ops.aten._convert_weight_to_int4pack(u8, 8)
            except RuntimeError:  # older layout: int32 [N, K / 8]
                packed = torch.ops.aten._convert_weight_to_int4pack(u8.view(torch.int32), 8)
            sz = torch.rand(k // GROUP, n, 2, device=dev, dtype=torch.bfloat16) * 0.01 + 0.001
            return (packed, sz)
        nbytes = n * k // 2 + (k // GROUP) * n * 4
        call = lambda x, s: torch.ops.aten._weight_int4pack_mm(x, s[0], GROUP, s[1])
        deq = None
    elif name in ("w4a16", "w2a16"):
        bits = 4 if name == "w4a16" else 2

        def one():
            lo, hi = -2 ** (bits - 1), 2 ** (bits - 1) - 1
            codes = torch.randint(lo, hi + 1, (n, k), device=dev, dtype=torch.int8)
            u = (codes.to(torch.int32) - lo).view(n, k * bits // 8, 8 // bits)  # offset binary
            packed = sum(u[..., f] << (bits * f) for f in range(8 // bits)).to(torch.uint8)  # docs/formats.md
            scale = torch.rand(n, k // GROUP, device=dev) * 0.01 + 0.001
            zp = torch.randint(lo, hi + 1, (n, k // GROUP), device=dev).float()
            return (packed, scale, zp, codes)
        nbytes = n * k * bits // 8 + 2 * n * (k // GROUP) * 4
        call = lambda x, s: L.linear_intx(x, s[0], s[1], s[2], bits)

        def deq(s):
            g = k // s[1].shape[1]
            return (s[3].float() - s[2].repeat_interleave(g, 1)) * s[1].repeat_interleave(g, 1)
    elif name in ("w8a16", "w8a8"):
        def one():
            return (torch.randint(-127, 128, (n, k), device=dev, dtype=torch.int8),
                    torch.rand(n, 1, device=dev) * 0.001 + 1e-4)
        nbytes = n * k + n * 4
        act8 = name == "w8a8"
        call = lambda x, s: L.linear_int8(x, s[0], s[1], None, act8)
        deq = lambda s: s[0].float() * s[1]
    elif name == "fp8a16":
        def one():
            return ((torch.randn(n, k, device=dev) * 0.5).to(torch.float8_e4m3fn),
                    torch.rand(n, 1, device=dev) * 0.01 + 1e-3)
        nbytes = n * k + n * 4
        call = lambda x, s: L.linear_fp8(x, s[0], s[1])
        deq = lambda s: s[0].float() * s[1]
    elif name == "fp8a8":
        from lowbit.tensor.kernels_cuda import linear_fp8_per_token

        def one():
            return ((torch.randn(n, k, device=dev) * 0.5).to(torch.float8_e4m3fn),
                    torch.rand(n, 1, device=dev) * 0.01 + 1e-3)
        nbytes = n * k + n * 4
        call = lambda x, s: linear_fp8_per_token(x, s[0], s[1])
        deq = lambda s: s[0].float() * s[1]
    else:
        raise ValueError(name)
    sets = [one() for _ in range(copies_for(nbytes))]
    return sets, nbytes, call, deq


def x_for(name: str, m: int, k: int, x_bf16: torch.Tensor):
    if name == "int8_mm":
        rows = max(m, 32) if m <= 16 else m
        return torch.randint(-127, 128, (rows, k), device="cuda", dtype=torch.int8)
    if name == "fp8_mm":
        rows = (m + 15) // 16 * 16
        return (torch.randn(rows, k, device="cuda") * 0.5).to(torch.float8_e4m3fn)
    return x_bf16


# ------------------------------------------------------------------ timing ----

def time_variant(call, sets, x, reps: int) -> dict:
    n = len(sets)
    eager = time_events(lambda i: call(x, sets[i % n]), reps)
    res = {"eager_s": statistics.median(eager)}
    if res["eager_s"] < 2e-3:
        # a graph of `per` calls over the rotating copies; median over replays
        per = max(n, 8)
        try:
            s = torch.cuda.Stream()
            s.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(s):
                for i in range(per):
                    call(x, sets[i % n])
            torch.cuda.current_stream().wait_stream(s)
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g):
                for i in range(per):
                    call(x, sets[i % n])
            times = time_events(lambda i: g.replay(), max(5, reps // 4), warmup=1)
            res["graph_s"] = statistics.median(times) / per
            del g
        except Exception as e:  # noqa: BLE001 (a peer that cannot be captured is reported, not fatal)
            res["graph_error"] = f"{type(e).__name__}: {e}"[:200]
    res["time_s"] = res.get("graph_s", res["eager_s"])
    return res


def check_ours(name, call, sets, deq, x) -> dict:
    s = sets[0]
    y = call(x, s).float()
    ref = x.float() @ deq(s).T
    err = ((y - ref).norm() / ref.norm()).item()
    return {"rel_err": err, "ok": bool(err < TOL[name]), "kernel": lowbit.last_kernels().get(OP_OF[name])}


# ------------------------------------------------------------------ report ----

def machine() -> dict:
    p = torch.cuda.get_device_properties(0)
    return {"gpu": p.name, "sm_count": p.multi_processor_count, "memory_gb": round(p.total_memory / 1e9, 1),
            "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
            "date": datetime.datetime.now().isoformat(timespec="seconds")}


def write_markdown(doc: dict, path: Path) -> str:
    lines = [f"# lowbit CUDA GEMMs ({doc['machine']['gpu']}, {doc['machine']['date']})", "",
             f"D2D bandwidth {doc['bandwidth']['gbps']:.0f} GB/s; bf16 GEMM peak "
             f"{doc['bf16_peak']['tflops']:.0f} TFLOP/s (8192^3). Times: median, graph replay where the call is "
             "under 2 ms (eager in brackets); x in bf16. `ratio` = bf16 time / time; `vs peer` = fastest peer "
             "(bf16, int8_mm, fp8_mm, int4pack) / time; `%bw` = weight bytes / time / D2D bandwidth.", ""]
    by_shape = {}
    for r in doc["rows"]:
        by_shape.setdefault((r["n"], r["k"]), []).append(r)
    for (n, k), rows in by_shape.items():
        variants = [v for v in PEERS + OURS if any(r["variant"] == v for r in rows)]
        lines += [f"## N = {n}, K = {k}", "", "| M | " + " | ".join(variants) + " |",
                  "|---|" + "---|" * len(variants)]
        for m in sorted({r["m"] for r in rows}):
            cells = []
            for v in variants:
                r = next((r for r in rows if r["m"] == m and r["variant"] == v), None)
                if r is None or "time_s" not in r:
                    cells.append(r.get("error", "-")[:40] if r else "-")
                    continue
                c = f"{r['time_s'] * 1e6:.1f} us ({r['eager_s'] * 1e6:.0f})"
                if v != "bf16" and r.get("ratio_bf16"):
                    c += f" {r['ratio_bf16']:.2f}x"
                if v in OURS:
                    c += f", vs peer {r.get('ratio_peer', float('nan')):.2f}x, {r['pct_bw']:.0f}%bw"
                cells.append(c)
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
        lines.append("")
    bad = [r for r in doc["rows"] if r.get("check") and not r["check"]["ok"]]
    if bad:
        lines += ["## Failed checks", ""] + [f"- {r['variant']} N={r['n']} K={r['k']}: {r['check']}" for r in bad]
    text = "\n".join(lines) + "\n"
    path.write_text(text)
    return text


def plot(doc: dict, path: Path) -> str:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib not installed: re-plot with --plot-from on a machine that has it"
    shapes = sorted({(r["n"], r["k"]) for r in doc["rows"]}, key=lambda s: SHAPES_FULL.index(s) if s in SHAPES_FULL else 9)
    fig, axes = plt.subplots(1, len(shapes), figsize=(5 * len(shapes), 4), squeeze=False)
    for ax, (n, k) in zip(axes[0], shapes):
        for v in PEERS[1:] + OURS:
            pts = sorted((r["m"], r["ratio_bf16"]) for r in doc["rows"]
                         if r["n"] == n and r["k"] == k and r["variant"] == v and r.get("ratio_bf16"))
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o" if v in OURS else "x",
                        linestyle="-" if v in OURS else "--", label=v)
        ax.axhline(1.0, color="gray", linewidth=0.8)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log", base=2)
        ax.set_xlabel("M (rows of x)")
        ax.set_ylabel("speed-up over F.linear bf16")
        ax.set_title(f"N={n}, K={k}")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"lowbit CUDA GEMMs, {doc['machine']['gpu']} ({doc['machine']['date'][:10]})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return str(path)


# ------------------------------------------------------------------ main ----

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="folder for kernels_cuda.{json,md,png}")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--budget-s", type=float, default=0, help="stop timing after this many seconds (0: no limit)")
    ap.add_argument("--shapes", default="", help="NxK,NxK,...")
    ap.add_argument("--m", default="", help="comma-separated M values")
    ap.add_argument("--variants", default="", help="comma-separated subset of " + ",".join(PEERS + OURS))
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--plot-from", default="", help="only plot an existing JSON")
    a = ap.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if a.plot_from:
        doc = json.loads(Path(a.plot_from).read_text())
        print(plot(doc, out / "kernels_cuda.png"))
        return 0
    if not torch.cuda.is_available():
        print("kernels_cuda.py: no CUDA device", file=sys.stderr)
        return 1
    t_start = time.time()
    shapes = [tuple(int(v) for v in s.split("x")) for s in a.shapes.split(",") if s] or \
        (SHAPES_QUICK if a.quick else SHAPES_FULL)
    ms = [int(v) for v in a.m.split(",") if v] or (MS_QUICK if a.quick else MS_FULL)
    variants = [v for v in a.variants.split(",") if v] or PEERS + OURS
    torch.manual_seed(0)
    doc = {"machine": machine(), "bandwidth": measure_bandwidth(), "bf16_peak": measure_bf16_peak(),
           "group_size": GROUP, "l2_bytes": L2_BYTES, "rotate_factor": ROTATE_FACTOR, "rows": [],
           "complete": True, "tuning_env": {k: v for k, v in os.environ.items() if k.startswith("LOWBIT_CUDA")}}
    bw = doc["bandwidth"]["gbps"]
    print(f"# {doc['machine']['gpu']}: D2D {bw:.0f} GB/s, bf16 peak {doc['bf16_peak']['tflops']:.0f} TFLOP/s",
          flush=True)
    over = False
    for n, k in shapes:
        if over:
            break
        built = {}
        for v in variants:
            try:
                built[v] = make_variant(v, n, k)
            except Exception as e:  # noqa: BLE001
                built[v] = e
        x_all = torch.randn(max(ms), k, device="cuda", dtype=torch.bfloat16)
        for m in ms:
            if a.budget_s and time.time() - t_start > a.budget_s:
                doc["complete"] = False
                over = True
                print(f"# time budget of {a.budget_s:.0f} s reached; stopping", flush=True)
                break
            x = x_all[:m]
            rows = []
            for v in variants:
                row = {"variant": v, "n": n, "k": k, "m": m}
                b = built[v]
                if isinstance(b, Exception):
                    row["error"] = f"{type(b).__name__}: {b}"[:200]
                    rows.append(row)
                    continue
                sets, nbytes, call, deq = b
                row["weight_bytes"] = nbytes
                row["copies"] = len(sets)
                try:
                    xv = x_for(v, m, k, x)
                    if v in OURS and m in (ms[0], 16):
                        row["check"] = check_ours(v, call, sets, deq, x)
                        if not row["check"]["ok"]:
                            rows.append(row)
                            continue
                    row.update(time_variant(call, sets, xv, a.reps))
                    if v in OURS:
                        row["kernel"] = lowbit.last_kernels().get(OP_OF[v])
                except Exception as e:  # noqa: BLE001
                    row["error"] = f"{type(e).__name__}: {e}"[:200]
                rows.append(row)
            base = next((r.get("time_s") for r in rows if r["variant"] == "bf16"), None)
            peer_times = [r["time_s"] for r in rows if r["variant"] in PEERS and "time_s" in r]
            for r in rows:
                if "time_s" not in r:
                    continue
                t = r["time_s"]
                r["tflops"] = 2 * m * n * k / t / 1e12
                r["weight_gbps"] = r["weight_bytes"] / t / 1e9
                r["pct_bw"] = 100 * r["weight_gbps"] / bw
                if base:
                    r["ratio_bf16"] = base / t
                if peer_times and r["variant"] in OURS:
                    r["ratio_peer"] = min(peer_times) / t
            doc["rows"] += rows
            (out / "kernels_cuda.json").write_text(json.dumps(doc, indent=1))  # partial results survive a kill
            print(f"N={n} K={k} M={m}: " + ", ".join(
                f"{r['variant']} {r['time_s'] * 1e6:.1f}us" + (f" {r['ratio_bf16']:.2f}x" if r.get("ratio_bf16") else "")
                if "time_s" in r else f"{r['variant']} ERR" for r in rows), flush=True)
        del built, x_all
        torch.cuda.empty_cache()
    doc["elapsed_s"] = time.time() - t_start
    (out / "kernels_cuda.json").write_text(json.dumps(doc, indent=1))
    print(write_markdown(doc, out / "kernels_cuda.md"))
    print(plot(doc, out / "kernels_cuda.png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
