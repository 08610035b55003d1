"""Quantized modules and the registry mapping float classes to them."""
from .qmodule import QModuleMixin, register_qmodule, qmodule_class, FORMAT_VERSION, ACTIVATION_QTYPES
from .modules import QLinear, QConv1d, QConv2d, QEmbedding, QLayerNorm, QRMSNorm

__all__ = ["QModuleMixin", "register_qmodule", "qmodule_class", "FORMAT_VERSION", "ACTIVATION_QTYPES",
           "QLinear", "QConv1d", "QConv2d", "QEmbedding", "QLayerNorm", "QRMSNorm"]
