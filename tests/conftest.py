import pytest
import torch

import lowbit
from lowbit._cpu import use_cpu_isa

# Every kernel family has an AVX2 path and a portable path, and a few an AVX-512 path
# (the others run their AVX2 one under "avx512"); CPU tests that take the `isa` fixture
# run once per ISA available on this machine.
ISAS = (["portable"] + (["avx2"] if lowbit._C.cpu_has_avx2() else [])
        + (["avx512"] if lowbit._C.cpu_has_avx512() else []))


def corrupt_saved(folder, corrupt) -> None:
    """Rewrites a lowbit.save() folder after corrupt(state_dict, quantization_map) edits them
    in place (the load-validation tests)."""
    import json
    import os

    from safetensors.torch import load_file, save_file

    weights, qmap = os.path.join(folder, "model.safetensors"), os.path.join(folder, "quantization_map.json")
    sd = load_file(weights)
    with open(qmap) as f:
        doc = json.load(f)
    corrupt(sd, doc["quantization_map"])
    save_file(sd, weights)
    with open(qmap, "w") as f:
        json.dump(doc, f)


def ran_on(kernel: str, isa: str) -> bool:
    """Whether a kernel name from last_kernels() belongs to `isa` (kernels without an
    AVX-512 version run their AVX2 one under "avx512")."""
    return kernel.startswith(isa) or (isa == "avx512" and kernel.startswith("avx2"))


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
