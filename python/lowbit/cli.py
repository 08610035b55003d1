"""The ``lowbit`` command (also ``python -m lowbit``).

    lowbit quantize SRC DST --weights int4 [--activations int8] [--group-size 128] [--optimizer hqq]
                            [--exclude PATTERN ...] [--max-shard-size 2GB] [--overwrite] [--quiet]
    lowbit inspect DIR [--json]
    lowbit bench [--quick] [--only primitives|model]

``quantize`` streams a transformers checkpoint folder tensor by tensor: each tensor is
read from its memory-mapped safetensors file (the file is opened for that tensor only,
so the kernel's page cache, not this process, keeps the rest), quantized if it is the
weight of a layer to quantize, and added to the output shard being filled; a shard is
written as soon as it reaches ``--max-shard-size``. Peak memory is therefore about the
largest tensor, its quantization temporaries and one output shard, whatever the size
of the model. Everything is written into ``DST.tmp`` and renamed to ``DST`` at the very
end, so an interrupted run never leaves a folder that looks complete.

Bad input gets one line on stderr (``lowbit: error: ...``) and exit code 2; an
interrupted run exits with 130.
"""
import argparse
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

__all__ = ["main"]

SIZE_UNITS = {"": 1, "B": 1, "KB": 10 ** 3, "MB": 10 ** 6, "GB": 10 ** 9, "KIB": 2 ** 10, "MIB": 2 ** 20,
              "GIB": 2 ** 30}
# bytes per element of the safetensors dtype names
ST_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
                  "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "U32": 4, "U64": 8}
FLOAT_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8}


class CLIError(Exception):
    """Bad input or an environment problem: reported as one line, exit code 2."""


# ---------------------------------------------------------------------------------------- helpers
def _parse_size(text: str) -> int:
    t = text.strip().upper().replace(" ", "")
    num = t.rstrip("KMGIB")
    unit = t[len(num):]
    try:
        value = float(num)
    except ValueError:
        value = -1
    if unit not in SIZE_UNITS or value <= 0:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (examples: 500MB, 2GB, 1GiB)")
    return int(value * SIZE_UNITS[unit])


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def _read_json(path: Path) -> dict:
    try:
        with open(path) as f:
            doc = json.load(f)
    except json.JSONDecodeError as e:
        raise CLIError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(doc, dict):
        raise CLIError(f"{path} does not hold a JSON object")
    return doc


def _checkpoint_files(folder: Path) -> list:
    """The safetensors files of a checkpoint folder (in the index's order when sharded)."""
    if not folder.exists():
        raise CLIError(f"{folder} does not exist")
    if not folder.is_dir():
        raise CLIError(f"{folder} is not a folder")
    if not (folder / "config.json").is_file():
        raise CLIError(f"{folder} is not a transformers checkpoint folder (no config.json)")
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map = _read_json(index).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise CLIError(f"{index} has no weight_map")
        files = list(dict.fromkeys(weight_map.values()))
        missing = [f for f in files if not (folder / f).is_file()]
        if missing:
            raise CLIError(f"{folder}: shard(s) named in {index.name} are missing: {missing[:3]}")
        return [folder / f for f in files]
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        if list(folder.glob("*.bin")) or list(folder.glob("*.pt")):
            raise CLIError(f"{folder} has PyTorch .bin/.pt weights only; lowbit reads safetensors checkpoints")
        raise CLIError(f"{folder} has no .safetensors files")
    return files


def _open(path: Path):
    from safetensors import safe_open
    try:
        return safe_open(str(path), framework="pt")
    except Exception as e:  # safetensors raises its own error types on corrupt files
        raise CLIError(f"cannot read {path}: {e}") from None


# ---------------------------------------------------------------------------------------- quantize
def _skeleton(src: Path):
    """The model described by ``src/config.json``, on the meta device (no memory)."""
    import torch
    import transformers
    try:
        config = transformers.AutoConfig.from_pretrained(str(src))
    except Exception as e:
        raise CLIError(f"{src}/config.json is not a transformers config: {e}") from None
    if getattr(config, "quantization_config", None) is not None:
        raise CLIError(f"{src} is already quantized (its config.json has a quantization_config)")
    archs = getattr(config, "architectures", None) or []
    cls = getattr(transformers, archs[0], None) if archs else None
    with torch.device("meta"):
        try:
            return cls(config) if cls is not None else transformers.AutoModel.from_config(config)
        except Exception as e:
            raise CLIError(f"cannot build the model of {src}/config.json ({type(e).__name__}: {e})") from None


class _ShardWriter:
    """Collects output tensors and writes a shard whenever ``max_bytes`` are pending."""

    def __init__(self, folder: Path, max_bytes: int):
        self.folder, self.max_bytes = folder, max_bytes
        self.pending, self.pending_bytes = {}, 0
        self.shards, self.weight_map, self.total = [], {}, 0

    def add(self, key, tensor):
        tensor = tensor.contiguous()
        nbytes = tensor.numel() * tensor.element_size()
        if self.pending and self.pending_bytes + nbytes > self.max_bytes:
            self.flush()
        self.pending[key] = tensor
        self.pending_bytes += nbytes
        self.total += nbytes

    def flush(self):
        if not self.pending:
            return
        from safetensors.torch import save_file
        name = f"shard-{len(self.shards):05d}.safetensors"
        try:
            save_file(self.pending, str(self.folder / name), metadata={"format": "pt", "lowbit": "1"})
        except Exception as e:  # OSError (disk full) or safetensors' own error type
            raise CLIError(f"cannot write {self.folder / name}: {e}") from None
        for k in self.pending:
            self.weight_map[k] = name
        self.shards.append(name)
        self.pending, self.pending_bytes = {}, 0

    def finish(self):
        """Renames the shards the transformers way and writes the index; returns the file names."""
        self.flush()
        n = len(self.shards)
        final = {s: ("model.safetensors" if n == 1 else f"model-{i + 1:05d}-of-{n:05d}.safetensors")
                 for i, s in enumerate(self.shards)}
        for old, new in final.items():
            os.replace(self.folder / old, self.folder / new)
        if n > 1:
            index = {"metadata": {"total_size": self.total},
                     "weight_map": {k: final[v] for k, v in sorted(self.weight_map.items())}}
            with open(self.folder / "model.safetensors.index.json", "w") as f:
                json.dump(index, f, indent=2)
        return list(final.values())


def _module_for_key(key: str, targets: dict, prefix: str):
    """The planned module a checkpoint key ``<module>.weight`` belongs to (checkpoint keys may
    lack or add the base-model prefix, e.g. GPT-2's ``h.0...`` for ``transformer.h.0...``)."""
    if not key.endswith(".weight"):
        return None
    name = key[: -len(".weight")]
    for cand in (name, f"{prefix}.{name}" if prefix else None,
                 name[len(prefix) + 1:] if prefix and name.startswith(prefix + ".") else None):
        if cand is not None and cand in targets:
            return cand
    return None


def cmd_quantize(args) -> int:
    import torch
    from .integrations.transformers import LowbitConfig, LowbitHfQuantizer
    from .nn.qmodule import QModuleMixin
    from .tensor import quantize_weight

    src, dst = Path(args.src), Path(args.dst)
    files = _checkpoint_files(src)
    if dst.exists() and not args.overwrite:
        raise CLIError(f"{dst} already exists (pass --overwrite to replace it)")
    if dst.resolve() == src.resolve():
        raise CLIError("SRC and DST are the same folder")
    try:
        qconfig = LowbitConfig(weights=args.weights, activations=args.activations, group_size=args.group_size,
                               optimizer=args.optimizer, modules_to_not_convert=args.exclude or None)
    except ValueError as e:
        raise CLIError(str(e)) from None

    # the plan: the same modules, group sizes and fallbacks as from_pretrained(quantization_config=...)
    model = _skeleton(src)
    quantizer = LowbitHfQuantizer(qconfig, pre_quantized=False)
    try:
        quantizer._process_model_before_weight_loading(model)
    except ValueError as e:
        raise CLIError(str(e)) from None
    qmodules = {n: m for n, m in model.named_modules() if isinstance(m, QModuleMixin)}
    targets = {n: m for n, m in qmodules.items() if m.weight_qtype is not None}
    prefix = getattr(model, "base_model_prefix", "") or ""

    # inventory: names, sizes (headers only)
    inventory, total_bytes = [], 0
    for path in files:
        with _open(path) as f:
            for key in f.keys():
                sl = f.get_slice(key)
                nbytes = math.prod(sl.get_shape()) * ST_DTYPE_BYTES.get(sl.get_dtype(), 4)
                inventory.append((path, key, nbytes))
                total_bytes += nbytes

    tmp = dst.parent / (dst.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        tmp.mkdir(parents=True)
    except OSError as e:
        raise CLIError(f"cannot create {tmp}: {e}") from None
    try:
        writer = _ShardWriter(tmp, args.max_shard_size)
        done = set()
        from tqdm import tqdm
        bar = tqdm(total=total_bytes, unit="B", unit_scale=True, desc="quantizing", disable=args.quiet,
                   file=sys.stderr)
        for i, (path, key, nbytes) in enumerate(inventory):
            # opened per tensor: closing unmaps the file, so its pages do not pile up in this process
            with _open(path) as f:
                tensor = f.get_tensor(key)
            name = _module_for_key(key, targets, prefix)
            if name is None:
                writer.add(key, tensor)
            else:
                module = targets[name]
                w = tensor.t() if name in quantizer.transposed else tensor
                if tuple(w.shape) != tuple(module.weight.shape):
                    raise CLIError(f"{key}: shape {list(tensor.shape)} in the checkpoint, the model's config "
                                   f"expects {list(module.weight.shape)}")
                try:
                    q = quantize_weight(w, module.weight_qtype, module.group_size, module.optimizer)
                except ValueError as e:
                    raise CLIError(f"{key}: {e}") from None
                del w
                for inner, t in q.inner_tensors().items():
                    writer.add(f"{key}.{inner}", t)
                done.add(name)
                del q
            del tensor
            bar.update(nbytes)
            bar.set_postfix_str(f"{i + 1}/{len(inventory)} tensors", refresh=False)
        # activation scales: 0 = not calibrated, i.e. dynamic per-tensor quantization
        for name, m in qmodules.items():
            if m.activation_qtype is not None and (m.weight_qtype is None or name in done):
                writer.add(f"{name}.{m.activation_site}_scale", torch.zeros((), dtype=torch.float32))
        shards = writer.finish()
        bar.close()

        qmap = {}
        for name, m in qmodules.items():
            if m.weight_qtype is not None and name not in done:
                continue  # weight absent from the checkpoint (e.g. tied to the embeddings): stays float
            entry = m.quantization_config()
            entry["frozen"] = m.weight_qtype is not None
            qmap[name] = entry
        if not any(e["weights"] for e in qmap.values()):
            raise CLIError(f"nothing to quantize in {src}: no weight of a linear layer matched the model's config")
        qconfig.quantization_map = qmap
        config = _read_json(src / "config.json")
        config["quantization_config"] = qconfig.to_dict()
        # everything else (tokenizer, generation config, ...) is copied as is
        for p in src.iterdir():
            if p.is_file() and p.suffix != ".safetensors" and p.name not in ("config.json",
                                                                              "model.safetensors.index.json"):
                shutil.copy2(p, tmp / p.name)
        with open(tmp / "config.json", "w") as f:  # written last: a folder without it is not a checkpoint
            json.dump(config, f, indent=2, sort_keys=True)
        if dst.exists():
            shutil.rmtree(dst)
        os.replace(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(f"{dst}: {len(done)} weights quantized to {qconfig.weights}, {len(shards)} file(s), "
          f"{_human(total_bytes)} -> {_human(writer.total)} ({writer.total / max(total_bytes, 1):.1%})")
    return 0


# ---------------------------------------------------------------------------------------- inspect
def _inspect(folder: Path) -> dict:
    from .qtypes import QTYPES
    files = _checkpoint_files(folder)
    config = _read_json(folder / "config.json")
    qcfg = config.get("quantization_config") or {}
    if qcfg and qcfg.get("quant_method") != "lowbit":
        raise CLIError(f"{folder} is quantized with {qcfg.get('quant_method')!r}, not lowbit")
    qmap = qcfg.get("quantization_map") or {}
    float_bytes = FLOAT_BYTES.get(str(config.get("dtype") or config.get("torch_dtype") or "float32"), 4)
    tensors = {}
    for path in files:
        with _open(path) as f:
            for key in f.keys():
                sl = f.get_slice(key)
                tensors[key] = (list(sl.get_shape()), sl.get_dtype())

    def nbytes(shape, dtype):
        return math.prod(shape) * ST_DTYPE_BYTES.get(dtype, 4)

    def entry_for(module):
        if module in qmap:
            return qmap[module]
        for name, e in qmap.items():  # prefix differences (checkpoint keys vs model names)
            if name.endswith("." + module) or module.endswith("." + name):
                return e
        return None

    layers, used = [], set()
    for key, (shape, dtype) in tensors.items():
        if not key.endswith(".weight.codes"):
            continue
        module = key[: -len(".weight.codes")]
        entry = entry_for(module) or {}
        qtype = entry.get("weights") or "?"
        q = QTYPES.get(qtype)
        n, cols = shape[0], shape[1] if len(shape) > 1 else 1
        if q is not None and q.is_block:  # GGUF block bytes: block_bytes per block_size weights
            k = cols // q.block_bytes * q.block_size
        elif dtype == "U8":
            k = cols * 8 // (q.bits if q is not None else 8)
        else:
            k = cols
        size = 0
        for inner in ("codes", "scale", "zero_point"):
            t = tensors.get(f"{module}.weight.{inner}")
            if t is not None:
                size += nbytes(*t)
                used.add(f"{module}.weight.{inner}")
        layers.append({"module": module, "weights": qtype, "activations": entry.get("activations"),
                       "group_size": entry.get("group_size"), "optimizer": entry.get("optimizer"),
                       "shape": [n, k], "bytes": size, "float_bytes": n * k * float_bytes,
                       "bits_per_weight": 8 * size / max(n * k, 1)})
    other = sum(nbytes(*t) for k, t in tensors.items() if k not in used)
    qbytes = sum(layer["bytes"] for layer in layers)
    qfloat = sum(layer["float_bytes"] for layer in layers)
    # float size of the rest: the stored floats as they would be in the model dtype
    other_float = sum(math.prod(s) * (float_bytes if d in ("F32", "F16", "BF16", "F64") else ST_DTYPE_BYTES.get(d, 4))
                      for k, (s, d) in tensors.items() if k not in used)
    return {"folder": str(folder), "quant_method": qcfg.get("quant_method"), "float_dtype_bytes": float_bytes,
            "layers": layers, "quantized_bytes": qbytes, "other_bytes": other, "total_bytes": qbytes + other,
            "float_total_bytes": qfloat + other_float,
            "ratio": (qbytes + other) / max(qfloat + other_float, 1)}


def _granularity(layer) -> str:
    from .qtypes import QTYPES
    q = QTYPES.get(layer["weights"])
    if q is not None and q.is_block:
        return f"blk{q.block_size}"
    return str(layer["group_size"] or "row")


def cmd_inspect(args) -> int:
    info = _inspect(Path(args.dir))
    if args.json:
        print(json.dumps(info, indent=1))
        return 0
    rows = [("module", "qtype", "group", "shape", "bytes", "float bytes", "bits/w")]
    for layer in info["layers"]:
        rows.append((layer["module"], layer["weights"] + (f"/a:{layer['activations']}" if layer["activations"] else ""),
                     _granularity(layer), "x".join(map(str, layer["shape"])),
                     _human(layer["bytes"]), _human(layer["float_bytes"]), f"{layer['bits_per_weight']:.2f}"))
    if len(rows) > 1:
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for r in rows:
            print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
    else:
        print(f"{info['folder']}: no lowbit-quantized weights")
    print(f"quantized layers: {len(info['layers'])}, {_human(info['quantized_bytes'])}; other tensors: "
          f"{_human(info['other_bytes'])}")
    print(f"total: {_human(info['total_bytes'])} vs {_human(info['float_total_bytes'])} in float "
          f"({info['ratio']:.1%}, {1 / max(info['ratio'], 1e-9):.2f}x smaller)")
    return 0


# ---------------------------------------------------------------------------------------- bench
BENCHMARKS = {"primitives": "primitives.py", "model": "model.py"}


def cmd_bench(args) -> int:
    bench_dir = Path(args.bench_dir) if args.bench_dir else Path(__file__).resolve().parents[2] / "bench"
    names = [args.only] if args.only else list(BENCHMARKS)
    scripts = [(n, bench_dir / BENCHMARKS[n]) for n in names]
    missing = [str(s) for _, s in scripts if not s.is_file()]
    if len(missing) == len(scripts):
        raise CLIError(f"no benchmark script found ({', '.join(missing)}); the benchmarks ship with the source "
                       "checkout, pass --bench-dir")
    env = dict(os.environ)
    pkg_root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = pkg_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    rc = 0
    for name, script in scripts:
        if not script.is_file():
            print(f"lowbit bench: skipping {name}: {script} not found", file=sys.stderr)
            continue
        cmd = [sys.executable, str(script)] + (["--quick"] if args.quick else [])
        print(f"$ {' '.join(cmd)}", flush=True)
        rc = rc or subprocess.call(cmd, env=env, cwd=str(bench_dir))
    return rc


# ---------------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lowbit", description="Low-bit quantization of PyTorch / transformers models.")
    sub = p.add_subparsers(dest="command", required=True)

    q = sub.add_parser("quantize", help="quantize a transformers safetensors checkpoint folder, streaming",
                       description="Quantize a transformers checkpoint folder (safetensors, sharded or not) into a "
                                   "folder that from_pretrained loads, one tensor at a time.")
    q.add_argument("src", help="checkpoint folder (config.json + *.safetensors)")
    q.add_argument("dst", help="output folder (written as DST.tmp, renamed when complete)")
    q.add_argument("--weights", default="int8",
                   help="int2, int4, int8, fp8, float8_e5m2, q4_0, q8_0 (GGUF blocks) (default int8)")
    q.add_argument("--activations", default=None, help="int8, fp8 or float8_e5m2 (default: weight-only)")
    q.add_argument("--group-size", type=int, default=None,
                   help="input features per scale (default 128 for 2/4 bits, per row for 8 bits)")
    q.add_argument("--optimizer", default=None, help="absmax, minmax or hqq")
    q.add_argument("--exclude", action="append", default=None, metavar="PATTERN",
                   help="module name or regex left in float (repeatable; default: the output embedding)")
    q.add_argument("--max-shard-size", type=_parse_size, default=_parse_size("2GB"), metavar="SIZE",
                   help="largest output file before a new shard starts, e.g. 500MB (default 2GB); also bounds "
                        "the memory held for output")
    q.add_argument("--overwrite", action="store_true", help="replace DST if it exists")
    q.add_argument("--quiet", action="store_true", help="no progress bar")
    q.set_defaults(func=cmd_quantize)

    i = sub.add_parser("inspect", help="per-layer qtype, group size and bytes of a checkpoint folder")
    i.add_argument("dir")
    i.add_argument("--json", action="store_true", help="machine-readable output")
    i.set_defaults(func=cmd_inspect)

    b = sub.add_parser("bench", help="run the kernel and model benchmarks (bench/) with their defaults")
    b.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    b.add_argument("--only", choices=sorted(BENCHMARKS), default=None)
    b.add_argument("--bench-dir", default=None, help="folder holding the bench scripts (default: the checkout's)")
    b.set_defaults(func=cmd_bench)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CLIError as e:
        print(f"lowbit: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # e.g. a disk that fills up while copying files
        print(f"lowbit: error: {e.strerror or e}{': ' + e.filename if getattr(e, 'filename', None) else ''}",
              file=sys.stderr)
        return 2
    except ImportError as e:
        if e.name not in ("transformers", "tqdm", "safetensors"):
            raise
        print(f"lowbit: error: lowbit {args.command} needs {e.name} (pip install 'lowbit[hf]')", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lowbit: interrupted; no output was left behind", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
