"""save / load of quantized models: ``model.safetensors`` + ``quantization_map.json``.

The state dict of a frozen model holds plain tensors only (a frozen weight is
saved as ``<module>.weight.codes``, ``.scale`` and, when asymmetric,
``.zero_point``; a GGUF Q4_0 / Q8_0 weight as ``<module>.weight.codes`` alone, the
uint8 block bytes; calibrated activation scales as ``<module>.input_scale`` or
``.output_scale``, smoothing vectors as ``<module>.input_smoothing`` or
``.output_smoothing``), so it is written by safetensors as is. Loading checks the map
and every key, shape and dtype before touching the model (a block tensor whose
byte length does not match the weight's shape is refused with its expected shape).
"""
import json
import os
from typing import Dict

import torch
from torch import nn

from .nn.qmodule import QModuleMixin, activation_channels
from .tensor import expected_inner_layout, weight_axis

__all__ = ["save", "load", "check_state_dict", "MODEL_FILE", "MAP_FILE"]

MODEL_FILE = "model.safetensors"
MAP_FILE = "quantization_map.json"


def _expected(model: nn.Module, entries: dict) -> Dict[str, tuple]:
    """key -> (shape, dtype, optional) of the state dict ``model`` will have once the
    entries of the (validated) quantization map are applied."""
    expected = {}
    for name, module in model.named_modules():
        prefix = name + "." if name else ""
        skip = set()
        if name in entries:
            _, qcls, (wq, aq, g, _opt, granularity), frozen, smoothing = entries[name]
            if aq is not None and granularity == "per_tensor":
                expected[prefix + qcls.activation_site + "_scale"] = ((), torch.float32, False)
            if smoothing is not None:
                expected[prefix + qcls.activation_site + "_smoothing"] = (
                    (activation_channels(module),), torch.float32, False)
        elif isinstance(module, QModuleMixin):
            wq, g, frozen = module.weight_qtype, module.group_size, module.frozen
        else:
            wq, frozen = None, False
        if frozen and wq is not None:
            skip.add("weight")
            for n, (shape, dtype) in expected_inner_layout(module.weight.shape, wq, weight_axis(wq, g), g).items():
                expected[prefix + "weight." + n] = (tuple(shape), dtype, n == "zero_point")
        for n, p in module._parameters.items():
            if p is not None and n not in skip:
                expected[prefix + n] = (tuple(p.shape), p.dtype, False)
        for n, b in module._buffers.items():
            if b is not None and n not in module._non_persistent_buffers_set:
                expected[prefix + n] = (tuple(b.shape), b.dtype, False)
    return expected


def check_state_dict(model: nn.Module, state_dict: dict, entries: dict) -> None:
    """Raises ``ValueError`` listing every missing / unexpected key and every shape or
    dtype mismatch between ``state_dict`` and what ``model`` quantized per ``entries``
    expects. Also refuses non-persistent buffers left on the meta device."""
    bad = [k for k, v in state_dict.items() if not isinstance(v, torch.Tensor) or type(v) is not torch.Tensor]
    if bad:
        raise ValueError(f"state dict: expected plain tensors, got other values for {bad[:8]}")
    expected = _expected(model, entries)
    missing = [k for k, (_, _, optional) in expected.items() if k not in state_dict and not optional]
    unexpected = [k for k in state_dict if k not in expected]
    wrong = [f"{k}: expected shape {list(shape)} and dtype {dtype}, got {list(state_dict[k].shape)} and "
             f"{state_dict[k].dtype}"
             for k, (shape, dtype, _) in expected.items()
             if k in state_dict and (tuple(state_dict[k].shape) != shape or state_dict[k].dtype != dtype)]
    problems = []
    if missing:
        problems.append(f"missing keys: {missing[:10]}" + (f" (+{len(missing) - 10} more)" if len(missing) > 10 else ""))
    if unexpected:
        problems.append(f"unexpected keys: {unexpected[:10]}"
                        + (f" (+{len(unexpected) - 10} more)" if len(unexpected) > 10 else ""))
    if wrong:
        problems.append("wrong shapes or dtypes: " + "; ".join(wrong[:10]))
    meta = [n for n, b in model.named_buffers() if b.is_meta and n not in expected]
    if meta:
        problems.append(f"buffers on the meta device that the state dict cannot fill (non-persistent): {meta[:8]}; "
                        "create the model under lowbit.empty_weights() (parameters on meta, buffers real) "
                        "instead of torch.device('meta')")
    if problems:
        raise ValueError("cannot load the quantized model: " + " | ".join(problems))


def save(model: nn.Module, folder: str) -> None:
    """Writes ``folder/model.safetensors`` (the state dict) and ``folder/quantization_map.json``."""
    from safetensors.torch import save_file
    from .quantize import quantization_map
    os.makedirs(folder, exist_ok=True)
    state = model.state_dict()
    seen, tensors = set(), {}
    for k, v in state.items():
        if type(v) is not torch.Tensor:
            raise ValueError(f"save: '{k}' is a {type(v).__name__}, not a plain tensor")
        v = v.detach().cpu().contiguous()
        key = (v.untyped_storage().data_ptr(), v.storage_offset()) if v.numel() else None
        if key in seen:  # safetensors refuses shared storage (tied weights)
            v = v.clone()
        seen.add(key)
        tensors[k] = v
    save_file(tensors, os.path.join(folder, MODEL_FILE), metadata={"format": "pt", "lowbit": "1"})
    with open(os.path.join(folder, MAP_FILE), "w") as f:
        json.dump({"quantization_map": quantization_map(model)}, f, indent=1, sort_keys=True)


def load(model: nn.Module, folder: str, device=None) -> nn.Module:
    """Quantizes ``model`` (a float model, possibly on the meta device) as recorded in
    ``folder`` and loads its state (see :func:`lowbit.requantize`). Raises ``ValueError``
    on any inconsistency, before changing the model."""
    from safetensors.torch import load_file
    from .quantize import requantize
    map_path, model_path = os.path.join(folder, MAP_FILE), os.path.join(folder, MODEL_FILE)
    for path in (map_path, model_path):
        if not os.path.isfile(path):
            raise ValueError(f"load: {path} not found")
    try:
        with open(map_path) as f:
            doc = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"load: {map_path} is not valid JSON ({e})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("quantization_map"), dict):
        raise ValueError(f"load: {map_path} has no 'quantization_map' object")
    try:
        state = load_file(model_path, device="cpu" if device is None else str(device))
    except Exception as e:  # safetensors raises its own error types on corrupt files
        raise ValueError(f"load: cannot read {model_path}: {e}") from None
    return requantize(model, state, doc["quantization_map"], device=device)
