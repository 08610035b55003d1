"""Quantized modules: forward matches "dequantized weight + float op", QAT gradients,
freeze, activation quantization, registry / duck typing. Tests named ``*_int4`` need
lowbit.ops.pack_bits, ``*_fp8`` the float8 ops."""
import pytest
import torch
from torch import nn

import lowbit
from lowbit.nn import QConv1d, QConv2d, QEmbedding, QLayerNorm, QLinear, QRMSNorm, qmodule_class


def _check_module(float_module, qcls, x, weights="int8", group_size=None):
    q = qcls.from_module(float_module, lowbit.qtype(weights), None, group_size, None)
    assert isinstance(q, qcls) and q.weight is float_module.weight  # shares the float parameter
    w_hat = lowbit.quantize_weight(float_module.weight, weights, group_size).dequantize()
    with torch.no_grad():
        saved = float_module.weight.detach().clone()
        float_module.weight.copy_(w_hat)
        expected = float_module(x)
        float_module.weight.copy_(saved)
    out = q(x)
    torch.testing.assert_close(out, expected)
    q.freeze()
    assert isinstance(q.weight, lowbit.QTensor) and not q.weight.requires_grad
    torch.testing.assert_close(q(x), out, rtol=0, atol=0)
    return q


def test_qlinear_qconv_qembedding_int8():
    _check_module(nn.Linear(16, 8), QLinear, torch.randn(2, 3, 16))
    _check_module(nn.Linear(16, 8, bias=False), QLinear, torch.randn(5, 16), group_size=8)
    _check_module(nn.Conv1d(4, 6, 3, padding=1), QConv1d, torch.randn(2, 4, 9))
    _check_module(nn.Conv2d(4, 6, 3, stride=2, groups=2, padding_mode="reflect", padding=1), QConv2d,
                  torch.randn(2, 4, 9, 9))
    _check_module(nn.Embedding(40, 16, padding_idx=0), QEmbedding, torch.randint(0, 40, (3, 7)))


def test_qlinear_qconv_qembedding_int4():
    _check_module(nn.Linear(64, 8), QLinear, torch.randn(2, 64), weights="int4", group_size=32)
    _check_module(nn.Conv2d(8, 4, 2), QConv2d, torch.randn(1, 8, 5, 5), weights="int2", group_size=16)
    _check_module(nn.Embedding(10, 32), QEmbedding, torch.randint(0, 10, (4,)), weights="int4", group_size=32)


def test_qlinear_fp8():
    _check_module(nn.Linear(32, 8), QLinear, torch.randn(2, 32), weights="fp8")


def test_qat_gradients_reach_float_weight():
    lin = nn.Linear(16, 4)
    q = QLinear.from_module(lin, lowbit.qint8, lowbit.qint8, None, None)
    x = torch.randn(8, 16, requires_grad=True)
    q(x).sum().backward()
    assert lin.weight.grad is not None and lin.weight.grad.abs().sum() > 0
    # straight-through: the gradient is the float layer's gradient evaluated at the quantized weight
    torch.testing.assert_close(lin.weight.grad, torch.ones(8, 4).t() @ q.quantize_activation(x).detach())
    assert x.grad is not None


def test_activation_quantization_and_calibration():
    lin = nn.Linear(16, 4)
    q = QLinear.from_module(lin, lowbit.qint8, lowbit.qint8, None, None)
    x = torch.randn(4, 16)
    assert float(q.input_scale) == 0.0  # not calibrated: dynamic per-tensor absmax
    xq = q.quantize_activation(x)
    scale = x.abs().max() / 127
    torch.testing.assert_close(xq, torch.clamp(torch.round(x / scale), -128, 127) * scale)
    with lowbit.Calibration(momentum=0.5):
        assert torch.equal(q.quantize_activation(x), x)  # float while calibrating
        q.quantize_activation(2 * x)
    torch.testing.assert_close(q.input_scale, 0.5 * scale + 0.5 * 2 * scale)
    xq = q.quantize_activation(x)
    s = q.input_scale
    torch.testing.assert_close(xq, torch.clamp(torch.round(x / s), -128, 127) * s)
    with pytest.raises(ValueError, match="momentum"):
        lowbit.Calibration(momentum=1.5)


def test_activation_quantization_fp8():
    q = QLinear.from_module(nn.Linear(16, 4), lowbit.qint8, lowbit.qfloat8, None, None)
    x = torch.randn(4, 16)
    s = x.abs().max() / 448
    torch.testing.assert_close(q.quantize_activation(x), (x / s).to(torch.float8_e4m3fn).float() * s)


class LlamaRMSNorm(nn.Module):
    """Shaped like the transformers class (matched by duck typing, not by import)."""

    def __init__(self, dim, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.rand(dim) + 0.5)
        self.variance_epsilon = eps

    def forward(self, x):
        return self.weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)


def test_norms_quantize_outputs_and_keep_weights():
    x = torch.randn(3, 16)
    for norm in (nn.LayerNorm(16), nn.RMSNorm(16), LlamaRMSNorm(16)):
        ref = norm(x)
        qcls = qmodule_class(norm)
        assert qcls in (QLayerNorm, QRMSNorm)
        q = qcls.from_module(norm, lowbit.qint8, lowbit.qint8, None, None)
        assert isinstance(q, QRMSNorm if qcls is QRMSNorm else QLayerNorm)
        s = ref.abs().max() / 127
        torch.testing.assert_close(q(x), torch.clamp(torch.round(ref / s), -128, 127) * s)
        assert not isinstance(q.weight, lowbit.QTensor)
        assert "output_scale" in q.state_dict()
    assert qmodule_class(nn.GELU()) is None
    assert qmodule_class(QLinear.from_module(nn.Linear(2, 2), lowbit.qint8, None, None, None)) is None
