"""Scale / zero-point optimizers. ``packed`` tests need lowbit.ops.pack_bits (via QTensor)."""
import pytest
import torch

import lowbit
from lowbit.optimizers import AbsmaxOptimizer, HqqOptimizer, MinMaxOptimizer, get_optimizer


def _err(w, scale, zp, qt):
    n, k = w.shape
    g = k // scale.shape[1]
    x = w.reshape(n, -1, g)
    s = scale.reshape(n, -1, 1)
    z = torch.zeros_like(s) if zp is None else zp.reshape(n, -1, 1)
    q = torch.clamp(torch.round(x / s + z), qt.qmin, qt.qmax)
    return float(((q - z) * s - x).pow(2).sum())


def test_absmax_and_minmax_shapes():
    w = torch.randn(8, 64)
    s, z = AbsmaxOptimizer()(w, lowbit.qint8, axis=0)
    assert s.shape == (8, 1) and z is None
    torch.testing.assert_close(s, w.abs().amax(1, keepdim=True) / 127)
    s, z = MinMaxOptimizer()(w, lowbit.qint4, group_size=16)
    assert s.shape == z.shape == (8, 4)


@pytest.mark.parametrize("qt,group", [(lowbit.qint4, 32), (lowbit.qint2, 16), (lowbit.qint4, None)])
def test_hqq_lowers_weight_error(qt, group):
    w = torch.randn(64, 128) * torch.rand(64, 1) + 0.1 * torch.randn(64, 128).pow(3)
    axis = None if group else 0
    s0, z0 = MinMaxOptimizer()(w, qt, axis, group)
    s1, z1 = HqqOptimizer()(w, qt, axis, group)
    assert torch.equal(s0, s1) and z1.shape == z0.shape and z1.dtype == torch.float32
    assert _err(w, s1, z1, qt) < _err(w, s0, z0, qt)


def test_custom_optimizer_object_is_used():
    class Half(lowbit.Optimizer):
        name = "half"

        def __call__(self, weight, qtype, axis=None, group_size=None):
            s, _ = AbsmaxOptimizer()(weight, qtype, axis, group_size)
            return s * 0.5, None

    w = torch.randn(4, 16)
    q = lowbit.quantize_weight(w, "int8", optimizer=Half())
    torch.testing.assert_close(q.scale, w.abs().amax(1, keepdim=True) / 127 * 0.5)
    with pytest.raises(ValueError, match="unknown optimizer"):
        get_optimizer("nope")
    with pytest.raises(ValueError, match="callable"):
        get_optimizer(3)
