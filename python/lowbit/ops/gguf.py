# placeholder until the GGUF family lands
import torch
def quantize_q8_0(x): return torch.ops.lowbit.quantize_q8_0(x)
def dequantize_q8_0(b, dtype): return torch.ops.lowbit.dequantize_q8_0(b, dtype)
def quantize_q4_0(x): return torch.ops.lowbit.quantize_q4_0(x)
def dequantize_q4_0(b, dtype): return torch.ops.lowbit.dequantize_q4_0(b, dtype)
