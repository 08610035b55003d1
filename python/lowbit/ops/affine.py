# placeholder until the affine family lands
import torch
def choose_qparams_affine(x, bits, symmetric, axis=None, group_size=None): return torch.ops.lowbit.choose_qparams_affine(x, bits, symmetric, axis, group_size)
def quantize_affine(x, scale, zero_point, bits): return torch.ops.lowbit.quantize_affine(x, scale, zero_point, bits)
def dequantize_affine(codes, scale, zero_point, dtype): return torch.ops.lowbit.dequantize_affine(codes, scale, zero_point, dtype)
