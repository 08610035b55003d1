import pytest
import torch

import lowbit
from lowbit._cpu import use_cpu_isa

# Every kernel family has an AVX2 path and a portable path; CPU tests that take the
# `isa` fixture run once per path available on this machine.
ISAS = ["portable"] + (["avx2"] if lowbit._C.cpu_has_avx2() else [])


@pytest.fixture(params=ISAS)
def isa(request):
    with use_cpu_isa(request.param):
        yield request.param


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
