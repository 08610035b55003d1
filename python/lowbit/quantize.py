"""quantize, freeze, quantization_map, requantize, empty_weights."""
import contextlib
import copy
import fnmatch
import warnings
from typing import Dict, Iterable, Optional, Union

import torch
from torch import nn

from .nn.qmodule import (ACTIVATION_GRANULARITIES, ACTIVATION_QTYPES, FORMAT_VERSIONS, QModuleMixin,
                         entry_format_version, qmodule_class)
from .optimizers import get_optimizer, optimizer_name, OPTIMIZERS
from .qtypes import QType, qtype as as_qtype
from .tensor import check_block_divides, check_block_options, weight_matrix_shape

__all__ = ["quantize", "freeze", "quantization_map", "requantize", "empty_weights", "DEFAULT_GROUP_SIZE"]

#: default group size of 2- and 4-bit weights (8-bit and float8 weights default to one scale per output row)
DEFAULT_GROUP_SIZE = 128


def _patterns(value) -> Optional[list]:
    if value is None:
        return None
    return [value] if isinstance(value, str) else list(value)


def _selected(name: str, include, exclude) -> bool:
    if include is not None and not any(fnmatch.fnmatch(name, p) for p in include):
        return False
    return not (exclude is not None and any(fnmatch.fnmatch(name, p) for p in exclude))


def _resolve_group_size(name, module, weights: Optional[QType], group_size: Optional[int]) -> Optional[int]:
    weight = getattr(module, "weight", None)
    if weights is None or weight is None or not isinstance(weight, torch.Tensor) or weight.dim() < 2:
        return None
    k = weight_matrix_shape(weight.shape)[1]
    if weights.is_block:
        check_block_divides(weights, weight.shape, f"quantize: module '{name}' ({type(module).__name__})")
        return None
    if group_size is not None:
        if group_size <= 0 or k % group_size:
            raise ValueError(f"quantize: group_size {group_size} does not divide the {k} input features of module "
                             f"'{name}' ({type(module).__name__}, weight {list(weight.shape)}); choose a divisor of "
                             f"{k} or exclude the module")
        return group_size
    if not weights.is_packed:
        return None
    for g in (DEFAULT_GROUP_SIZE, 64, 32):
        if k % g == 0:
            if g != DEFAULT_GROUP_SIZE:
                warnings.warn(f"lowbit.quantize: '{name}' has {k} input features, not a multiple of "
                              f"{DEFAULT_GROUP_SIZE}; using group_size {g}")
            return g
    warnings.warn(f"lowbit.quantize: '{name}' has {k} input features, not a multiple of 32; "
                  "using one scale per output row")
    return None


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def _plan(model, weights, activations, group_size, optimizer, include, exclude, granularity):
    """[(name, module, quantized class, config)] for every module to replace; raises before any change."""
    plan = []
    for name, module in model.named_modules():
        if not name or not _selected(name, include, exclude):
            continue
        qcls = qmodule_class(module)
        if qcls is None:
            continue
        if not qcls.quantizes_weight or isinstance(module, nn.Embedding):
            # norms only quantize activations; embeddings only weights
            if (not qcls.quantizes_weight and activations is None) or (qcls.quantizes_weight and weights is None):
                continue
            if not qcls.quantizes_weight and granularity == "per_token":
                continue  # per-token activations are quantized where a Linear / Conv consumes them
        g = _resolve_group_size(name, module, weights, group_size) if qcls.quantizes_weight else None
        plan.append((name, module, qcls, (weights, activations, g, optimizer, granularity)))
    return plan


def check_activation_qtype(aq: Optional[QType], where: str) -> None:
    """Raises ``ValueError`` when ``aq`` cannot quantize activations."""
    if aq is not None and aq.is_block:
        raise ValueError(f"{where}: {aq} is a weight-only format (GGUF blocks); activations must be one of "
                         f"{[q.name for q in ACTIVATION_QTYPES]} or None")
    if aq is not None and aq not in ACTIVATION_QTYPES:
        raise ValueError(f"{where}: activations must be one of {[q.name for q in ACTIVATION_QTYPES]}, got {aq}")


def quantize(model: nn.Module, weights: Union[QType, str, None] = "qint8",
             activations: Union[QType, str, None] = None, *, group_size: Optional[int] = None,
             optimizer=None, include: Union[str, Iterable[str], None] = None,
             exclude: Union[str, Iterable[str], None] = None, inplace: bool = True,
             activation_granularity: str = "per_tensor") -> nn.Module:
    """Replaces the supported submodules of ``model`` by quantized ones and returns the model.

    Supported: ``nn.Linear``, ``nn.Conv1d``, ``nn.Conv2d``, ``nn.Embedding`` (weights only),
    ``nn.LayerNorm`` and RMSNorm modules (outputs only, replaced only when ``activations``
    is set). Weights are quantized on the fly (trainable) until :func:`freeze`.

    Args:
        weights: qtype of the weights (``qint2``, ``qint4``, ``qint8``, ``qfloat8``, ``qfloat8_e5m2``,
            the GGUF block formats ``qgguf_q4_0`` / ``qgguf_q8_0``, or their names such as ``"int4"``
            or ``"q4_0"``), or None for activation-only quantization.
        activations: ``qint8`` / ``qfloat8*`` or None (the GGUF formats are weight-only).
        group_size: input features per scale; default 128 for 2/4-bit weights (falling back, with a
            warning, to 64, 32, then one scale per row when it does not divide a module's input
            features), one scale per output row for 8-bit / float8. An explicit size that does not
            divide a module's input features raises ``ValueError`` naming the module. GGUF
            formats have blocks of 32: ``group_size`` must be None, and every quantized module
            needs input features that are a multiple of 32 (``ValueError`` naming it otherwise).
        optimizer: ``"absmax"``, ``"minmax"``, ``"hqq"``, ``"gptq"`` (needs calibration inputs, see
            :mod:`lowbit.optimizers.gptq`) or an object (see :mod:`lowbit.optimizers`);
            must be None for the GGUF formats (llama.cpp's rounding).
        include / exclude: glob patterns (``fnmatch``) on module names, a string or a list.
        inplace: False quantizes a deep copy and leaves ``model`` untouched.
        activation_granularity: ``"per_tensor"`` (default, as optimum-quanto): one scale per
            activation tensor, recorded by :class:`Calibration` and then static (dynamic, from
            the tensor's absmax, until calibrated); Linear / Conv inputs and norm outputs are
            quantized. ``"per_token"`` (as torchao's dynamic int8 activations): one scale per
            input vector of each Linear / Conv (per row of the last dim; per position over the
            channels for Conv), always computed on the fly, no calibration; norms stay float.
            On all-MiniLM-L6-v2 with int8 weights and activations: 0.997 mean embedding cosine
            per token vs 0.977 per tensor (calibrated), 0.994 per tensor calibrated with
            ``Calibration(smoothing=0.7)`` (SmoothQuant, see :class:`lowbit.Calibration`).
    """
    wq = None if weights is None else as_qtype(weights)
    aq = None if activations is None else as_qtype(activations)
    check_activation_qtype(aq, "quantize")
    if wq is not None:
        check_block_options(wq, group_size, optimizer, "quantize")
    if wq is None and aq is None:
        raise ValueError("quantize: nothing to do, weights and activations are both None")
    if activation_granularity not in ACTIVATION_GRANULARITIES:
        raise ValueError(f"quantize: activation_granularity must be one of {list(ACTIVATION_GRANULARITIES)}, "
                         f"got {activation_granularity!r}")
    opt = get_optimizer(optimizer)
    if opt is not None and wq is not None and wq.is_float and optimizer_name(opt) in ("minmax", "hqq", "gptq"):
        raise ValueError(f"quantize: the {optimizer_name(opt)} optimizer needs integer weights, got {wq}")
    include, exclude = _patterns(include), _patterns(exclude)
    plan = _plan(model, wq, aq, group_size, opt, include, exclude, activation_granularity)  # validates before changing anything
    if not inplace:
        memo = {}
        copied = copy.deepcopy(model, memo)
        plan = [(n, memo[id(m)], qcls, cfg) for n, m, qcls, cfg in plan]
        model = copied
    for name, module, qcls, cfg in plan:
        _set_submodule(model, name, qcls.from_module(module, *cfg))
    return model


def freeze(model: nn.Module) -> nn.Module:
    """Replaces every float weight of a quantized module by its :class:`~lowbit.QTensor`."""
    for module in model.modules():
        if isinstance(module, QModuleMixin):
            module.freeze()
    return model


def quantization_map(model: nn.Module) -> Dict[str, dict]:
    """module name -> {weights, activations, activation_granularity, group_size, optimizer, frozen,
    format_version}, plus ``activation_smoothing`` (SmoothQuant's alpha) for modules smoothed by
    ``Calibration(smoothing=...)``; JSON-serialisable."""
    return {name: m.quantization_config() for name, m in model.named_modules() if isinstance(m, QModuleMixin)}


def _check_map(model: nn.Module, qmap: dict) -> dict:
    """Validates a quantization map against ``model``; returns name -> (module, qclass, config,
    frozen, smoothing), ``config`` being the arguments of ``qclass.from_module`` after the module
    and ``smoothing`` SmoothQuant's alpha or None (see :func:`_apply_entry`)."""
    if not isinstance(qmap, dict):
        raise ValueError(f"quantization map: expected a dict, got {type(qmap).__name__}")
    modules = dict(model.named_modules())
    out = {}
    for name, entry in qmap.items():
        where = f"quantization map entry '{name}'"
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: expected a dict, got {type(entry).__name__}")
        version = entry.get("format_version")
        if version not in FORMAT_VERSIONS or isinstance(version, bool):
            raise ValueError(f"{where}: unsupported format_version {version!r} (this lowbit reads "
                             f"{', '.join(map(str, FORMAT_VERSIONS))})")
        if name not in modules:
            raise ValueError(f"{where}: the model has no module named '{name}'")
        module = modules[name]
        qcls = qmodule_class(module)
        if qcls is None:
            raise ValueError(f"{where}: module '{name}' ({type(module).__name__}) cannot be quantized")
        try:
            wq = None if entry.get("weights") is None else as_qtype(entry["weights"])
            aq = None if entry.get("activations") is None else as_qtype(entry["activations"])
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
        check_activation_qtype(aq, where)
        if wq is not None and version < entry_format_version(wq):
            raise ValueError(f"{where}: {wq} weights need format_version {entry_format_version(wq)}, "
                             f"got {version}")
        granularity = entry.get("activation_granularity") or "per_tensor"  # absent in maps written before it
        if granularity not in ACTIVATION_GRANULARITIES:
            raise ValueError(f"{where}: activation_granularity must be one of {list(ACTIVATION_GRANULARITIES)}, "
                             f"got {granularity!r}")
        if aq is not None and granularity == "per_token" and qcls.token_dim is None:
            raise ValueError(f"{where}: module '{name}' ({type(module).__name__}) has no per-token activations")
        g = entry.get("group_size")
        frozen = bool(entry.get("frozen", False))
        if wq is not None and wq.is_block and qcls.quantizes_weight:
            check_block_options(wq, g, entry.get("optimizer"), where)
            check_block_divides(wq, module.weight.shape, where)
        if g is not None:
            weight = getattr(module, "weight", None)
            k = weight_matrix_shape(weight.shape)[1] if isinstance(weight, torch.Tensor) else 0
            if not isinstance(g, int) or g <= 0 or k % g:
                raise ValueError(f"{where}: group_size {g!r} does not divide the {k} input features of the module")
        smoothing = entry.get("activation_smoothing")
        if smoothing is not None:
            if isinstance(smoothing, bool) or not isinstance(smoothing, (int, float)) or not 0 <= smoothing <= 1:
                raise ValueError(f"{where}: activation_smoothing must be null or a number in [0, 1], "
                                 f"got {smoothing!r}")
            if version < 3:
                raise ValueError(f"{where}: activation_smoothing needs format_version 3, got {version}")
            if not qcls.smoothable or aq is None or granularity != "per_tensor":
                raise ValueError(f"{where}: activation_smoothing applies to a Linear or norm with per-tensor "
                                 f"activations, got {type(module).__name__} with activations {aq} ({granularity})")
        opt_name = entry.get("optimizer")
        opt = None
        if opt_name is not None:
            if opt_name in OPTIMIZERS:
                opt = get_optimizer(opt_name)
            elif not frozen and wq is not None:
                raise ValueError(f"{where}: unknown optimizer {opt_name!r} for weights that are not frozen "
                                 f"(known: {sorted(OPTIMIZERS)})")
        out[name] = (module, qcls, (wq, aq, g, opt, granularity), frozen, smoothing)
    return out


def _apply_entry(model: nn.Module, name: str, entry: tuple) -> None:
    """Replaces module ``name`` by its quantized module per a :func:`_check_map` entry."""
    module, qcls, cfg, _frozen, smoothing = entry
    qmodule = qcls.from_module(module, *cfg)
    if smoothing is not None:
        qmodule.enable_smoothing(smoothing)  # its buffer is filled by the state dict
    _set_submodule(model, name, qmodule)


@contextlib.contextmanager
def empty_weights():
    """Context manager: the parameters of modules built inside it live on the meta
    device (no memory, no initialisation cost) while their buffers are created as usual.

    This is the skeleton :func:`requantize` / :func:`lowbit.load` expect. Under
    ``torch.device("meta")`` *every* tensor is meta, including buffers that the
    state dict does not hold (non-persistent buffers such as BERT's ``position_ids``):
    nothing could fill them later. Here they keep the values the module's own
    ``__init__`` computes. Same idea as ``accelerate.init_empty_weights(include_buffers=False)``::

        with lowbit.empty_weights():
            skeleton = AutoModel.from_config(config)
        lowbit.load(skeleton, folder)

    Each parameter is moved to meta as soon as it is registered, so at most one float
    parameter is ever allocated (and ``torch.empty`` does not touch its pages).
    Not thread-safe: it patches ``nn.Module.register_parameter`` for its duration.
    """
    original = nn.Module.register_parameter

    def register_parameter(module, name, param):
        original(module, name, param)
        if param is not None and not param.is_meta:
            # keep the parameter's class (and attributes such as those of transformers' params)
            meta = type(param)(param.detach().to("meta"), requires_grad=param.requires_grad)
            meta.__dict__.update(param.__dict__)
            module._parameters[name] = meta

    nn.Module.register_parameter = register_parameter
    try:
        yield
    finally:
        nn.Module.register_parameter = original


def requantize(model: nn.Module, state_dict: Dict[str, torch.Tensor], quantization_map: dict,
               device: Union[str, torch.device, None] = None) -> nn.Module:
    """Rebuilds a quantized model from its ``state_dict`` and ``quantization_map``.

    ``model`` is the float architecture, typically created under :func:`empty_weights`
    (parameters on meta, buffers real) or ``torch.device("meta")`` when it has no
    non-persistent buffers: its modules are replaced per the map and the state is
    assigned directly (frozen weights as their codes and scales), so no float weight
    is ever materialised.
    Everything is validated first (map, keys, shapes, dtypes; ``ValueError`` on any
    problem) so a failure leaves ``model`` unchanged. ``device``: where the loaded
    tensors go (default: where they are); buffers that the state dict does not hold
    (non-persistent ones) are moved there too.
    """
    from .serialization import check_state_dict
    entries = _check_map(model, quantization_map)
    check_state_dict(model, state_dict, entries)
    if device is not None:
        state_dict = {k: v.to(device) for k, v in state_dict.items()}
    for name, entry in entries.items():
        _apply_entry(model, name, entry)
    model.load_state_dict(state_dict, strict=True, assign=True)
    if device is not None:
        for module in model.modules():
            for name in module._non_persistent_buffers_set:
                buf = module._buffers.get(name)
                if buf is not None:
                    module._buffers[name] = buf.to(device)
    return model
