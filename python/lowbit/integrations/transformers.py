"""lowbit inside ``transformers``: :class:`LowbitConfig` and :class:`LowbitHfQuantizer`.

Importing this module registers both with transformers' public registry of
third-party quantization methods under the name ``"lowbit"``::

    model = AutoModelForCausalLM.from_pretrained(folder, quantization_config=LowbitConfig(weights="int4"))
    model.save_pretrained(out)                        # codes + scales, and the config with its quantization map
    model = AutoModelForCausalLM.from_pretrained(out) # no float weight is ever built

How loading works:

* float checkpoint (quantization on the fly): before the weights are read, the
  meta-device skeleton has its ``nn.Linear`` modules (and transformers' GPT-2 style
  ``Conv1D``, turned into a ``Linear``; norms too when ``activations`` is set)
  swapped for lowbit modules. Each float weight, as it is read, is put into its
  module and frozen at once (:class:`_LowbitQuantize`), so only one float weight
  lives at a time.
* lowbit checkpoint (``config.json`` has ``quantization_config.quant_method ==
  "lowbit"`` and a ``quantization_map``): the skeleton is quantized exactly as the
  map says and every ``<module>.weight.codes`` / ``.scale`` / ``.zero_point`` triple
  (``.codes`` alone for GGUF Q4_0 / Q8_0 weights) is assembled into a
  :class:`~lowbit.QTensor` (:class:`_LowbitDeserialize`).

The saved layout is the one of :func:`lowbit.save` (the state dict of a frozen
model), so ``lowbit.load`` and the ``lowbit`` command read and write the same files.
"""
import copy
import re
from typing import Optional

import torch
from torch import nn

from transformers.core_model_loading import ConversionOps
from transformers.quantizers import HfQuantizer, register_quantization_config, register_quantizer
from transformers.quantizers.quantizers_utils import get_module_from_name, should_convert_module
from transformers.utils.quantization_config import QuantizationConfigMixin

from ..nn.qmodule import QModuleMixin, qmodule_class
from ..optimizers import OPTIMIZERS
from ..qtypes import qtype as as_qtype
from ..quantize import _apply_entry, _check_map, _set_submodule, check_activation_qtype, quantization_map, quantize
from ..tensor import QTensor, check_block_options, weight_axis

__all__ = ["LowbitConfig", "LowbitHfQuantizer", "QUANT_METHOD"]

QUANT_METHOD = "lowbit"
INNER_NAMES = ("codes", "scale", "zero_point")


class LowbitConfig(QuantizationConfigMixin):
    """How ``from_pretrained`` quantizes a model with lowbit.

    Args:
        weights: qtype of the weights: ``"int2"``, ``"int4"``, ``"int8"``, ``"fp8"``, ``"float8_e5m2"``,
            ``"q4_0"``, ``"q8_0"`` (GGUF blocks of 32: no group_size, no optimizer) (any name
            :func:`lowbit.qtype` accepts).
        activations: ``None`` (weight-only), ``"int8"``, ``"fp8"`` or ``"float8_e5m2"``; activations
            are then quantized dynamically (per tensor) since no calibration runs inside ``from_pretrained``.
        group_size: input features per scale (default: 128 for 2/4-bit weights with fallbacks,
            one scale per output row for 8-bit and float8; see :func:`lowbit.quantize`).
        optimizer: ``"absmax"``, ``"minmax"`` or ``"hqq"`` (default: absmax for 8-bit / float8,
            minmax for 2 / 4 bits).
        modules_to_not_convert: module names (or regexes, transformers' convention) left in float.
            ``None`` keeps transformers' default: the output embedding / tied weights and the last module.
        quantization_map: filled when the model is quantized (per module qtype, group size, ...) and
            saved with the config, so a saved model reloads exactly as it was; leave it ``None``.
    """

    def __init__(self, weights: str = "int8", activations: Optional[str] = None, group_size: Optional[int] = None,
                 optimizer: Optional[str] = None, modules_to_not_convert: Optional[list] = None,
                 quantization_map: Optional[dict] = None, **kwargs):
        self.quant_method = QUANT_METHOD
        self.weights = weights
        self.activations = activations
        self.group_size = group_size
        self.optimizer = optimizer
        self.modules_to_not_convert = modules_to_not_convert
        self.quantization_map = quantization_map
        self.post_init()

    def post_init(self):
        """Checks the arguments and writes the qtypes by their canonical names (``"qint4"``)."""
        self.weights = as_qtype(self.weights).name if self.weights is not None else None
        if self.activations is not None:
            aq = as_qtype(self.activations)
            check_activation_qtype(aq, "LowbitConfig")
            self.activations = aq.name
        if self.weights is None and self.activations is None:
            raise ValueError("LowbitConfig: nothing to quantize, weights and activations are both None")
        if self.group_size is not None and (not isinstance(self.group_size, int) or isinstance(self.group_size, bool)
                                            or self.group_size <= 0):
            raise ValueError(f"LowbitConfig: group_size must be a positive int or None, got {self.group_size!r}")
        if self.optimizer is not None and self.optimizer not in OPTIMIZERS:
            raise ValueError(f"LowbitConfig: optimizer must be None or one of {sorted(OPTIMIZERS)}, "
                             f"got {self.optimizer!r}")
        if self.weights is not None:
            check_block_options(as_qtype(self.weights), self.group_size, self.optimizer, "LowbitConfig")
        if isinstance(self.modules_to_not_convert, str):
            self.modules_to_not_convert = [self.modules_to_not_convert]
        if self.modules_to_not_convert is not None:
            self.modules_to_not_convert = list(self.modules_to_not_convert)
        if self.quantization_map is not None and not isinstance(self.quantization_map, dict):
            raise ValueError(f"LowbitConfig: quantization_map must be a dict, got "
                             f"{type(self.quantization_map).__name__}")


def _is_conv1d(module) -> bool:
    """transformers' GPT-2 style ``Conv1D``: a linear layer whose weight is stored ``[in, out]``."""
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf") and getattr(module, "weight", None) is not None


def _linear_from_conv1d(module) -> nn.Linear:
    """An ``nn.Linear`` on the meta device with the shapes of ``module`` (a Conv1D): its weight
    is ``[out, in]``, the transpose of the Conv1D's, so lowbit groups run along the input features."""
    n_in, n_out = module.weight.shape
    return nn.Linear(n_in, n_out, bias=module.bias is not None, device="meta", dtype=module.weight.dtype)


def _localize_map(model: nn.Module, qmap: dict) -> dict:
    """The map with names adjusted to ``model``: a map saved from ``XForCausalLM`` names
    ``model.layers.0...`` while the base model has ``layers.0...`` (and the other way round).
    Entries for modules the model lacks (``lm_head`` of a base model) are dropped."""
    modules = dict(model.named_modules())
    prefix = getattr(model, "base_model_prefix", "") or ""
    out = {}
    for name, entry in qmap.items():
        if name in modules:
            out[name] = entry
        elif prefix and name.startswith(prefix + ".") and name[len(prefix) + 1:] in modules:
            out[name[len(prefix) + 1:]] = entry
        elif prefix and f"{prefix}.{name}" in modules:
            out[f"{prefix}.{name}"] = entry
    if qmap and not out:
        raise ValueError("lowbit: no module named in the checkpoint's quantization_map exists in this model "
                         f"(first entries: {list(qmap)[:3]})")
    return out


class _LowbitQuantize(ConversionOps):
    """Loads one float weight into its (meta) lowbit module and freezes it right away."""

    def __init__(self, hf_quantizer):
        self.hf_quantizer = hf_quantizer

    def convert(self, input_dict, model=None, full_layer_name=None, missing_keys=None, **kwargs):
        value = next(iter(input_dict.values()))
        value = value[0] if isinstance(value, list) else value
        module, name = get_module_from_name(model, full_layer_name)
        module_name = full_layer_name.rpartition(".")[0]
        if module_name in self.hf_quantizer.transposed:
            value = value.t()
        if tuple(value.shape) != tuple(module.weight.shape):
            raise ValueError(f"lowbit: {full_layer_name} has shape {list(value.shape)} in the checkpoint, "
                             f"the model expects {list(module.weight.shape)}")
        module.weight = nn.Parameter(value.contiguous(), requires_grad=False)
        module.freeze()
        _materialize_activation_scale(module, value.device)
        module.weight._is_hf_initialized = True
        module._is_hf_initialized = True
        if missing_keys is not None:
            missing_keys.discard(full_layer_name)
            missing_keys.discard(f"{module_name}.{module.activation_site}_scale")
        return {}


class _LowbitDeserialize(ConversionOps):
    """Assembles ``<module>.weight.codes`` / ``.scale`` / ``.zero_point`` into the module's QTensor."""

    def __init__(self, hf_quantizer):
        self.hf_quantizer = hf_quantizer

    def convert(self, input_dict, model=None, full_layer_name=None, **kwargs):
        module, _ = get_module_from_name(model, full_layer_name)
        if not isinstance(module, QModuleMixin) or module.weight_qtype is None:
            raise ValueError(f"lowbit: the checkpoint has quantized tensors for {full_layer_name} but the "
                             "quantization_map does not quantize that module")
        inner = {}
        for key, tensors in input_dict.items():
            t = tensors[0] if isinstance(tensors, list) else tensors
            for name in INNER_NAMES:
                if key.endswith(name):
                    inner[name] = t
        layout = module.expected_weight_layout()
        problems = [f"{name} missing" for name in layout if name != "zero_point" and name not in inner]
        for name, t in inner.items():
            shape, dtype = layout.get(name, (None, None))
            if shape is None:
                problems.append(f"{name} not expected for {module.weight_qtype}")
            elif tuple(t.shape) != tuple(shape) or t.dtype != dtype:
                problems.append(f"{name}: expected shape {list(shape)} and dtype {dtype}, got {list(t.shape)} and "
                                f"{t.dtype}")
        if problems:
            raise ValueError(f"lowbit: {full_layer_name}: " + "; ".join(problems))
        old = module.weight
        q = QTensor(inner["codes"], inner.get("scale"), inner.get("zero_point"), module.weight_qtype,
                    weight_axis(module.weight_qtype, module.group_size), module.group_size, old.shape, old.dtype)
        return {full_layer_name: nn.Parameter(q, requires_grad=False)}


def _materialize_activation_scale(module, device):
    """An activation-scale buffer still on meta (not in a float checkpoint) becomes 0: uncalibrated, so the
    activation is quantized dynamically."""
    if isinstance(module, QModuleMixin) and module.activation_qtype is not None:
        name = module.activation_site + "_scale"
        if getattr(module, name).is_meta:
            setattr(module, name, torch.zeros((), dtype=torch.float32, device=device))


class LowbitHfQuantizer(HfQuantizer):
    """The transformers side of lowbit (see the module docstring)."""

    requires_calibration = False

    def __init__(self, quantization_config, **kwargs):
        # a copy: the quantization map written after loading must not leak into the caller's config object
        super().__init__(copy.deepcopy(quantization_config), **kwargs)
        self.transposed = set()

    @property
    def quantized_element_size(self) -> Optional[float]:
        if not self.quantization_config.weights:
            return None
        q = as_qtype(self.quantization_config.weights)
        return (q.bits_per_weight or q.bits) / 8

    def validate_environment(self, *args, **kwargs):
        device_map = kwargs.get("device_map")
        if isinstance(device_map, dict) and "disk" in device_map.values():
            raise ValueError("lowbit: disk offload is not supported (device_map has 'disk'); place every module on "
                             "a device or on 'cpu'")

    def param_needs_quantization(self, model, param_name: str, **kwargs) -> bool:
        module, tensor_name = get_module_from_name(model, param_name)
        return (isinstance(module, QModuleMixin) and tensor_name == "weight" and module.weight_qtype is not None
                and not module.frozen)

    # ---- the skeleton ----
    def _process_model_before_weight_loading(self, model, **kwargs):
        cfg = self.quantization_config
        if self.pre_quantized:
            if not cfg.quantization_map:
                raise ValueError("lowbit: the checkpoint's quantization_config has no quantization_map; was it "
                                 "written by lowbit?")
            qmap = _localize_map(model, cfg.quantization_map)
            for name in qmap:
                module = model.get_submodule(name)
                if _is_conv1d(module):
                    _set_submodule(model, name, _linear_from_conv1d(module))
            entries = _check_map(model, qmap)
            for name, entry in entries.items():
                _apply_entry(model, name, entry)
            return model
        skip = self.get_modules_to_not_convert(model, cfg.modules_to_not_convert, model._keep_in_fp32_modules)
        # a weight tied to another (lm_head to the input embedding) is re-tied to the float tensor after
        # loading, so quantizing its module would only add work: it always stays float
        tied = getattr(model, "all_tied_weights_keys", None) or {}
        skip = skip + [re.escape(k.removesuffix(".weight")) + "$" for k in tied]
        names = []
        for name, module in model.named_modules():
            if not name or not should_convert_module(name, skip):
                continue
            if type(module) is nn.Linear:
                names.append(name)
            elif _is_conv1d(module):
                _set_submodule(model, name, _linear_from_conv1d(module))
                self.transposed.add(name)
                names.append(name)
            elif cfg.activations is not None:
                qcls = qmodule_class(module)
                if qcls is not None and not qcls.quantizes_weight:
                    names.append(name)
        quantize(model, cfg.weights, cfg.activations, group_size=cfg.group_size, optimizer=cfg.optimizer,
                 include=names)
        if cfg.activations is not None:
            # activation scales are not in a float checkpoint; they are set after loading, not "newly initialized"
            model._keys_to_ignore_on_load_missing = list(model._keys_to_ignore_on_load_missing or []) + [
                r"\.(input|output)_scale$"]
        return model

    def _process_model_after_weight_loading(self, model, **kwargs):
        for module in model.modules():
            if not isinstance(module, QModuleMixin) or module.activation_qtype is None:
                continue
            if self.pre_quantized:
                module._after_load()  # a saved calibrated scale (> 0) is used as such
            else:
                # a float checkpoint has no activation scales: uncalibrated (0), i.e. dynamic quantization
                w = getattr(module, "weight", None)
                device = w.device if isinstance(w, torch.Tensor) and not w.is_meta else torch.device("cpu")
                setattr(module, module.activation_site + "_scale", torch.zeros((), dtype=torch.float32, device=device))
                module._act_calibrated = False
        self.quantization_config.quantization_map = quantization_map(model)
        return model

    # ---- loading ops ----
    def get_quantize_ops(self):
        return _LowbitQuantize(self)

    @property
    def serialized_names(self):
        return {"weight": ["weight." + n for n in INNER_NAMES]}

    def get_load_operations(self) -> dict:
        return {"deserialize": _LowbitDeserialize}

    def get_weight_conversions(self):
        # Newer transformers build this list from serialized_names / get_load_operations; older
        # 5.x releases (5.17 seen) only read it from here, so it is spelled out for both.
        if not self.pre_quantized:
            return []
        from transformers.core_model_loading import WeightConverter
        return [WeightConverter(source_patterns=list(self.serialized_names["weight"]), target_patterns="weight",
                                operations=[_LowbitDeserialize(self)])]

    # ---- capabilities ----
    def is_serializable(self):
        return True

    @property
    def is_trainable(self) -> bool:
        return False

    @property
    def is_compileable(self) -> bool:
        return True


def _register():
    # idempotent: the registry refuses a second registration under one name
    from transformers.quantizers.auto import AUTO_QUANTIZATION_CONFIG_MAPPING, AUTO_QUANTIZER_MAPPING
    if AUTO_QUANTIZATION_CONFIG_MAPPING.get(QUANT_METHOD) is not LowbitConfig:
        AUTO_QUANTIZATION_CONFIG_MAPPING.pop(QUANT_METHOD, None)
        register_quantization_config(QUANT_METHOD)(LowbitConfig)
    if AUTO_QUANTIZER_MAPPING.get(QUANT_METHOD) is not LowbitHfQuantizer:
        AUTO_QUANTIZER_MAPPING.pop(QUANT_METHOD, None)
        register_quantizer(QUANT_METHOD)(LowbitHfQuantizer)


_register()
