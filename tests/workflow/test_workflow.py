"""quantize / freeze / quantization_map / requantize / save / load on small models.
Tests named ``*_int4*`` need lowbit.ops.pack_bits; ``*_fp8*`` need the float8 ops."""
import copy
import json
import os

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

import lowbit
from conftest import corrupt_saved
from lowbit.nn import QEmbedding, QLayerNorm, QLinear


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(50, 64)
        self.conv = nn.Conv1d(64, 64, 3, padding=1)
        self.norm = nn.LayerNorm(64)
        self.blocks = nn.ModuleList([nn.Linear(64, 128), nn.Linear(128, 64)])
        self.head = nn.Linear(64, 10)
        self.register_buffer("offset", torch.zeros(10))

    def forward(self, ids):
        h = self.emb(ids)
        h = h + self.conv(h.transpose(1, 2)).transpose(1, 2)
        h = self.norm(h)
        h = h + self.blocks[1](torch.relu(self.blocks[0](h)))
        return self.head(h.mean(1)) + self.offset


def ids(n=4, t=6):
    return torch.randint(0, 50, (n, t))


def test_quantize_replaces_modules_and_respects_patterns():
    m = Net()
    lowbit.quantize(m, exclude="head")
    assert isinstance(m.blocks[0], QLinear) and isinstance(m.emb, QEmbedding) and type(m.head) is nn.Linear
    assert type(m.norm) is nn.LayerNorm  # norms are replaced only when activations are quantized
    m = lowbit.quantize(Net(), "int8", "int8", include=["blocks.*", "norm"])
    assert isinstance(m.norm, QLayerNorm) and isinstance(m.blocks[1], QLinear) and type(m.conv) is nn.Conv1d
    qmap = lowbit.quantization_map(m)
    assert set(qmap) == {"norm", "blocks.0", "blocks.1"}
    assert qmap["blocks.0"] == {"weights": "qint8", "activations": "qint8", "group_size": None,
                                "optimizer": "absmax", "frozen": False, "format_version": 1,
                                "activation_granularity": "per_tensor"}
    json.dumps(qmap)


def test_quantize_copy_leaves_float_model_untouched():
    m = Net()
    before = copy.deepcopy(m.state_dict())
    q = lowbit.quantize(m, "int8", inplace=False)
    lowbit.freeze(q)
    assert q is not m and type(m.blocks[0]) is nn.Linear and isinstance(q.blocks[0].weight, lowbit.QTensor)
    for k, v in m.state_dict().items():
        assert torch.equal(v, before[k])


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown qtype 'int5'"):
        lowbit.quantize(Net(), "int5")
    with pytest.raises(ValueError, match="activations must be one of"):
        lowbit.quantize(Net(), "int8", "int4")
    with pytest.raises(ValueError, match="needs integer weights"):
        lowbit.quantize(Net(), "fp8", optimizer="hqq")
    m = Net()
    with pytest.raises(ValueError, match=r"group_size 40 does not divide the 192 input features of module 'conv'"):
        lowbit.quantize(m, "int8", group_size=40, include="conv")
    assert type(m.blocks[0]) is nn.Linear  # nothing replaced before the error
    with pytest.raises(ValueError, match="nothing to do"):
        lowbit.quantize(Net(), None)


def test_default_group_size_int4_falls_back_visibly():
    m = nn.Sequential(nn.Linear(256, 8), nn.Linear(96, 8), nn.Linear(20, 8))
    with pytest.warns(UserWarning, match="has (96|20) input features"):
        lowbit.quantize(m, "int4")
    assert [m[i].group_size for i in range(3)] == [128, 32, None]


def test_freeze_keeps_outputs_and_releases_float_weights():
    m = lowbit.quantize(Net().eval(), "int8")
    x = ids()
    out = m(x)
    lowbit.freeze(m)
    assert all(isinstance(getattr(mod, "weight"), lowbit.QTensor) for mod in m.modules() if isinstance(mod, QLinear))
    assert not any(p.dtype == torch.float32 and p.dim() == 2 for p in m.parameters() if type(p) is not lowbit.QTensor)
    torch.testing.assert_close(m(x), out, rtol=0, atol=0)
    sd = m.state_dict()
    assert all(type(v) is torch.Tensor for v in sd.values())
    assert sd["blocks.0.weight.codes"].dtype == torch.int8 and "blocks.0.weight" not in sd


def _roundtrip(tmp_path, weights, activations=None, **kw):
    torch.manual_seed(1)
    m = lowbit.quantize(Net().eval(), weights, activations, **kw)
    if activations:
        with lowbit.Calibration():
            m(ids(8))
    lowbit.freeze(m)
    x = ids()
    out = m(x)
    lowbit.save(m, str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["model.safetensors", "quantization_map.json"]
    with torch.device("meta"):
        fresh = Net()
    lowbit.load(fresh, str(tmp_path))
    assert not any(t.is_meta for t in fresh.state_dict().values())
    torch.testing.assert_close(fresh(x), out, rtol=0, atol=0)
    assert lowbit.quantization_map(fresh) == lowbit.quantization_map(m)
    return m, fresh


def test_save_load_roundtrip_int8(tmp_path):
    _roundtrip(tmp_path, "int8")


def test_save_load_roundtrip_int8_activations(tmp_path):
    m, fresh = _roundtrip(tmp_path, "int8", "int8")
    assert fresh.blocks[0]._act_calibrated and float(fresh.blocks[0].input_scale) > 0


def test_save_load_roundtrip_int4_hqq(tmp_path):
    _roundtrip(tmp_path, "int4", optimizer="hqq", group_size=32)


def test_save_load_roundtrip_fp8(tmp_path):
    _roundtrip(tmp_path, "fp8", "fp8")


def test_requantize_from_meta_with_plain_safetensors(tmp_path):
    m = lowbit.freeze(lowbit.quantize(Net().eval(), "int8", optimizer="minmax"))
    save_file(m.state_dict(), str(tmp_path / "w.safetensors"))
    with torch.device("meta"):
        fresh = Net()
    lowbit.requantize(fresh, load_file(str(tmp_path / "w.safetensors")), lowbit.quantization_map(m), device="cpu")
    assert fresh.blocks[0].weight.zero_point is not None
    x = ids()
    torch.testing.assert_close(fresh(x), m(x), rtol=0, atol=0)


def test_requantize_unfrozen_model_keeps_training_state():
    m = lowbit.quantize(Net().eval(), "int8")
    fresh = lowbit.requantize(Net().eval(), m.state_dict(), lowbit.quantization_map(m))
    assert not fresh.blocks[0].frozen
    x = ids()
    torch.testing.assert_close(fresh(x), m(x))


@pytest.mark.parametrize("corrupt,match", [
    (lambda sd, qm: qm["blocks.0"].update(weights="int3"), "unknown qtype 'int3'"),
    (lambda sd, qm: qm["blocks.0"].update(format_version=99), "unsupported format_version 99"),
    (lambda sd, qm: qm.update(nothere=dict(qm["head"])), "no module named 'nothere'"),
    (lambda sd, qm: qm["blocks.0"].update(group_size=7), "group_size 7 does not divide"),
    (lambda sd, qm: sd.pop("blocks.1.weight.scale"), r"missing keys: \['blocks.1.weight.scale'\]"),
    (lambda sd, qm: sd.update(extra=torch.zeros(1)), r"unexpected keys: \['extra'\]"),
    (lambda sd, qm: sd.update({"head.weight.codes": torch.zeros(10, 63, dtype=torch.int8)}),
     r"head.weight.codes: expected shape \[10, 64\]"),
    (lambda sd, qm: sd.update({"head.weight.codes": torch.zeros(10, 64, dtype=torch.uint8)}),
     "dtype torch.int8, got .* torch.uint8"),
    (lambda sd, qm: sd.update({"norm.bias": torch.zeros(64, dtype=torch.float16)}), "norm.bias"),
    (lambda sd, qm: qm["head"].update(weights="qint4"), r"head.weight.codes: expected shape \[10, 32\] and dtype torch.uint8"),
])
def test_load_rejects_bad_input_without_touching_the_model(tmp_path, corrupt, match):
    m = lowbit.freeze(lowbit.quantize(Net().eval(), "int8", optimizer="minmax"))
    lowbit.save(m, str(tmp_path))
    corrupt_saved(str(tmp_path), corrupt)
    target = Net()
    before = copy.deepcopy(target.state_dict())
    with pytest.raises(ValueError, match=match):
        lowbit.load(target, str(tmp_path))
    assert type(target.blocks[0]) is nn.Linear
    assert all(torch.equal(v, before[k]) for k, v in target.state_dict().items())


def test_load_rejects_missing_or_broken_files(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        lowbit.load(Net(), str(tmp_path))
    m = lowbit.freeze(lowbit.quantize(Net(), "int8"))
    lowbit.save(m, str(tmp_path))
    (tmp_path / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="cannot read"):
        lowbit.load(Net(), str(tmp_path))
    (tmp_path / "quantization_map.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        lowbit.load(Net(), str(tmp_path))


def test_meta_buffers_that_cannot_be_filled_are_reported():
    m = lowbit.freeze(lowbit.quantize(Net(), "int8"))

    class WithNonPersistent(Net):
        def __init__(self):
            super().__init__()
            self.register_buffer("positions", torch.arange(4), persistent=False)

    with torch.device("meta"):
        fresh = WithNonPersistent()
    with pytest.raises(ValueError, match=r"non-persistent.*\['positions'\]"):
        lowbit.requantize(fresh, m.state_dict(), lowbit.quantization_map(m))


def test_qat_lowers_the_loss():
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    x = torch.randn(256, 16)
    y = teacher(x).detach()
    model = lowbit.quantize(nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4)), "int8", "int8")
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    lowbit.freeze(model)
    with torch.no_grad():
        assert nn.functional.mse_loss(model(x), y).item() < 0.6 * losses[0]


def test_model_to_dtype_and_device_moves_qtensors():
    m = lowbit.freeze(lowbit.quantize(Net().eval(), "int8"))
    x = ids()
    out = m(x)
    m.to("cpu")
    h = copy.deepcopy(m).to(torch.bfloat16)
    assert isinstance(h.blocks[0].weight, lowbit.QTensor) and h.blocks[0].weight.dtype == torch.bfloat16
    torch.testing.assert_close(h(x).float(), out, rtol=0.05, atol=0.05)
    meta = copy.deepcopy(m).to("meta")
    assert meta.blocks[0].weight.codes.is_meta


def test_compile_fullgraph_matches_eager():
    m = lowbit.freeze(lowbit.quantize(Net().eval(), "int8", exclude="conv"))
    x = ids()
    with torch.no_grad():
        eager = m(x)
        compiled = torch.compile(m, fullgraph=True, backend="aot_eager")(x)
    torch.testing.assert_close(compiled, eager)


def test_compile_fullgraph_matches_eager_int4():
    m = lowbit.freeze(lowbit.quantize(Net().eval(), "int4", group_size=32, exclude="conv"))
    x = ids()
    with torch.no_grad():
        eager = m(x)
        compiled = torch.compile(m, fullgraph=True, backend="aot_eager")(x)
    torch.testing.assert_close(compiled, eager)


def test_empty_weights_puts_parameters_on_meta_and_keeps_buffers():
    class WithNonPersistent(Net):
        def __init__(self):
            super().__init__()
            self.register_buffer("positions", torch.arange(4), persistent=False)

        def forward(self, ids):
            return super().forward(ids) + self.positions.sum()

    register_parameter = nn.Module.register_parameter
    with lowbit.empty_weights():
        fresh = WithNonPersistent()
    assert nn.Module.register_parameter is register_parameter
    assert all(p.is_meta and type(p) is nn.Parameter for p in fresh.parameters())
    assert torch.equal(fresh.positions, torch.arange(4)) and not fresh.offset.is_meta
    m = lowbit.freeze(lowbit.quantize(WithNonPersistent().eval(), "int4", group_size=32))
    lowbit.requantize(fresh, m.state_dict(), lowbit.quantization_map(m), device="cpu")
    x = ids()
    torch.testing.assert_close(fresh(x), m(x), rtol=0, atol=0)


def test_per_token_activations():
    m = lowbit.quantize(Net().eval(), "int8", "int8", activation_granularity="per_token")
    assert type(m.norm) is nn.LayerNorm  # per-token activations are quantized at Linear / Conv inputs only
    assert not hasattr(m.blocks[0], "input_scale")
    assert lowbit.quantization_map(m)["blocks.0"]["activation_granularity"] == "per_token"
    x = ids()
    with lowbit.Calibration():
        calibrating = m(x)  # nothing to record: float activations while calibrating
    assert not any(k.endswith("_scale") for k in m.state_dict())
    lowbit.freeze(m)
    out = m(x)
    assert not torch.equal(out, calibrating)
    torch.testing.assert_close(out, calibrating, rtol=0.05, atol=0.05)
    # one scale per token: a token with large values does not coarsen the others
    layer = m.blocks[0]
    h = torch.randn(2, 3, 64)
    h[0, 0] *= 1000
    ref = nn.functional.linear(h, layer.weight.dequantize(), layer.bias)
    got = layer(h)
    torch.testing.assert_close(got[1], ref[1], rtol=0.05, atol=0.05)


def test_save_load_roundtrip_per_token(tmp_path):
    m, fresh = _roundtrip(tmp_path, "int8", "int8", activation_granularity="per_token")
    assert fresh.blocks[0].activation_granularity == "per_token"


def test_per_token_conv_scales_reduce_over_channels():
    conv = lowbit.quantize(nn.Sequential(nn.Conv1d(8, 4, 3)), None, "int8", activation_granularity="per_token")[0]
    x = torch.randn(2, 8, 5)
    x[:, :, 0] *= 1000  # a loud position must not coarsen the other positions
    seen = []
    conv.register_forward_pre_hook(lambda mod, inp: seen.append(mod.quantize_activation(inp[0])))
    conv(x)
    torch.testing.assert_close(seen[0][:, :, 1:], x[:, :, 1:], rtol=0.02, atol=0.02)


def test_bad_activation_granularity():
    with pytest.raises(ValueError, match="activation_granularity must be one of"):
        lowbit.quantize(Net(), "int8", "int8", activation_granularity="per_channel")
    m = lowbit.freeze(lowbit.quantize(Net().eval(), "int8", "int8"))
    qmap = lowbit.quantization_map(m)
    qmap["norm"]["activation_granularity"] = "per_token"
    with pytest.raises(ValueError, match="'norm' .*has no per-token activations"):
        lowbit.requantize(Net(), m.state_dict(), qmap)
