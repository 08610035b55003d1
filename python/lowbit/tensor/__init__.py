"""The quantized weight tensor and the functional ops it routes."""
from .qtensor import (QTensor, quantize_weight, weight_matrix_shape, expected_inner_layout, weight_axis,
                      check_block_divides, check_block_options)
from .functions import register_kernel, dequantize_fallback_ops
from .kernels import int8_activations, int8_activations_enabled, set_int8_activations

__all__ = ["QTensor", "quantize_weight", "weight_matrix_shape", "expected_inner_layout", "weight_axis",
           "check_block_divides", "check_block_options", "register_kernel",
           "dequantize_fallback_ops", "int8_activations", "int8_activations_enabled", "set_int8_activations"]
