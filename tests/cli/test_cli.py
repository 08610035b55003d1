"""The ``lowbit`` command: quantize (streaming, bounded memory, atomic output), inspect, bench,
and one-line errors on bad input."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import lowbit
from lowbit.cli import main

os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers = pytest.importorskip("transformers")
from safetensors.torch import load_file, save_file  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

from lowbit.integrations.transformers import LowbitConfig  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:lowbit.quantize:UserWarning")

PYTHON_DIR = str(Path(lowbit.__file__).resolve().parents[1])
PROMPT = torch.tensor([[3, 14, 15, 92, 65, 35, 89, 79]])


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    env["PYTHONPATH"] = PYTHON_DIR + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _llama_config(**kw):
    return transformers.LlamaConfig(**{**dict(vocab_size=256, hidden_size=64, intermediate_size=128,
                                              num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                              max_position_embeddings=128), **kw})


@pytest.fixture(scope="module")
def llama_src(tmp_path_factory):
    """A sharded float checkpoint with a tokenizer-like extra file."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("llama_src")
    AutoModelForCausalLM.from_config(_llama_config()).save_pretrained(folder, max_shard_size="100KB")
    (folder / "tokenizer_config.json").write_text("{}")
    assert (folder / "model.safetensors.index.json").exists()
    return folder


def run(argv, capsys):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def greedy(model):
    return model.generate(PROMPT, max_new_tokens=10, do_sample=False, pad_token_id=0)


def test_quantize_loads_like_from_pretrained(llama_src, tmp_path, capsys):
    dst = tmp_path / "q"
    rc, out, err = run(["quantize", llama_src, dst, "--weights", "int4", "--group-size", "32", "--quiet"], capsys)
    assert rc == 0, err
    assert "14 weights quantized to qint4" in out
    assert (dst / "tokenizer_config.json").exists() and (dst / "generation_config.json").exists()
    assert not (tmp_path / "q.tmp").exists()
    loaded = AutoModelForCausalLM.from_pretrained(dst)  # no quantization_config passed
    assert isinstance(loaded.model.layers[1].mlp.down_proj.weight, lowbit.QTensor)
    on_the_fly = AutoModelForCausalLM.from_pretrained(
        llama_src, quantization_config=LowbitConfig(weights="int4", group_size=32))
    with torch.no_grad():
        torch.testing.assert_close(loaded(PROMPT).logits, on_the_fly(PROMPT).logits, atol=0, rtol=0)
    assert torch.equal(greedy(loaded), greedy(on_the_fly))


def test_quantize_shards_and_activations(llama_src, tmp_path, capsys):
    dst = tmp_path / "q"
    rc, _, err = run(["quantize", llama_src, dst, "--weights", "int8", "--activations", "int8",
                      "--exclude", "down_proj", "--max-shard-size", "30KB", "--quiet"], capsys)
    assert rc == 0, err
    index = json.loads((dst / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    assert "model.layers.0.mlp.up_proj.weight.codes" in index["weight_map"]
    assert "model.layers.0.mlp.down_proj.weight" in index["weight_map"]  # excluded: float
    model = AutoModelForCausalLM.from_pretrained(dst)
    up = model.model.layers[0].mlp.up_proj
    assert up.activation_qtype == lowbit.qint8 and float(up.input_scale) == 0.0 and not up._act_calibrated
    assert type(model.model.layers[0].mlp.down_proj) is torch.nn.Linear
    assert greedy(model).shape == (1, 18)


def test_quantize_gpt2_hub_style_keys(tmp_path, capsys):
    """Hub GPT-2 checkpoints name tensors ``h.0.attn.c_attn.weight`` (no ``transformer.`` prefix) and
    store Conv1D weights ``[in, out]``."""
    torch.manual_seed(0)
    src = tmp_path / "gpt2"
    float_model = AutoModelForCausalLM.from_config(transformers.GPT2Config(vocab_size=256, n_embd=64, n_layer=2,
                                                                          n_head=4, n_positions=128))
    float_model.save_pretrained(src)
    state = load_file(str(src / "model.safetensors"))
    save_file({k.removeprefix("transformer."): v for k, v in state.items()}, str(src / "model.safetensors"),
              metadata={"format": "pt"})
    rc, _, err = run(["quantize", src, tmp_path / "q", "--weights", "int8", "--quiet"], capsys)
    assert rc == 0, err
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "q")
    w = model.transformer.h[0].attn.c_attn.weight
    assert isinstance(w, lowbit.QTensor) and w.shape == (192, 64)
    with torch.no_grad():
        a, b = float_model.eval()(PROMPT).logits, model(PROMPT).logits
    assert torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0) > 0.99


def test_inspect(llama_src, tmp_path, capsys):
    dst = tmp_path / "q"
    assert run(["quantize", llama_src, dst, "--weights", "int4", "--group-size", "32", "--quiet"], capsys)[0] == 0
    rc, out, _ = run(["inspect", dst, "--json"], capsys)
    assert rc == 0
    info = json.loads(out)
    assert len(info["layers"]) == 14
    q = next(layer for layer in info["layers"] if layer["module"] == "model.layers.0.self_attn.q_proj")
    # 64x64 int4 codes (2048 B) + float32 scale and zero-point per 32 inputs (2 * 64*2*4 B)
    assert q["weights"] == "qint4" and q["group_size"] == 32 and q["shape"] == [64, 64]
    assert q["bytes"] == 2048 + 1024 and q["float_bytes"] == 64 * 64 * 4 and q["bits_per_weight"] == 6.0
    assert 0 < info["ratio"] < 0.5
    rc, out, _ = run(["inspect", dst], capsys)
    assert rc == 0 and "model.layers.1.mlp.up_proj" in out and "smaller" in out.splitlines()[-1]
    rc, out, _ = run(["inspect", llama_src], capsys)  # a float checkpoint: nothing quantized, ratio 1
    assert rc == 0 and "no lowbit-quantized weights" in out and "(100.0%" in out


def _bad_inputs(tmp_path, src):
    empty = tmp_path / "empty"
    empty.mkdir()
    nosafe = tmp_path / "nosafe"
    nosafe.mkdir()
    (nosafe / "config.json").write_text(json.dumps(_llama_config().to_dict()))
    (nosafe / "pytorch_model.bin").write_bytes(b"")
    badjson = tmp_path / "badjson"
    badjson.mkdir()
    (badjson / "config.json").write_text("{not json")
    (badjson / "model.safetensors").write_bytes(b"garbage")
    exists = tmp_path / "exists"
    exists.mkdir()
    return {
        "missing folder": (["quantize", tmp_path / "nope", tmp_path / "o"], "does not exist"),
        "not a checkpoint": (["quantize", empty, tmp_path / "o"], "no config.json"),
        "bin only": (["quantize", nosafe, tmp_path / "o"], "safetensors"),
        "bad config": (["quantize", badjson, tmp_path / "o"], "config"),
        "unknown qtype": (["quantize", src, tmp_path / "o", "--weights", "int3"], "unknown qtype 'int3'"),
        "group size": (["quantize", src, tmp_path / "o", "--weights", "int4", "--group-size", "48"],
                       "group_size 48 does not divide the 64 input features of module 'model.layers.0"),
        "bad optimizer": (["quantize", src, tmp_path / "o", "--optimizer", "sgd"], "optimizer"),
        "dst exists": (["quantize", src, exists], "already exists"),
        "inspect missing": (["inspect", tmp_path / "nope"], "does not exist"),
        "inspect corrupt": (["inspect", badjson], "not valid JSON"),
        "bench missing": (["bench", "--bench-dir", tmp_path / "nope"], "no benchmark script"),
    }


CASES = ["missing folder", "not a checkpoint", "bin only", "bad config", "unknown qtype", "group size",
         "bad optimizer", "dst exists", "inspect missing", "inspect corrupt", "bench missing"]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_one_line(llama_src, tmp_path, capsys, case):
    argv, message = _bad_inputs(tmp_path, llama_src)[case]
    rc, _, err = run(argv + ["--quiet"] if argv[0] == "quantize" else argv, capsys)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lowbit: error: "), err
    assert message in lines[0]
    assert not (tmp_path / "o").exists() and not (tmp_path / "o.tmp").exists()


def test_disk_full_leaves_nothing(llama_src, tmp_path, capsys, monkeypatch):
    import safetensors.torch

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(safetensors.torch, "save_file", full)
    rc, _, err = run(["quantize", llama_src, tmp_path / "o", "--weights", "int4", "--quiet"], capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "No space left on device" in err
    assert os.listdir(tmp_path) == []


def test_interrupt_leaves_nothing(llama_src, tmp_path, capsys, monkeypatch):
    import lowbit.tensor
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)
    real = lowbit.tensor.quantize_weight
    monkeypatch.setattr(lowbit.tensor, "quantize_weight", interrupted)
    rc, _, err = run(["quantize", llama_src, tmp_path / "o", "--quiet"], capsys)
    assert rc == 130 and "interrupted" in err
    assert os.listdir(tmp_path) == []


def test_killed_run_leaves_no_complete_folder(llama_src, tmp_path):
    """SIGKILL gives no chance to clean up: DST must not exist, and DST.tmp holds no config.json."""
    script = textwrap.dedent(f"""
        import os, signal, lowbit.tensor, lowbit.cli
        real, calls = lowbit.tensor.quantize_weight, []
        def killer(*a, **k):
            calls.append(1)
            if len(calls) == 10:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(*a, **k)
        lowbit.tensor.quantize_weight = killer
        lowbit.cli.main(["quantize", {str(llama_src)!r}, {str(tmp_path / 'o')!r}, "--quiet", "--max-shard-size", "10KB"])
    """)
    proc = subprocess.run([sys.executable, "-c", script], env=_env(), capture_output=True)
    assert proc.returncode == -9
    assert not (tmp_path / "o").exists()
    assert (tmp_path / "o.tmp").exists() and not (tmp_path / "o.tmp" / "config.json").exists()
    # the next run starts over and completes
    assert main(["quantize", str(llama_src), str(tmp_path / "o"), "--quiet"]) == 0
    assert not (tmp_path / "o.tmp").exists() and (tmp_path / "o" / "config.json").exists()


def test_bench_runs_the_scripts(tmp_path, capsys):
    (tmp_path / "primitives.py").write_text("import sys; print('primitives', sys.argv[1:])")
    rc, out, err = run(["bench", "--bench-dir", tmp_path, "--quick"], capsys)
    assert rc == 0
    assert "model.py not found" in err  # run what exists, say what does not


def test_python_dash_m(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "lowbit", "--help"], env=_env(), capture_output=True, text=True)
    assert proc.returncode == 0 and "quantize" in proc.stdout and "inspect" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "lowbit", "inspect", str(tmp_path / "nope")], env=_env(),
                          capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith("lowbit: error:")


# ---- streaming: peak memory on a checkpoint several times larger than the memory it may use
def _write_big_checkpoint(folder: Path) -> int:
    """A Llama-shaped float32 checkpoint of ~400 MB in 3 shards, random weights."""
    cfg = _llama_config(vocab_size=8192, hidden_size=1024, intermediate_size=4096, num_hidden_layers=5,
                        num_attention_heads=8, num_key_value_heads=8, tie_word_embeddings=False)
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in transformers.LlamaForCausalLM(cfg).state_dict().items()}
    folder.mkdir()
    cfg.save_pretrained(folder)
    g = torch.Generator().manual_seed(0)
    shards, current, size = [], {}, 0
    for k, shape in shapes.items():
        current[k] = torch.randn(shape, generator=g) * 0.02
        size += current[k].numel() * 4
        if size > 140e6 or k == list(shapes)[-1]:
            shards.append(current)
            current, size = {}, 0
    weight_map = {}
    for i, tensors in enumerate(shards):
        name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(tensors, str(folder / name), metadata={"format": "pt"})
        weight_map.update({k: name for k in tensors})
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return sum(f.stat().st_size for f in folder.glob("*.safetensors"))


def test_streaming_peak_rss(tmp_path):
    src_bytes = _write_big_checkpoint(tmp_path / "big")
    assert src_bytes > 380e6
    script = textwrap.dedent(f"""
        import resource, json
        import torch, transformers, safetensors, tqdm
        import lowbit.cli, lowbit.integrations.transformers, transformers.models.llama.modeling_llama
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        rc = lowbit.cli.main(["quantize", {str(tmp_path / 'big')!r}, {str(tmp_path / 'q')!r}, "--weights", "int4",
                              "--max-shard-size", "16MB", "--quiet"])
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        print(json.dumps(dict(rc=rc, base=base, peak=peak)))
    """)
    # Linux keeps a process's peak RSS across fork+exec: a child of this (large) pytest process would
    # report pytest's peak. A small launcher in between gives the measuring process a clean count.
    launcher = "import subprocess, sys; sys.exit(subprocess.call(sys.argv[1:]))"
    proc = subprocess.run([sys.executable, "-c", launcher, sys.executable, "-c", script], env=_env(),
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    growth = res["peak"] - res["base"]
    print(f"checkpoint {src_bytes / 1e6:.0f} MB, peak RSS growth while quantizing {growth / 1e6:.0f} MB "
          f"(process peak {res['peak'] / 1e6:.0f} MB)")
    assert res["rc"] == 0
    # largest tensor 32 MB, its temporaries and a 16 MB output shard; the checkpoint is > 3x this bound
    assert growth < src_bytes / 3, growth
    out = list((tmp_path / "q").glob("*.safetensors"))
    assert len(out) > 3 and all(f.stat().st_size < 40e6 for f in out)
