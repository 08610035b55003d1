"""SmoothQuant (``Calibration(smoothing=alpha)``) on Linear inputs and norm outputs: the factors
it records, the float function it preserves, what it gains on outlier channels, save / load,
and the errors it raises."""
import copy
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

import lowbit
from conftest import corrupt_saved
from lowbit.nn import QLayerNorm, QLinear


def outlier_batches(n=3, k=32, rows=16, seed=0):
    """Activations whose channels 3 and 17 are ~40x the others (as after transformer norms)."""
    g = torch.Generator().manual_seed(seed)
    gain = torch.ones(k)
    gain[3], gain[17] = 40.0, -25.0
    return [torch.randn(rows, k, generator=g) * gain for _ in range(n)]


class Block(nn.Module):
    """norm -> Linear -> ReLU -> Linear with a residual around the norm output (post-norm, as BERT)."""

    def __init__(self, k=32):
        super().__init__()
        self.norm = nn.LayerNorm(k)
        self.up = nn.Linear(k, 2 * k)
        self.down = nn.Linear(2 * k, k)
        with torch.no_grad():
            self.norm.weight[5] = 30.0  # an outlier channel of the norm output

    def forward(self, x):
        h = self.norm(x)
        return h + self.down(torch.relu(self.up(h)))


def _sqnr(ref, out):
    return float(20 * torch.log10(ref.norm() / (ref - out).norm()))


def test_linear_factors_scale_and_preserved_float_function():
    torch.manual_seed(0)
    lin = nn.Linear(32, 8)
    w = lin.weight.detach().clone()
    q = QLinear.from_module(copy.deepcopy(lin), lowbit.qint8, lowbit.qint8, None, None)
    batches = outlier_batches()
    with lowbit.Calibration(momentum=0.5, smoothing=0.7):
        for x in batches:  # float activations while calibrating (weights quantized on the fly as always)
            torch.testing.assert_close(q(x), nn.functional.linear(x, q.qweight(), q.bias), rtol=0, atol=0)
    assert q.input_scale.dtype == torch.float32 and q.input_smoothing.shape == (32,)
    channel_max = torch.stack([x.abs().amax(0) for x in batches]).amax(0)
    s = channel_max.pow(0.7) / w.abs().amax(0).pow(0.3)
    torch.testing.assert_close(q.input_smoothing, 1 / s)
    torch.testing.assert_close(q.weight.detach(), w * s)
    avg = batches[0].abs().amax(0)
    for x in batches[1:]:
        avg = 0.5 * avg + 0.5 * x.abs().amax(0)
    torch.testing.assert_close(q.input_scale, (avg / s).amax() / 127)
    # before quantization the function is the float one: (x / s) @ (W * s)^T = x @ W^T
    for x in batches:
        torch.testing.assert_close(nn.functional.linear(x * q.input_smoothing, q.weight, q.bias), lin(x),
                                   rtol=1e-5, atol=1e-5)
    # a later calibration pass feeds x / s to the smoothed weight
    with lowbit.Calibration():
        torch.testing.assert_close(q(batches[0]), nn.functional.linear(batches[0] * q.input_smoothing, q.qweight(),
                                                                        q.bias), rtol=0, atol=0)
    assert q.activation_smoothing == 0.7


def test_smoothing_beats_plain_per_tensor_scales_on_outlier_channels():
    torch.manual_seed(0)
    lin = nn.Linear(32, 16)
    batches = outlier_batches()
    test = outlier_batches(1, seed=5)[0]
    sqnr = {}
    for alpha in (None, 0.5):
        q = QLinear.from_module(copy.deepcopy(lin), lowbit.qint8, lowbit.qint8, None, None)
        with lowbit.Calibration(smoothing=alpha):
            for x in batches:
                q(x)
        q.freeze()
        with torch.no_grad():
            sqnr[alpha] = _sqnr(lin(test), q(test))
    assert sqnr[0.5] > sqnr[None] + 6, sqnr  # 4x less error at least


def test_norm_output_smoothing():
    torch.manual_seed(0)
    block = Block()
    x = torch.randn(4, 16, 32)
    ref = block(x)
    q = lowbit.quantize(copy.deepcopy(block), None, "int8")  # activations only: exact float while calibrating
    with lowbit.Calibration(smoothing=0.5):
        torch.testing.assert_close(q(x), ref, rtol=0, atol=0)
    norm = q.norm
    assert isinstance(norm, QLayerNorm) and norm.output_smoothing.shape == (32,)
    h = block.norm(x)
    s = h.abs().reshape(-1, 32).amax(0).pow(0.5)
    torch.testing.assert_close(norm.output_smoothing, 1 / s)
    torch.testing.assert_close(norm.weight, block.norm.weight)  # a norm's own weight is left as it is
    # the output is s * Q(h / s): dequantized back to the norm's scale
    scale = (h / s).abs().amax() / 127
    expected = torch.clamp(torch.round(h / s / scale), -128, 127) * scale * s
    torch.testing.assert_close(norm(x), expected, rtol=1e-5, atol=1e-5)
    plain = lowbit.quantize(copy.deepcopy(block), None, "int8")
    with lowbit.Calibration():
        plain(x)
    with torch.no_grad():
        assert _sqnr(ref, q(x)) > _sqnr(ref, plain(x)) + 6


def test_rmsnorm_smoothing():
    norm = nn.RMSNorm(16)
    with torch.no_grad():
        norm.weight[2] = 20.0
    x = torch.randn(8, 16)
    q = lowbit.quantize(nn.Sequential(copy.deepcopy(norm)), None, "int8")
    with lowbit.Calibration(smoothing=0.8):
        q(x)
    assert q[0].output_smoothing.shape == (16,)
    torch.testing.assert_close(q(x), norm(x), rtol=0.02, atol=0.02)


def test_recalibration_starts_from_the_float_weight():
    torch.manual_seed(0)
    lin = nn.Linear(32, 8)
    batches = outlier_batches()
    once = QLinear.from_module(copy.deepcopy(lin), lowbit.qint8, lowbit.qint8, None, None)
    twice = QLinear.from_module(copy.deepcopy(lin), lowbit.qint8, lowbit.qint8, None, None)
    with lowbit.Calibration(smoothing=0.5):
        for x in batches:
            once(x)
    with lowbit.Calibration(smoothing=0.8):
        for x in outlier_batches(seed=3):
            twice(x)
    with lowbit.Calibration(smoothing=0.5):
        for x in batches:
            twice(x)
    for name in ("weight", "input_smoothing", "input_scale"):
        torch.testing.assert_close(getattr(twice, name), getattr(once, name), rtol=1e-5, atol=1e-6)
    # a plain calibration afterwards keeps s and records the range of x / s
    with lowbit.Calibration(momentum=0.0):
        once(batches[0])
    torch.testing.assert_close(once.input_scale, (batches[0] * once.input_smoothing).abs().amax() / 127)


def test_failed_block_leaves_the_module_unchanged():
    q = QLinear.from_module(nn.Linear(32, 8), lowbit.qint8, lowbit.qint8, None, None)
    w = q.weight.detach().clone()
    with pytest.raises(RuntimeError, match="boom"):
        with lowbit.Calibration(smoothing=0.5):
            q(outlier_batches(1)[0])
            raise RuntimeError("boom")
    assert torch.equal(q.weight, w) and "input_smoothing" not in q.state_dict() and float(q.input_scale) == 0
    with lowbit.Calibration(smoothing=0.5):
        pass  # nothing recorded, nothing changed
    assert q.activation_smoothing is None


def test_modules_without_smoothing_keep_plain_scales():
    conv = lowbit.quantize(nn.Sequential(nn.Conv1d(8, 8, 3)), "int8", "int8")
    per_token = lowbit.quantize(nn.Sequential(nn.Linear(8, 8)), "int8", "int8", activation_granularity="per_token")
    x = torch.randn(2, 8, 5)
    with lowbit.Calibration(smoothing=0.5):
        conv(x)
        per_token(x.transpose(1, 2))
    assert float(conv[0].input_scale) == pytest.approx(float(x.abs().max() / 127))
    assert not hasattr(conv[0], "input_smoothing") and not hasattr(per_token[0], "input_smoothing")
    assert "activation_smoothing" not in lowbit.quantization_map(conv)["0"]


def test_gptq_sees_the_smoothed_inputs(monkeypatch):
    """GPTQ quantizes W * s, whose inputs are x / s: freeze hands it the Gram matrix of x / s."""
    import lowbit.nn.qmodule as qmodule
    seen = []
    original = qmodule.quantize_weight
    monkeypatch.setattr(qmodule, "quantize_weight", lambda w, *a: seen.append(a[-1]) or original(w, *a))
    torch.manual_seed(0)
    lin = nn.Linear(32, 16)
    batches = outlier_batches(4, rows=64)
    q = lowbit.quantize(nn.Sequential(copy.deepcopy(lin)), "int4", "int8", group_size=32, optimizer="gptq")[0]
    with lowbit.Calibration(smoothing=0.5):
        for x in batches:
            q(x)
    smoothed = torch.cat(batches) * q.input_smoothing
    q.freeze()
    torch.testing.assert_close(seen[-1], smoothed.T @ smoothed / len(smoothed))
    with torch.no_grad():
        assert _sqnr(lin(torch.cat(batches)), nn.functional.linear(smoothed, q.weight.dequantize(), q.bias)) > 25


def test_bad_arguments():
    for bad in (1.5, -0.1, True, "0.5"):
        with pytest.raises(ValueError, match=r"expected smoothing None or a number in \[0, 1\].*got " + repr(bad)[:3]):
            lowbit.Calibration(smoothing=bad)
    q = lowbit.freeze(lowbit.quantize(nn.Sequential(nn.Linear(8, 4)), "int8", "int8"))
    with pytest.raises(ValueError, match="frozen weight.*calibrate before lowbit.freeze"):
        with lowbit.Calibration(smoothing=0.5):
            q(torch.randn(2, 8))
    with pytest.raises(ValueError, match="expected a Linear or norm with per-tensor activations, got QLinear"):
        lowbit.quantize(nn.Sequential(nn.Linear(8, 4)), "int8")[0].enable_smoothing(0.5)


def _smoothed_block(tmp_path):
    torch.manual_seed(0)
    m = lowbit.quantize(Block(), "int8", "int8")
    with lowbit.Calibration(smoothing=0.5):
        m(torch.randn(4, 16, 32))
    lowbit.freeze(m)
    lowbit.save(m, str(tmp_path))
    return m


def test_save_load_round_trip(tmp_path):
    m = _smoothed_block(tmp_path)
    qmap = lowbit.quantization_map(m)
    assert qmap["up"]["activation_smoothing"] == 0.5 and qmap["up"]["format_version"] == 3
    assert qmap["norm"]["activation_smoothing"] == 0.5 and qmap["norm"]["format_version"] == 3
    sd = load_file(str(tmp_path / "model.safetensors"))
    assert sd["up.input_smoothing"].shape == (32,) and sd["norm.output_smoothing"].shape == (32,)
    with lowbit.empty_weights():
        fresh = Block()
    lowbit.load(fresh, str(tmp_path))
    x = torch.randn(2, 16, 32)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), m(x), rtol=0, atol=0)
    assert lowbit.quantization_map(fresh) == qmap
    assert torch.equal(fresh.up.input_smoothing, m.up.input_smoothing)


@pytest.mark.parametrize("corrupt,match", [
    (lambda sd, qm: qm["up"].update(format_version=2), "activation_smoothing needs format_version 3, got 2"),
    (lambda sd, qm: qm["up"].update(activation_smoothing=2), r"activation_smoothing must be null or a number in "
                                                             r"\[0, 1\], got 2"),
    (lambda sd, qm: qm["up"].update(activations=None), "applies to a Linear or norm with per-tensor activations"),
    (lambda sd, qm: sd.pop("up.input_smoothing"), r"missing keys: \['up.input_smoothing'\]"),
    (lambda sd, qm: qm["up"].pop("activation_smoothing"), r"unexpected keys: \['up.input_smoothing'\]"),
    (lambda sd, qm: sd.update({"norm.output_smoothing": torch.ones(31)}),
     r"norm.output_smoothing: expected shape \[32\] and dtype torch.float32, got \[31\]"),
])
def test_load_rejects_inconsistent_smoothing(tmp_path, corrupt, match):
    _smoothed_block(tmp_path)
    corrupt_saved(str(tmp_path), corrupt)
    target = Block()
    with pytest.raises(ValueError, match=match):
        lowbit.load(target, str(tmp_path))
    assert type(target.up) is nn.Linear
