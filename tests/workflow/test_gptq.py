"""GPTQ (optimizer="gptq"): calibration inputs -> lower *output* error than minmax."""
import os

import pytest
import torch

import lowbit


def _data(n, k, seed):
    # one distribution (fixed mixing), samples drawn by `seed`: correlated inputs with a few
    # large channels, as after a LayerNorm
    mix = torch.randn(k, k, generator=torch.Generator().manual_seed(1234)) / k ** 0.5
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, k, generator=g) @ (torch.eye(k) + mix)
    x[:, :4] *= 8
    return x


@pytest.mark.parametrize("weights,group", [("int4", 64), ("int2", 32), ("int8", None)])
def test_gptq_lowers_output_error(weights, group):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(256, 96))
    x_cal, x_test = _data(1024, 256, 1), _data(512, 256, 2)
    ref = model(x_test).detach()
    errors = {}
    for opt in ("minmax" if weights != "int8" else "absmax", "gptq"):
        q = lowbit.quantize(model, weights=weights, group_size=group, optimizer=opt, inplace=False)
        with lowbit.Calibration():
            q(x_cal)
        lowbit.freeze(q)
        with torch.no_grad():
            errors[opt] = float((q(x_test) - ref).norm() / ref.norm())
    base = errors.get("minmax", errors.get("absmax"))
    assert errors["gptq"] < 0.8 * base, errors


def test_gptq_needs_calibration_and_integer_weights():
    model = torch.nn.Sequential(torch.nn.Linear(64, 8))
    q = lowbit.quantize(model, weights="int4", group_size=32, optimizer="gptq", inplace=False)
    with pytest.raises(ValueError, match="needs calibration inputs"):
        lowbit.freeze(q)
    with pytest.raises(ValueError, match="gptq optimizer needs integer weights"):
        lowbit.quantize(model, weights="fp8", optimizer="gptq", inplace=False)


def test_gptq_model_saves_loads_and_maps(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(128, 64), torch.nn.ReLU(), torch.nn.Linear(64, 32))
    q = lowbit.quantize(model, weights="int4", group_size=32, optimizer="gptq", inplace=False)
    with lowbit.Calibration():
        q(_data(300, 128, 3))
    lowbit.freeze(q)
    assert lowbit.quantization_map(q)["0"]["optimizer"] == "gptq"
    x = torch.randn(5, 128)
    with torch.no_grad():
        y = q(x)
    lowbit.save(q, tmp_path)
    fresh = torch.nn.Sequential(torch.nn.Linear(128, 64), torch.nn.ReLU(), torch.nn.Linear(64, 32))
    loaded = lowbit.load(fresh, tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), y, rtol=0, atol=0)
