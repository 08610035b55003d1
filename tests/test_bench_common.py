"""The benchmark timer's bookkeeping (bench/_common.py): each function cycles through its
own input sets, repetition counts stay in bounds, copies never share memory. No timings
are asserted."""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import _common as C  # noqa: E402


def test_time_interleaved_sets_rotates_each_fn_through_its_own_sets():
    seen = {0: [], 1: [], 2: []}
    fns = [lambda i, k=k: seen[k].append(i) for k in range(3)]
    sets = [[(i,) for i in range(4)], [(i,) for i in range(3)], [(i,) for i in range(7)]]
    meds, times = C.time_interleaved_sets(fns, sets, warmup=1, min_reps=5, max_reps=9, target_s=0.0)
    assert len(meds) == 3 and all(len(t) == 5 for t in times)
    for k in range(3):  # 1 warm-up + 5 timed calls, consecutive sets of its own list
        n = len(sets[k])
        assert seen[k] == [j % n for j in range(6)]


def test_time_interleaved_sets_caps_slow_functions():
    import time
    calls = {"fast": 0, "slow": 0}

    def fast():
        calls["fast"] += 1

    def slow():
        calls["slow"] += 1
        time.sleep(0.02)

    _, times = C.time_interleaved_sets([fast, slow], [[()], [()]], warmup=1, min_reps=5,
                                       max_reps=20, target_s=0.0, max_fn_s=0.03)
    assert len(times[0]) == 5
    assert 1 <= len(times[1]) <= 2  # at most max_fn_s of timed calls, never fewer than one


def test_clone_tensor_and_storage_bytes():
    codes = torch.randint(-8, 8, (16, 32), dtype=torch.int8)
    scale = torch.rand(16, 1)
    copy = C.clone_tensor((codes, scale))
    assert isinstance(copy, tuple) and torch.equal(copy[0], codes) and torch.equal(copy[1], scale)
    assert copy[0].data_ptr() != codes.data_ptr() and copy[1].data_ptr() != scale.data_ptr()
    assert C.storage_bytes((codes, scale)) == 16 * 32 + 16 * 4
    p = torch.nn.Parameter(torch.randn(4, 4), requires_grad=False)
    assert C.clone_tensor(p).data_ptr() != p.data_ptr()


def test_weight_copies_cover_cache_and_float_bytes():
    l3 = C.l3_bytes()
    n = C.weight_copies(l3 // 8, float32_bytes=l3 // 2, min_float32_bytes=8 * l3)
    assert n * (l3 // 8) >= C.CACHE_FLUSH_FACTOR * l3 and n * (l3 // 2) >= 8 * l3
    assert C.weight_copies(10 * l3) == 2
