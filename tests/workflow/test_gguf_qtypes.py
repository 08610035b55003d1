"""GGUF Q4_0 / Q8_0 as weight qtypes of the workflow: quantize -> freeze -> linear_q4_0 / linear_q8_0,
save / load / requantize, quantization_map, torch.compile, bad inputs, transformers and the CLI.

The reference of every model output is the same model with each quantized weight replaced by its
dequantized float (``lowbit.ops.dequantize_q4_0`` / ``_q8_0`` of the GGUF block bytes)."""
import copy
import json
import os
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

import lowbit
from conftest import corrupt_saved, ran_on
from lowbit.nn import QEmbedding, QLinear

QTYPES = ["q4_0", "q8_0"]
OPS = {"q4_0": "linear_q4_0", "q8_0": "linear_q8_0"}
BLOCK_BYTES = {"q4_0": 18, "q8_0": 34}


def ops_quantize(name, w):
    return lowbit.ops.quantize_q4_0(w) if name == "q4_0" else lowbit.ops.quantize_q8_0(w)


def ops_dequantize(name, blocks):
    return lowbit.ops.dequantize_q4_0(blocks) if name == "q4_0" else lowbit.ops.dequantize_q8_0(blocks)


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(64, 96)
        self.fc2 = nn.Linear(96, 32, bias=False)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


class ToyTransformer(nn.Module):
    """Embedding, one pre-norm attention + MLP block, a head: no Conv."""

    def __init__(self, vocab=100, d=64, heads=4, mlp=128):
        super().__init__()
        self.heads = heads
        self.emb = nn.Embedding(vocab, d)
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.up, self.down = nn.Linear(d, mlp), nn.Linear(mlp, d)
        self.head = nn.Linear(d, vocab, bias=False)
        self.register_buffer("positions", torch.arange(64), persistent=False)

    def forward(self, ids):
        b, t = ids.shape
        h = self.emb(ids) + 0.01 * self.positions[:t, None].float()
        x = self.norm1(h)
        split = lambda y: y.view(b, t, self.heads, -1).transpose(1, 2)  # noqa: E731
        att = F.scaled_dot_product_attention(split(self.q(x)), split(self.k(x)), split(self.v(x)), is_causal=True)
        h = h + self.o(att.transpose(1, 2).reshape(b, t, -1))
        h = h + self.down(F.gelu(self.up(self.norm2(h))))
        return self.head(h)


@pytest.fixture
def gguf_calls(monkeypatch):
    """op name -> the int8_activations argument of each call of lowbit.ops.linear_q4_0 / _q8_0 (as the
    model path calls them), so a test sees that the GGUF kernel ran (last_kernels() keeps old entries)."""
    calls = {"linear_q4_0": [], "linear_q8_0": []}
    for op in calls:
        real = getattr(lowbit.ops, op)

        def spy(x, blocks, bias=None, int8_activations=None, _real=real, _op=op):
            calls[_op].append(int8_activations)
            return _real(x, blocks, bias, int8_activations)
        monkeypatch.setattr(lowbit.ops, op, spy)
    return calls


def reference(model):
    """Float copy of a frozen model, each QTensor replaced by its dequantized weight."""
    ref = copy.deepcopy(model)
    for m in ref.modules():
        w = getattr(m, "weight", None)
        if isinstance(w, lowbit.QTensor):
            m.weight = nn.Parameter(w.dequantize(), requires_grad=False)
    return ref


def ids(b=3, t=7, vocab=100):
    return torch.randint(0, vocab, (b, t), generator=torch.Generator().manual_seed(3))


def toy(name):
    torch.manual_seed(0)
    return lowbit.freeze(lowbit.quantize(ToyTransformer().eval(), name))


# ---------------------------------------------------------------- qtypes and QTensor

def test_qtype_names_and_properties():
    for alias in ("q4_0", "gguf_q4_0", "qgguf_q4_0", "Q4_0"):
        assert lowbit.qtype(alias) is lowbit.qgguf_q4_0
    for alias in ("q8_0", "gguf_q8_0", "qgguf_q8_0"):
        assert lowbit.qtype(alias) is lowbit.qgguf_q8_0
    q4, q8 = lowbit.qgguf_q4_0, lowbit.qgguf_q8_0
    assert q4.is_block and q8.is_block and not q4.is_packed and not q4.is_float
    assert (q4.block_size, q4.block_bytes, q4.bits_per_weight) == (32, 18, 4.5)
    assert (q8.block_size, q8.block_bytes, q8.bits_per_weight) == (32, 34, 8.5)
    assert q4.storage_dtype == q8.storage_dtype == torch.uint8
    assert not lowbit.qint4.is_block and lowbit.qint4.is_packed and lowbit.qint4.bits_per_weight is None
    assert "qgguf_q4_0" in lowbit.__all__ and "qgguf_q8_0" in lowbit.__all__


@pytest.mark.parametrize("name", QTYPES)
@pytest.mark.parametrize("shape", [(24, 64), (8, 4, 3, 32), (96,)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_quantize_weight_holds_the_gguf_bytes(name, shape, dtype):
    w = torch.randn(shape, dtype=dtype)
    q = lowbit.quantize_weight(w, name)
    n, k = lowbit.tensor.weight_matrix_shape(shape)
    assert q.shape == w.shape and q.dtype == dtype and q.qtype is lowbit.qtype(name)
    assert q.codes.dtype == torch.uint8 and q.codes.shape == (n, k // 32 * BLOCK_BYTES[name])
    assert q.scale is None and q.zero_point is None and q.axis is None and q.group_size is None
    assert torch.equal(q.codes, ops_quantize(name, w.reshape(n, k)))
    assert torch.equal(q.dequantize(), ops_dequantize(name, q.codes).to(dtype).reshape(shape))
    assert q.dequantize(torch.float32).dtype == torch.float32


@pytest.mark.parametrize("name", QTYPES)
def test_bytes_match_gguf_py(name):
    gguf = pytest.importorskip("gguf")
    w = torch.randn(16, 128)
    kind = gguf.GGMLQuantizationType.Q4_0 if name == "q4_0" else gguf.GGMLQuantizationType.Q8_0
    expected = gguf.quants.quantize(w.numpy(), kind)
    assert np.array_equal(lowbit.quantize_weight(w, name).codes.numpy(), expected)


@pytest.mark.parametrize("name", QTYPES)
def test_qtensor_flatten_detach_clone_to_pickle(name):
    q = lowbit.quantize_weight(torch.randn(8, 64), name)
    names, ctx = q.__tensor_flatten__()
    assert names == ["codes"] and list(q.inner_tensors()) == ["codes"]
    r = lowbit.QTensor.__tensor_unflatten__({"codes": q.codes}, ctx, q.shape, q.stride())
    assert torch.equal(r.dequantize(), q.dequantize()) and r.qtype is q.qtype
    for t in (q.detach(), q.clone(), q.to("cpu"), copy.deepcopy(q), pickle.loads(pickle.dumps(q))):
        assert isinstance(t, lowbit.QTensor) and t.scale is None and torch.equal(t.dequantize(), q.dequantize())
    assert q.clone().codes.data_ptr() != q.codes.data_ptr()
    h = q.to(torch.float16)
    assert h.dtype == torch.float16 and torch.equal(h.dequantize(), ops_dequantize(name, q.codes).half())
    m = q.to("meta")
    assert m.is_meta and m.codes.is_meta and m.scale is None
    assert f"qtype=qgguf_{name}" in repr(q) and "blocks of 32" in repr(q)


@pytest.mark.parametrize("name", QTYPES)
def test_functional_routing(name):
    """linear runs the GGUF op; embedding dequantizes the looked-up rows only; conv and other
    ops dequantize the weight (the format's blocks run along the flattened input features)."""
    x = torch.randn(2, 5, 64)
    q = lowbit.quantize_weight(torch.randn(16, 64), name)
    ref = F.linear(x, q.dequantize(), torch.ones(16))
    torch.testing.assert_close(F.linear(x, q, torch.ones(16)), ref, rtol=1e-5, atol=1e-5)
    assert lowbit.last_kernels()[OPS[name]].startswith("avx2") or lowbit.cpu_isa() == "portable"
    e = lowbit.quantize_weight(torch.randn(30, 64), name)
    tokens = torch.tensor([[0, 29, 5], [5, 5, 1]])
    assert torch.equal(F.embedding(tokens, e), F.embedding(tokens, e.dequantize()))
    c = lowbit.quantize_weight(torch.randn(6, 8, 4), name)
    xc = torch.randn(2, 8, 10)
    assert torch.equal(F.conv1d(xc, c, padding=1), F.conv1d(xc, c.dequantize(), padding=1))
    c2 = lowbit.quantize_weight(torch.randn(6, 8, 2, 2), name)
    x2 = torch.randn(2, 8, 5, 5)
    assert torch.equal(F.conv2d(x2, c2), F.conv2d(x2, c2.dequantize()))


# ---------------------------------------------------------------- quantize / freeze

@pytest.mark.parametrize("name", QTYPES)
def test_mlp_quantize_freeze_runs_the_gguf_kernel(name, isa, gguf_calls):
    torch.manual_seed(0)
    model = lowbit.quantize(MLP().eval(), weights=name)
    x = torch.randn(4, 64)
    qat = model(x)  # before freeze: weights quantized and dequantized on the fly
    lowbit.freeze(model)
    assert all(isinstance(m.weight, lowbit.QTensor) and m.weight.qtype is lowbit.qtype(name)
               for m in (model.fc1, model.fc2))
    ref = reference(model)
    with torch.no_grad():
        for rows in (1, 4, 40):  # GEMV, small GEMM, the packed GEMM from 32 rows
            xr = torch.randn(rows, 64)
            torch.testing.assert_close(model(xr), ref(xr), rtol=1e-5, atol=1e-5)
            assert ran_on(lowbit.last_kernels()[OPS[name]], isa)
        assert gguf_calls[OPS[name]] == [False] * 6  # two layers, three calls, float activations
        torch.testing.assert_close(model(x), qat, rtol=1e-5, atol=1e-5)
        for dtype in (torch.bfloat16, torch.float16):
            torch.testing.assert_close(model(x.to(dtype)).float(), ref(x.to(dtype).float()), rtol=0.02, atol=0.02)


def test_int8_activations_switch(isa, gguf_calls):
    """The model path follows lowbit.int8_activations for Q4_0 (default off: exact float activations,
    llama.cpp's int8 activations when on); Q8_0, like int8 weights, always keeps float activations."""
    torch.manual_seed(0)
    x = torch.randn(3, 64)
    q4 = lowbit.freeze(lowbit.quantize(MLP().eval(), "q4_0"))
    with torch.no_grad():
        ref = reference(q4)(x)
        exact = q4(x)
        assert lowbit.last_kernels()["linear_q4_0"] == ("portable" if isa == "portable" else "avx2_gemv_f32act")
        with lowbit.int8_activations(True):
            fast = q4(x)
            assert lowbit.last_kernels()["linear_q4_0"].endswith("int8act")
    torch.testing.assert_close(exact, ref, rtol=1e-5, atol=1e-5)
    assert not torch.equal(fast, exact)
    assert float((fast - ref).norm() / ref.norm()) < 0.02
    q8 = lowbit.freeze(lowbit.quantize(MLP().eval(), "q8_0"))
    with torch.no_grad(), lowbit.int8_activations(True):
        q8(x)
    assert not lowbit.last_kernels()["linear_q8_0"].endswith("int8act")
    assert gguf_calls == {"linear_q4_0": [False, False, True, True], "linear_q8_0": [False, False]}


@pytest.mark.parametrize("name", QTYPES)
def test_toy_transformer_matches_dequantized_reference(name, gguf_calls):
    model = toy(name)
    assert isinstance(model.emb, QEmbedding) and isinstance(model.q, QLinear) and type(model.norm1) is nn.LayerNorm
    assert model.emb.weight.codes.shape == (100, 2 * BLOCK_BYTES[name])
    x = ids()
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(model)(x), rtol=1e-4, atol=1e-4)
    assert len(gguf_calls[OPS[name]]) == 7  # q, k, v, o, up, down, head (the embedding looks rows up)


def test_quantization_map_entries():
    qmap = lowbit.quantization_map(toy("q4_0"))
    assert set(qmap) == {"emb", "q", "k", "v", "o", "up", "down", "head"}
    assert qmap["q"] == {"weights": "qgguf_q4_0", "activations": None, "activation_granularity": None,
                         "group_size": None, "optimizer": None, "frozen": True, "format_version": 2}
    json.dumps(qmap)
    # other qtypes keep format_version 1: files without GGUF weights stay readable by older lowbit
    assert lowbit.quantization_map(lowbit.quantize(MLP(), "int8"))["fc1"]["format_version"] == 1


# ---------------------------------------------------------------- save / load / requantize

@pytest.mark.parametrize("name", QTYPES)
def test_save_load_round_trip(name, tmp_path):
    model = toy(name)
    x = ids()
    with torch.no_grad():
        out = model(x)
    lowbit.save(model, str(tmp_path))
    sd = load_file(str(tmp_path / "model.safetensors"))
    assert sorted(k for k in sd if k.startswith("q.")) == ["q.bias", "q.weight.codes"]
    assert sd["up.weight.codes"].dtype == torch.uint8 and sd["up.weight.codes"].shape == (128, 2 * BLOCK_BYTES[name])
    assert torch.equal(sd["up.weight.codes"], model.up.weight.codes)
    with lowbit.empty_weights():
        fresh = ToyTransformer().eval()
    lowbit.load(fresh, str(tmp_path))
    assert isinstance(fresh.head.weight, lowbit.QTensor) and not fresh.head.weight.codes.is_meta
    with torch.no_grad():
        assert torch.equal(fresh(x), out)
    assert lowbit.quantization_map(fresh) == lowbit.quantization_map(model)


@pytest.mark.parametrize("name", QTYPES)
def test_requantize_from_meta_device(name):
    torch.manual_seed(0)
    model = lowbit.freeze(lowbit.quantize(MLP().eval(), name))
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.device("meta"):
        fresh = MLP()
    lowbit.requantize(fresh, sd, lowbit.quantization_map(model), device="cpu")
    x = torch.randn(5, 64)
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x))
    # an unfrozen model requantizes from its float weights and freezes to the same bytes
    qat = lowbit.quantize(MLP().eval(), name)
    again = lowbit.requantize(MLP().eval(), qat.state_dict(), lowbit.quantization_map(qat))
    assert not again.fc1.frozen
    assert torch.equal(lowbit.freeze(again).fc1.weight.codes, lowbit.freeze(qat).fc1.weight.codes)


def _corrupt_and_load(tmp_path, corrupt):
    model = lowbit.freeze(lowbit.quantize(MLP().eval(), "q4_0"))
    lowbit.save(model, str(tmp_path))
    corrupt_saved(str(tmp_path), corrupt)
    target = MLP()
    before = copy.deepcopy(target.state_dict())
    try:
        lowbit.load(target, str(tmp_path))
    finally:
        assert type(target.fc1) is nn.Linear  # nothing changed
        assert all(torch.equal(v, before[k]) for k, v in target.state_dict().items())


@pytest.mark.parametrize("corrupt,match", [
    (lambda sd, qm: sd.update({"fc1.weight.codes": sd["fc1.weight.codes"][:, :-1].contiguous()}),
     r"fc1.weight.codes: expected shape \[96, 36\] and dtype torch.uint8, got \[96, 35\]"),
    (lambda sd, qm: sd.update({"fc1.weight.codes": sd["fc1.weight.codes"].view(torch.int8)}),
     r"fc1.weight.codes: expected .* dtype torch.uint8, got \[96, 36\] and torch.int8"),
    (lambda sd, qm: sd.update({"fc1.weight.scale": torch.ones(96, 2)}), r"unexpected keys: \['fc1.weight.scale'\]"),
    (lambda sd, qm: sd.pop("fc2.weight.codes"), r"missing keys: \['fc2.weight.codes'\]"),
    (lambda sd, qm: qm["fc1"].update(weights="qgguf_q8_0"), r"fc1.weight.codes: expected shape \[96, 68\]"),
    (lambda sd, qm: qm["fc1"].update(weights="qint4"), r"missing keys: \['fc1.weight.scale'\]"),
    (lambda sd, qm: qm["fc1"].update(group_size=32), "group_size must be None"),
    (lambda sd, qm: qm["fc1"].update(optimizer="hqq"), "optimizer must be None"),
    (lambda sd, qm: qm["fc1"].update(activations="qgguf_q4_0"), "weight-only"),
    (lambda sd, qm: qm["fc1"].update(format_version=1), "qgguf_q4_0 weights need format_version 2"),
    (lambda sd, qm: qm["fc1"].update(format_version=4), "unsupported format_version 4"),
])
def test_load_rejects_bad_files(tmp_path, corrupt, match):
    with pytest.raises(ValueError, match=match):
        _corrupt_and_load(tmp_path, corrupt)


# ---------------------------------------------------------------- bad arguments

def test_bad_arguments_are_clear_errors():
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.ok = nn.Linear(64, 8)
            self.odd = nn.Linear(40, 8)

    m = Odd()
    with pytest.raises(ValueError, match=r"module 'odd' \(Linear\): qgguf_q4_0 needs the input features to be a "
                                         r"multiple of 32 \(its block size\), got 40"):
        lowbit.quantize(m, "q4_0")
    assert type(m.ok) is nn.Linear  # nothing replaced before the error
    lowbit.quantize(m, "q4_0", exclude="odd")
    with pytest.raises(ValueError, match="group_size must be None"):
        lowbit.quantize(MLP(), "q4_0", group_size=32)
    with pytest.raises(ValueError, match="optimizer must be None"):
        lowbit.quantize(MLP(), "q8_0", optimizer="absmax")
    for act in ("q4_0", "gguf_q8_0"):
        with pytest.raises(ValueError, match="weight-only format"):
            lowbit.quantize(MLP(), "int8", act)
    with pytest.raises(ValueError, match="multiple of 32"):
        lowbit.quantize_weight(torch.randn(4, 48), "q8_0")
    with pytest.raises(ValueError, match="group_size must be None"):
        lowbit.quantize_weight(torch.randn(4, 64), "q4_0", group_size=64)
    with pytest.raises(RuntimeError, match="non-finite value in block 1"):
        lowbit.quantize_weight(torch.tensor([[0.0] * 32 + [float("nan")] + [0.0] * 31]), "q4_0")


# ---------------------------------------------------------------- torch.compile

def test_compile_fullgraph_matches_eager_q4_0():
    from torch._dynamo.backends.common import aot_autograd
    graphs = []

    def record(gm, example_inputs):
        graphs.append(gm)
        return gm

    model = toy("q4_0")
    x = ids()
    with torch.no_grad():
        eager = model(x)
        compiled = torch.compile(model, fullgraph=True, backend=aot_autograd(fw_compiler=record))(x)
    torch.testing.assert_close(compiled, eager)
    targets = [n.target for n in graphs[0].graph.nodes]
    assert targets.count(torch.ops.lowbit.linear_q4_0.default) == 7
    assert targets.count(torch.ops.lowbit.dequantize_q4_0.default) == 1  # the embedding rows looked up


# ---------------------------------------------------------------- transformers and the CLI

@pytest.fixture(scope="module")
def llama_folder(tmp_path_factory):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    folder = tmp_path_factory.mktemp("llama")
    transformers.AutoModelForCausalLM.from_config(cfg).save_pretrained(folder)
    return folder


PROMPT = torch.tensor([[3, 14, 15, 92, 65, 35, 89, 79]])


@pytest.mark.parametrize("name", QTYPES)
def test_transformers_from_pretrained_save_reload(llama_folder, tmp_path, name, gguf_calls):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForCausalLM
    from lowbit.integrations.transformers import LowbitConfig
    model = AutoModelForCausalLM.from_pretrained(llama_folder, quantization_config=LowbitConfig(weights=name))
    w = model.model.layers[0].mlp.down_proj.weight
    assert isinstance(w, lowbit.QTensor) and w.qtype is lowbit.qtype(name) and w.codes.shape[1] == 4 * BLOCK_BYTES[name]
    with torch.no_grad():
        logits = model(PROMPT).logits
    assert len(gguf_calls[OPS[name]]) == 2 * 7  # every projection of both layers; lm_head stays float
    model.save_pretrained(tmp_path)
    cfg = json.load(open(tmp_path / "config.json"))["quantization_config"]
    assert cfg["weights"] == f"qgguf_{name}" and cfg["quantization_map"]["model.layers.0.mlp.up_proj"]["frozen"]
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert torch.equal(reloaded.model.layers[0].mlp.down_proj.weight.codes, w.codes)
    with torch.no_grad():
        assert torch.equal(reloaded(PROMPT).logits, logits)
    with pytest.raises(ValueError, match="group_size must be None"):
        LowbitConfig(weights=name, group_size=32)
    with pytest.raises(ValueError, match="weight-only"):
        LowbitConfig(weights="int8", activations=name)


def test_cli_quantize_and_inspect_q4_0(llama_folder, tmp_path, capsys):
    from lowbit.cli import main
    dst = tmp_path / "q"
    assert main(["quantize", str(llama_folder), str(dst), "--weights", "q4_0", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["inspect", str(dst), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    layer = next(entry for entry in info["layers"] if entry["module"] == "model.layers.0.mlp.down_proj")
    # 64 x 128: 64 rows of 4 blocks of 18 bytes, 4.5 bits per weight
    assert layer["weights"] == "qgguf_q4_0" and layer["shape"] == [64, 128] and layer["bytes"] == 64 * 4 * 18
    assert layer["bits_per_weight"] == 4.5
    assert main(["inspect", str(dst)]) == 0
    assert "blk32" in capsys.readouterr().out
    assert main(["quantize", str(llama_folder), str(tmp_path / "bad"), "--weights", "q4_0", "--group-size", "32",
                 "--quiet"]) == 2
    assert "group_size must be None" in capsys.readouterr().err
