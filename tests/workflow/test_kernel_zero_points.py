"""The model path hands linear_intx int8 zero points when they are integers (minmax),
float32 ones otherwise (HQQ): the same outputs either way, and never a stale copy."""
import torch
import torch.nn.functional as F

import lowbit
from lowbit import ops
from lowbit.tensor.kernels import _kernel_zero_point, int8_zero_points


def _frozen(optimizer, bits=4, group=64):
    model = torch.nn.Sequential(torch.nn.Linear(256, 48))
    return lowbit.freeze(lowbit.quantize(model, weights=f"int{bits}", group_size=group, optimizer=optimizer))


def test_minmax_zero_points_go_to_the_kernel_as_int8():
    for bits, group in [(4, 64), (2, 32)]:
        m = _frozen("minmax", bits, group)
        w = m[0].weight
        zp = _kernel_zero_point(w)
        assert zp.dtype == torch.int8 and torch.equal(zp.float(), w.zero_point)
        assert _kernel_zero_point(w) is zp  # made once
        x = torch.randn(3, 256)
        with torch.no_grad():
            y = m(x)
        ref = ops.linear_intx(x, w.codes, w.scale, w.zero_point, bits, m[0].bias)
        assert torch.equal(y, ref)
        # the dequantizing path agrees to float32 rounding
        torch.testing.assert_close(y, F.linear(x, w.dequantize(), m[0].bias), rtol=1e-5, atol=1e-5)


def test_non_integral_zero_points_stay_float32():
    w = _frozen("hqq")[0].weight
    assert w.zero_point.dtype == torch.float32
    assert not torch.equal(w.zero_point, w.zero_point.round())
    assert _kernel_zero_point(w) is w.zero_point


def test_changed_zero_points_are_not_served_stale():
    m = _frozen("minmax")
    w = m[0].weight
    first = _kernel_zero_point(w)
    with torch.no_grad():
        w.zero_point.add_(1.0)  # in place: still integers, new values
    second = _kernel_zero_point(w)
    assert second is not first and torch.equal(second.float(), w.zero_point)
    with torch.no_grad():
        w.zero_point.add_(0.5)  # no longer integers: the float32 tensor itself
    assert _kernel_zero_point(w) is w.zero_point
    w.zero_point = torch.full_like(w.zero_point, 3.0)  # replaced
    assert torch.equal(_kernel_zero_point(w), torch.full(w.zero_point.shape, 3, dtype=torch.int8))


def test_int8_zero_points_only_for_integers_in_range():
    z = torch.tensor([[-3.0, 0.0, 7.0]])
    assert int8_zero_points(z).dtype == torch.int8
    for bad in ([[0.5, 1.0, 2.0]], [[200.0, 1.0, 2.0]], [[float("nan"), 1.0, 2.0]]):
        t = torch.tensor(bad)
        assert int8_zero_points(t) is t
