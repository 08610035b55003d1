"""The quantized modules. Each is built from a float module with
``from_module(module, weights, activations, group_size, optimizer, activation_granularity)`` and shares
the float module's parameters (so an optimizer built before ``quantize`` keeps
training them)."""
import torch
import torch.nn.functional as F
from torch import nn

from .. import ops
from ..calibration import active_calibration
from ..tensor.kernels_cuda import linear_fp8_per_token
from ..tensor.qtensor import QTensor
from .qmodule import QModuleMixin, register_qmodule

__all__ = ["QLinear", "QConv1d", "QConv2d", "QEmbedding", "QLayerNorm", "QRMSNorm"]


def _adopt(qmodule, module, names=("weight", "bias")):
    for name in names:
        setattr(qmodule, name, getattr(module, name, None))
    qmodule.train(module.training)
    return qmodule


@register_qmodule(nn.Linear)
class QLinear(QModuleMixin, nn.Linear):
    smoothable = True

    @classmethod
    def from_module(cls, module, weights, activations, group_size, optimizer, activation_granularity="per_tensor"):
        q = cls(module.in_features, module.out_features, bias=module.bias is not None, device="meta")
        _adopt(q, module).setup_quantization(weights, activations, group_size, optimizer, module.weight.device,
                                                   activation_granularity)
        return q

    def forward(self, input):
        self.observe_input(input)
        fused = self._w8a8_per_token(input)
        if fused is not None:
            return fused
        return F.linear(self.quantize_activation(input), self.qweight(), self.bias)

    def _w8a8_per_token(self, input):
        """Frozen 8-bit weights with 8-bit per-token activations as one quantized GEMM:
        - int8 x int8 (one weight scale per output channel): ``lowbit.ops.linear_int8(...,
          int8_activations=True)`` (CPU and CUDA) quantizes each row of ``input`` as the
          fake-quantized path would (scale = absmax / 127, round half to even) and accumulates
          the integer products in int32;
        - float8 e4m3fn x float8 e4m3fn on CUDA: the row-wise scaled float8 GEMM of
          :func:`lowbit.tensor.kernels_cuda.linear_fp8_per_token` (bfloat16 input).
        Returns None where neither applies (training, calibration, other qtypes or layouts);
        the module then fake-quantizes the activations."""
        w = self.weight
        aq = self.activation_qtype
        if (self.activation_granularity != "per_token" or aq is None or not isinstance(w, QTensor)
                or input.dtype not in (torch.float32, torch.float16, torch.bfloat16)
                or active_calibration() is not None or input.dim() == 0 or input.device != w.device
                or (torch.is_grad_enabled() and (input.requires_grad
                                                 or (self.bias is not None and self.bias.requires_grad)))):
            return None
        if (aq.name == "qint8" and w.qtype.name == "qint8" and w.zero_point is None
                and w.scale.shape == (w.shape[0], 1) and input.shape[-1] <= 1 << 17
                and input.device.type in ("cpu", "cuda")):
            return ops.linear_int8(input, w.codes, w.scale, self.bias, True)
        if aq.name == "qfloat8_e4m3fn" and w.qtype.name == "qfloat8_e4m3fn" and input.device.type == "cuda":
            out = linear_fp8_per_token(input, w.codes, w.scale, self.bias)
            return None if out is NotImplemented else out
        return None


class _QConvNd(QModuleMixin):
    token_dim = 1  # per-token activation scales: one per (batch, position) over the input channels
    @classmethod
    def from_module(cls, module, weights, activations, group_size, optimizer, activation_granularity="per_tensor"):
        q = cls(module.in_channels, module.out_channels, module.kernel_size, module.stride, module.padding,
                module.dilation, module.groups, module.bias is not None, module.padding_mode, device="meta")
        _adopt(q, module).setup_quantization(weights, activations, group_size, optimizer, module.weight.device,
                                                   activation_granularity)
        return q

    def forward(self, input):
        return self._conv_forward(self.quantize_activation(input), self.qweight(), self.bias)


@register_qmodule(nn.Conv1d)
class QConv1d(_QConvNd, nn.Conv1d):
    """Conv1d; the weight ``[out, in/groups, k]`` is quantized as ``[out, in/groups*k]``."""


@register_qmodule(nn.Conv2d)
class QConv2d(_QConvNd, nn.Conv2d):
    """Conv2d; the weight ``[out, in/groups, kh, kw]`` is quantized as ``[out, in/groups*kh*kw]``."""


@register_qmodule(nn.Embedding)
class QEmbedding(QModuleMixin, nn.Embedding):
    """Embedding with a quantized table (rows = tokens, groups along the embedding
    dim). Weights only: its output is never quantized."""

    @classmethod
    def from_module(cls, module, weights, activations, group_size, optimizer, activation_granularity="per_tensor"):
        q = cls(module.num_embeddings, module.embedding_dim, module.padding_idx, module.max_norm,
                module.norm_type, module.scale_grad_by_freq, module.sparse, device="meta")
        _adopt(q, module, ("weight",)).setup_quantization(weights, None, group_size, optimizer)
        return q

    def forward(self, input):
        return F.embedding(input, self.qweight(), self.padding_idx, self.max_norm, self.norm_type,
                           self.scale_grad_by_freq, self.sparse)


@register_qmodule(nn.LayerNorm)
class QLayerNorm(QModuleMixin, nn.LayerNorm):
    """LayerNorm whose output is quantized; its (small) weight and bias stay float."""
    activation_site = "output"
    quantizes_weight = False
    token_dim = None
    smoothable = True

    @classmethod
    def from_module(cls, module, weights, activations, group_size, optimizer, activation_granularity="per_tensor"):
        q = cls(module.normalized_shape, module.eps, module.elementwise_affine, bias=module.bias is not None,
                device="meta")
        device = module.weight.device if module.weight is not None else None
        _adopt(q, module).setup_quantization(weights, activations, group_size, optimizer, device,
                                                   activation_granularity)
        return q

    def forward(self, input):
        out = F.layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps)
        return self.quantize_activation(out)


def _is_rmsnorm(module) -> bool:
    return (type(module).__name__.endswith("RMSNorm") and isinstance(getattr(module, "weight", None), torch.Tensor)
            and (hasattr(module, "variance_epsilon") or hasattr(module, "eps")))


_RMS_CLASSES = {}


@register_qmodule(matcher=_is_rmsnorm)
class QRMSNorm(QModuleMixin, nn.Module):
    """Output-quantized RMSNorm for ``torch.nn.RMSNorm`` and any module whose class
    name ends with ``RMSNorm`` and that has a ``weight`` and ``variance_epsilon`` or
    ``eps`` (the transformers RMSNorm classes). The module keeps its own forward
    (variants differ: ``1 + weight``, float32 upcast, ...): it is turned into an
    instance of ``Q<ItsClass>``, a subclass of both ``QRMSNorm`` and its class, and its
    output is quantized. Its weight stays float."""
    activation_site = "output"
    quantizes_weight = False
    token_dim = None
    smoothable = True

    @classmethod
    def from_module(cls, module, weights, activations, group_size, optimizer, activation_granularity="per_tensor"):
        base = type(module)
        qcls = _RMS_CLASSES.get(base)
        if qcls is None:
            qcls = _RMS_CLASSES[base] = type("Q" + base.__name__, (QRMSNorm, base), {})
        module.__class__ = qcls
        module.setup_quantization(weights, activations, group_size, optimizer, module.weight.device,
                                                   activation_granularity)
        return module

    def forward(self, *args, **kwargs):
        return self.quantize_activation(super().forward(*args, **kwargs))
