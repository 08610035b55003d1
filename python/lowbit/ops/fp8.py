# placeholder until the float8 family lands
import torch
def choose_scale_fp8(x, dtype, axis=None, group_size=None): return torch.ops.lowbit.choose_scale_fp8(x, dtype, axis, group_size)
def quantize_fp8(x, scale, dtype): return torch.ops.lowbit.quantize_fp8(x, scale, dtype)
def dequantize_fp8(q, scale, dtype): return torch.ops.lowbit.dequantize_fp8(q, scale, dtype)
