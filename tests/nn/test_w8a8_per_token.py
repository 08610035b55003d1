"""Frozen int8 weights + int8 per-token activations run the integer GEMM
(lowbit.ops.linear_int8 with int8_activations=True) and match the fake-quantized path."""
import pytest
import torch
import torch.nn.functional as F

import lowbit


def _reference(x, qlinear):
    # per-token fake quantization of x (absmax / 127, round half to even), float GEMM
    s = (x.abs().amax(-1, keepdim=True).float() / 127).clamp_min(1e-12)
    xq = torch.clamp(torch.round(x.float() / s), -128, 127) * s
    return F.linear(xq.double(), qlinear.weight.dequantize().double(),
                    None if qlinear.bias is None else qlinear.bias.double())


@pytest.mark.parametrize("shape", [(1, 96), (7, 96), (2, 5, 96), (40, 96)])
@pytest.mark.parametrize("bias", [True, False])
def test_frozen_w8a8_per_token_uses_integer_gemm(isa, shape, bias):
    model = torch.nn.Sequential(torch.nn.Linear(96, 33, bias=bias))
    lowbit.quantize(model, weights="int8", activations="int8", activation_granularity="per_token")
    lowbit.freeze(model)
    x = torch.randn(*shape)
    with torch.no_grad():
        y = model(x)
    assert lowbit.last_kernels()["linear_int8"].endswith("int8act")
    ref = _reference(x, model[0])
    assert y.shape == ref.shape and y.dtype == torch.float32
    assert ((y.double() - ref).norm() / ref.norm()) < 1e-5


def test_bfloat16_input_and_training_path():
    model = torch.nn.Sequential(torch.nn.Linear(64, 16))
    lowbit.quantize(model, weights="int8", activations="int8", activation_granularity="per_token")
    x = torch.randn(3, 64)
    # before freeze (QAT): fake quantization with straight-through gradients, no fused kernel
    x.requires_grad_(True)
    model(x).sum().backward()
    assert x.grad is not None
    lowbit.freeze(model)
    with torch.no_grad():
        y = model(x.detach().bfloat16())
    assert y.dtype == torch.bfloat16
    ref = _reference(x.detach().bfloat16().float(), model[0])
    assert ((y.double() - ref).norm() / ref.norm()) < 1e-2
