"""Prefill throughput of the float32 decoder, ours against the peers, in alternation.

`model.py` runs each configuration in its own process, one after the other, so that each
peak RSS holds one model; on a shared VM whose speed drifts by 10-30% over minutes, its
prefill column compares configurations measured minutes apart. Prefill of a float32 model
is bound by the float32 FMA rate for every library (about 455 GMAC of linear layers for a
512-token prompt of the full model), so the differences are small and drift decides them.

Here every configuration is built once in one process (the full model's shapes, 8 of its
16 layers by default, so that all of them fit in memory together) and the prefills are timed round by
round: in each round every model runs once, in a rotated order, so all of them share the
machine's state of that minute. Reported: the median tokens/s per configuration, and for
each of our configurations against each peer of the same format the median, min and max of
the per-round ratios (ours / peer).

    PYTHONPATH=python .venv/bin/python bench/prefill.py            # 8 layers, 7 rounds: ~8 min
    PYTHONPATH=python .venv/bin/python bench/prefill.py --layers 4 --rounds 5
"""
from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import _common  # noqa: E402
import model as bench_model  # noqa: E402

# (ours, [peers of the same format]); every name is a configuration of model.py
PAIRS = [
    ("lowbit W8A16", ["quanto W8A16", "torchao W8A16"]),
    ("lowbit W4A16 minmax", ["quanto W4A16", "torchao W4A16"]),
    ("lowbit W8A8", ["torchao W8A8"]),
]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # 8 of the full model's 16 layers: the nine configurations live in one process (about
    # 10 GiB with 8 layers; 20 with 16, too close to this machine's 24)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--prompt-len", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--configs", default="", help="comma-separated substrings: keep the pairs whose ours matches")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "out"))
    args = ap.parse_args(argv)

    pairs = [p for p in PAIRS if not args.configs or any(s in p[0] for s in args.configs.split(","))]
    names = ["float32"] + [n for ours, peers in pairs for n in [ours, *peers]]
    shape = dict(bench_model.FULL, layers=args.layers)
    info = _common.machine_info()
    print(f"model {shape}, prompt {args.prompt_len}, {args.rounds} rounds; {info['cpu']}", flush=True)

    base = bench_model.llama(shape, args.prompt_len + 8)
    models, skipped = {}, {}
    for name in names:
        try:
            t0 = time.perf_counter()
            m, ctx = bench_model.build(name, base)
            models[name] = (m, ctx)
            print(f"built {name} in {time.perf_counter() - t0:.0f} s; process RSS "
                  f"{bench_model.rss_bytes() / 2**30:.1f} GiB", flush=True)
        except Exception as e:  # a peer that does not run here is reported, not fatal
            skipped[name] = _common.first_line(e)
            print(f"skipped {name}: {skipped[name]}", flush=True)
        gc.collect()

    ids = torch.randint(0, shape["vocab"], (1, args.prompt_len), generator=torch.Generator().manual_seed(0))
    order = list(models)

    def once(name) -> float:
        m, ctx = models[name]
        with torch.no_grad(), ctx():
            t0 = time.perf_counter()
            m(input_ids=ids, use_cache=False)
            return time.perf_counter() - t0

    for name in order:  # warm-up: first-call allocations, lazy packing, thread pools
        once(name)
    secs = {n: [] for n in order}
    for r in range(args.rounds):
        rot = order[r % len(order):] + order[: r % len(order)]
        for name in rot:
            secs[name].append(once(name))
        print(f"round {r + 1}: " + ", ".join(f"{n} {args.prompt_len / secs[n][-1]:.1f}" for n in order), flush=True)

    tok_s = {n: [args.prompt_len / s for s in secs[n]] for n in order}
    rows = [dict(config=n, median_tok_s=statistics.median(tok_s[n]), min_tok_s=min(tok_s[n]),
                 max_tok_s=max(tok_s[n])) for n in order]
    ratios = []
    for ours, peers in pairs:
        for peer in peers:
            if ours not in tok_s or peer not in tok_s:
                continue
            rr = [a / b for a, b in zip(tok_s[ours], tok_s[peer])]
            ratios.append(dict(ours=ours, peer=peer, median=statistics.median(rr), min=min(rr), max=max(rr),
                               rounds_ahead=sum(x > 1 for x in rr), rounds=len(rr)))
    md = [_common.machine_markdown(info, {"model": str(shape), "prompt tokens": args.prompt_len,
                                          "rounds": args.rounds}),
          "", _common.markdown_table(rows, [("config", "config"), ("median_tok_s", "median tok/s"),
                                            ("min_tok_s", "min"), ("max_tok_s", "max")]),
          "", "Per-round ratio of prefill tokens/s, ours / peer:", "",
          _common.markdown_table(ratios, [("ours", "ours"), ("peer", "peer"), ("median", "median"), ("min", "min"),
                                          ("max", "max"), ("rounds_ahead", "rounds ahead"), ("rounds", "rounds")])]
    if skipped:
        md += ["", "Not run: " + "; ".join(f"{k}: {v}" for k, v in skipped.items())]
    text = "\n".join(md)
    print(text)
    out = Path(args.out)
    _common.write_json(out / "prefill.json", dict(machine=info, shape=shape, seconds=secs, rows=rows, ratios=ratios,
                                                  skipped=skipped))
    _common.write_markdown(out / "prefill.md", text)


if __name__ == "__main__":
    main()
