"""What every quantized module shares: its configuration, weights quantized on
the fly with a straight-through estimator until ``freeze()``, activation
quantization and calibration, the state-dict layout of frozen weights, and the
registry of float class -> quantized class."""
from typing import Callable, Dict, Optional, Type

import torch
from torch import nn

from .. import ops
from ..calibration import active_calibration
from ..optimizers import default_optimizer, optimizer_name
from ..qtypes import QType, qint8, qfloat8_e4m3fn, qfloat8_e5m2
from ..tensor import QTensor, expected_inner_layout, quantize_weight, weight_axis

#: the newest ``format_version`` of a quantization-map entry this lowbit writes and reads.
#: Each entry records the oldest version that describes it, so files without GGUF weights stay
#: readable by older lowbit: 1 = codes + float32 scale (+ zero_point) per weight;
#: 2 = adds the block formats (qgguf_q4_0 / qgguf_q8_0), whose weight is its codes alone;
#: 3 = adds activation smoothing (``activation_smoothing`` in the entry, ``<site>_smoothing`` in the state).
FORMAT_VERSION = 3
FORMAT_VERSIONS = (1, 2, 3)


def entry_format_version(weight_qtype: Optional[QType], smoothing: Optional[float] = None) -> int:
    """The ``format_version`` of a module's quantization-map entry (see ``FORMAT_VERSION``)."""
    if smoothing is not None:
        return 3
    return 2 if weight_qtype is not None and weight_qtype.is_block else 1


def activation_channels(module: nn.Module) -> int:
    """Channels (size of the last dim) of the activation a Linear or norm quantizes: what
    the length of its smoothing vector must be."""
    if isinstance(module, nn.Linear):
        return module.in_features
    shape = getattr(module, "normalized_shape", None)
    if shape:
        return int(shape[-1])
    return int(module.weight.shape[-1])


ACTIVATION_QTYPES = (qint8, qfloat8_e4m3fn, qfloat8_e5m2)
#: "per_tensor": one scale per activation tensor, static once calibrated (dynamic before);
#: "per_token": one scale per input vector of the Linear / Conv, always computed on the fly
ACTIVATION_GRANULARITIES = ("per_tensor", "per_token")

_REGISTRY: Dict[Type[nn.Module], Type[nn.Module]] = {}
_MATCHERS = []  # (predicate(module) -> bool, quantized class), for duck-typed classes


def register_qmodule(float_cls: Optional[type] = None, matcher: Optional[Callable] = None):
    """Class decorator: the decorated quantized class replaces ``float_cls`` instances
    (exact class match) or modules for which ``matcher(module)`` is true."""
    def wrap(qcls):
        if float_cls is not None:
            _REGISTRY[float_cls] = qcls
        if matcher is not None:
            _MATCHERS.append((matcher, qcls))
        return qcls
    return wrap


def qmodule_class(module: nn.Module):
    """The quantized class for ``module``, or None when it is not supported."""
    if isinstance(module, QModuleMixin):
        return None
    qcls = _REGISTRY.get(type(module))
    if qcls is not None:
        return qcls
    for matcher, qcls in _MATCHERS:
        if matcher(module):
            return qcls
    return None


class _StraightThrough(torch.autograd.Function):
    """``fn(x)`` forward, identity backward: gradients of quantized weights and
    activations reach the float tensors unchanged (quantization-aware training)."""

    @staticmethod
    def forward(ctx, x, fn):
        with torch.no_grad():
            return fn(x)

    @staticmethod
    def backward(ctx, grad):
        return grad, None


def _fake_quantize_activation(x: torch.Tensor, scale: torch.Tensor, qtype: QType) -> torch.Tensor:
    """Quantize-dequantize ``x`` with a per-tensor scale (0-d) or a scale of the keepdim
    shape of a reduction over the last dim (per token)."""
    if x.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        return x
    s = scale.reshape([1] * x.dim()) if scale.dim() == 0 else scale
    if qtype.is_float:
        return ops.dequantize_fp8(ops.quantize_fp8(x, s, qtype.dtype), s, x.dtype)
    return ops.dequantize_affine(ops.quantize_affine(x, s, None, qtype.bits), s, None, x.dtype)


class QModuleMixin:
    """Mixed into each quantized module class (before the float class)."""
    #: where activations are quantized: "input" (Linear, Conv) or "output" (norms)
    activation_site = "input"
    #: whether the weight is quantized (False for the norms: their weights stay float)
    quantizes_weight = True
    #: the dim holding one input vector of the module's linear map (per-token scales reduce over it);
    #: None where per-token activations do not apply (norms)
    token_dim = -1
    #: whether ``Calibration(smoothing=...)`` applies (Linear and norms; not Conv)
    smoothable = False

    def setup_quantization(self, weights: Optional[QType], activations: Optional[QType],
                           group_size: Optional[int], optimizer, device=None,
                           activation_granularity: str = "per_tensor"):
        self.weight_qtype = weights if self.quantizes_weight else None
        self.activation_qtype = activations
        self.activation_granularity = activation_granularity if activations is not None else None
        self.group_size = group_size if self.weight_qtype is not None else None
        self.optimizer = (optimizer or default_optimizer(weights)) if self.weight_qtype is not None else None
        self._act_calibrated = False
        self.activation_smoothing = None  # SmoothQuant's alpha once smoothed (see enable_smoothing)
        self._smoothing_stats = None
        if activations is not None and activation_granularity == "per_tensor":
            self.register_buffer(self.activation_site + "_scale",
                                 torch.zeros((), dtype=torch.float32, device=device))

    # ---- weights ----
    @property
    def frozen(self) -> bool:
        return isinstance(self.weight, QTensor)

    def qweight(self):
        """The weight as the forward uses it: the QTensor once frozen, else the float
        weight quantized and dequantized on the fly (straight-through gradient)."""
        w = self.weight
        if self.weight_qtype is None or isinstance(w, QTensor):
            return w
        return _StraightThrough.apply(w, lambda t: quantize_weight(t, self.weight_qtype, self.group_size,
                                                                   self.optimizer).dequantize())

    @torch.no_grad()
    def freeze(self) -> None:
        """Replaces the float weight by its QTensor (the float storage is released)."""
        if self.weight_qtype is None or self.frozen:
            return
        gram = None
        if self._collects_input_gram():
            count = getattr(self, "_input_count", 0)
            if not count:
                raise ValueError(f"freeze: the {optimizer_name(self.optimizer)} optimizer needs calibration inputs: "
                                 "run samples through the model under `with lowbit.Calibration():` before freeze()")
            gram = self._input_gram / count
            smoothing = self.smoothing_vector()
            if smoothing is not None:  # the Gram of the inputs the smoothed weight sees: x / s
                gram = gram * smoothing[:, None] * smoothing[None, :]
        qweight = quantize_weight(self.weight, self.weight_qtype, self.group_size, self.optimizer, gram)
        self.weight = nn.Parameter(qweight, requires_grad=False)
        self._input_gram, self._input_count = None, 0

    # ---- calibration inputs for output-aware optimizers (GPTQ) ----
    def _collects_input_gram(self) -> bool:
        return (getattr(self.optimizer, "needs_input_gram", False) and isinstance(self, nn.Linear)
                and self.weight_qtype is not None and not self.weight_qtype.is_float)

    def observe_input(self, x: torch.Tensor) -> None:
        """Under Calibration, adds ``X^T X`` of this input (float32) to the module's Gram
        matrix when its optimizer needs one (GPTQ); a no-op otherwise."""
        if active_calibration() is None or self.frozen or not self._collects_input_gram():
            return
        with torch.no_grad():
            rows = x.detach().reshape(-1, x.shape[-1]).float()
            if getattr(self, "_input_gram", None) is None:
                self._input_gram = torch.zeros(rows.shape[1], rows.shape[1], device=rows.device)
                self._input_count = 0
            self._input_gram.addmm_(rows.T, rows)
            self._input_count += rows.shape[0]

    # ---- activations ----
    def quantize_activation(self, x: torch.Tensor) -> torch.Tensor:
        if self.activation_qtype is None:
            return x
        if self.activation_granularity == "per_token":
            return self._quantize_activation_per_token(x)
        buf = getattr(self, self.activation_site + "_scale")
        smoothing = self.smoothing_vector()
        # the tensor that is quantized: x / s where smoothed (a Linear's weight holds W * s)
        t = x if smoothing is None or not x.is_floating_point() else x * smoothing.to(x.dtype)
        calibration = active_calibration()
        if calibration is not None:
            if calibration.smoothing is not None and self.smoothable:
                self._record_channel_ranges(x, calibration)
            else:
                with torch.no_grad():
                    new = (t.detach().abs().amax().float() / self.activation_qtype.qmax).clamp_min(1e-12)
                    if self._act_calibrated:
                        buf.mul_(calibration.momentum).add_((1.0 - calibration.momentum) * new)
                    else:
                        buf.copy_(new)
                        self._act_calibrated = True
            return x if self.activation_site == "output" else t
        if self._act_calibrated:
            scale = buf
        else:
            scale = (t.detach().abs().amax().float() / self.activation_qtype.qmax).clamp_min(1e-12)
        out = _StraightThrough.apply(t, lambda u: _fake_quantize_activation(u, scale, self.activation_qtype))
        if smoothing is not None and self.activation_site == "output" and out.is_floating_point():
            out = out / smoothing.to(out.dtype)  # a norm has no weight to take s: it goes back on the output
        return out

    # ---- SmoothQuant (Calibration(smoothing=alpha)) ----
    def smoothing_vector(self) -> Optional[torch.Tensor]:
        """The float32 vector ``1 / s`` the activation is multiplied by before its per-tensor
        quantization (buffer ``input_smoothing`` / ``output_smoothing``), or None."""
        return self._buffers.get(self.activation_site + "_smoothing")

    def enable_smoothing(self, alpha: float, device=None) -> None:
        """Registers the smoothing buffer (ones, i.e. no change yet) and records ``alpha``;
        :func:`lowbit.requantize` calls it before loading a smoothed module's state."""
        if not (self.smoothable and self.activation_qtype is not None
                and self.activation_granularity == "per_tensor"):
            raise ValueError(f"activation smoothing: expected a Linear or norm with per-tensor activations, got "
                             f"{type(self).__name__} with activations={self.activation_qtype} "
                             f"({self.activation_granularity})")
        if self.smoothing_vector() is None:
            if device is None:
                device = getattr(self, self.activation_site + "_scale").device
            self.register_buffer(self.activation_site + "_smoothing",
                                 torch.ones(activation_channels(self), dtype=torch.float32, device=device))
        self.activation_smoothing = float(alpha)

    def _record_channel_ranges(self, x: torch.Tensor, calibration) -> None:
        if self.quantizes_weight and self.frozen:
            raise ValueError(f"Calibration(smoothing={calibration.smoothing}): {type(self).__name__} has a frozen "
                             "weight; smoothing rescales the float weight: calibrate before lowbit.freeze()")
        channels = activation_channels(self)
        if x.dim() == 0 or x.shape[-1] != channels:
            raise ValueError(f"Calibration(smoothing=...): {type(self).__name__} expected an activation with "
                             f"{channels} channels in its last dim, got shape {list(x.shape)}")
        if x.numel() == 0 or not x.is_floating_point():
            return
        with torch.no_grad():
            amax = x.detach().reshape(-1, channels).abs().amax(0).float()
            stats = self._smoothing_stats
            if stats is None:
                self._smoothing_stats = (amax, amax.clone())  # (running max, moving average) per channel
            else:
                stats[0].copy_(torch.maximum(stats[0], amax))
                stats[1].mul_(calibration.momentum).add_((1.0 - calibration.momentum) * amax)
        calibration.record_smoothing(self)

    @torch.no_grad()
    def finish_smoothing(self, alpha: float) -> None:
        """At the end of a ``Calibration(smoothing=alpha)`` block: sets ``s`` from the recorded
        channel ranges, rescales the weight (Linear) and sets the per-tensor scale of ``x / s``."""
        stats, self._smoothing_stats = self._smoothing_stats, None
        if stats is None:
            return
        channel_max, channel_avg = stats
        s = channel_max.clamp_min(1e-5).pow(alpha)
        if self.quantizes_weight:
            previous = self.smoothing_vector()
            weight = self.weight.detach().float()
            if previous is not None:  # back to the float weight before dividing by the new factors
                weight = weight * previous.to(weight.device)
            s = s.to(weight.device) / weight.abs().amax(0).clamp_min(1e-5).pow(1.0 - alpha)
            self.weight = nn.Parameter((weight * s).to(self.weight.dtype), requires_grad=self.weight.requires_grad)
        self.enable_smoothing(alpha, s.device)
        inverse = s.reciprocal()
        self.smoothing_vector().copy_(inverse)
        buf = getattr(self, self.activation_site + "_scale")
        buf.copy_(((channel_avg.to(inverse.device) * inverse).amax() / self.activation_qtype.qmax).clamp_min(1e-12))
        self._act_calibrated = True

    def discard_smoothing_statistics(self) -> None:
        self._smoothing_stats = None

    def _quantize_activation_per_token(self, x: torch.Tensor) -> torch.Tensor:
        # per-token scales need no calibration: Calibration leaves these modules alone
        if active_calibration() is not None or x.dim() == 0:
            return x
        dim = self.token_dim % x.dim()
        qtype = self.activation_qtype

        def fake_quantize(t):
            t = t.movedim(dim, -1)
            scale = (t.abs().amax(-1, keepdim=True).float() / qtype.qmax).clamp_min(1e-12)
            return _fake_quantize_activation(t.contiguous(), scale, qtype).movedim(-1, dim)
        return _StraightThrough.apply(x, fake_quantize)

    # ---- description ----
    def quantization_config(self) -> dict:
        smoothing = getattr(self, "activation_smoothing", None)
        config = {
            "weights": None if self.weight_qtype is None else self.weight_qtype.name,
            "activations": None if self.activation_qtype is None else self.activation_qtype.name,
            "activation_granularity": self.activation_granularity,
            "group_size": self.group_size,
            "optimizer": None if self.optimizer is None else optimizer_name(self.optimizer),
            "frozen": self.frozen if self.weight_qtype is not None else False,
            "format_version": entry_format_version(self.weight_qtype, smoothing),
        }
        if smoothing is not None:  # only then: maps of unsmoothed models stay readable by older lowbit
            config["activation_smoothing"] = smoothing
        return config

    def expected_weight_layout(self):
        """name -> (shape, dtype) of the frozen weight's inner tensors."""
        return expected_inner_layout(self.weight.shape, self.weight_qtype,
                                     weight_axis(self.weight_qtype, self.group_size), self.group_size)

    # ---- state dict: a frozen weight is saved as its plain inner tensors ----
    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        w = self._parameters.get("weight")
        if isinstance(w, QTensor):
            destination.pop(prefix + "weight", None)
            for name, t in w.inner_tensors().items():
                destination[prefix + "weight." + name] = t if keep_vars else t.detach()

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        inner_prefix = prefix + "weight."
        if self.weight_qtype is None or inner_prefix + "codes" not in state_dict:
            if self.frozen and prefix + "weight" in state_dict:
                error_msgs.append(f"{prefix}weight: the module is frozen and expects "
                                  f"{'/'.join(inner_prefix + n for n in self.weight.inner_tensors())}, "
                                  "got a float weight")
                return
            super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                          unexpected_keys, error_msgs)
            self._after_load()
            return
        assign = bool(local_metadata.get("assign_to_params_buffers", False))
        old = self._parameters.pop("weight")
        try:
            super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                          unexpected_keys, error_msgs)
        finally:
            self._parameters["weight"] = old
        unexpected_keys[:] = [k for k in unexpected_keys if not k.startswith(inner_prefix)]
        layout = self.expected_weight_layout()
        inner = {}
        for name, (shape, dtype) in layout.items():
            t = state_dict.get(inner_prefix + name)
            if t is None:
                if name != "zero_point":
                    missing_keys.append(inner_prefix + name)
                continue
            if tuple(t.shape) != shape or t.dtype != dtype:
                error_msgs.append(f"{inner_prefix}{name}: expected shape {list(shape)} and dtype {dtype}, "
                                  f"got {list(t.shape)} and {t.dtype}")
                continue
            # load_state_dict(assign=True) takes the state's tensors where they are (requantize
            # moves them to the requested device first); otherwise they join the module's device.
            inner[name] = t if old.is_meta or assign else t.to(old.device)
        for key in state_dict:
            if key.startswith(inner_prefix) and key[len(inner_prefix):] not in layout:
                unexpected_keys.append(key)
        if all(name in inner for name in layout if name != "zero_point"):
            q = QTensor(inner["codes"], inner.get("scale"), inner.get("zero_point"), self.weight_qtype,
                        weight_axis(self.weight_qtype, self.group_size), self.group_size, old.shape, old.dtype)
            self.weight = nn.Parameter(q, requires_grad=False)
        self._after_load()

    def _after_load(self):
        if self.activation_granularity == "per_tensor":
            buf = getattr(self, self.activation_site + "_scale")
            self._act_calibrated = (not buf.is_meta) and bool(buf > 0)

    def extra_repr(self):
        base = super().extra_repr()
        cfg = self.quantization_config()
        acts = cfg["activations"] if cfg["activations"] is None else f"{cfg['activations']} {cfg['activation_granularity']}"
        return f"{base}, weights={cfg['weights']}, activations={acts}, group_size={cfg['group_size']}"
