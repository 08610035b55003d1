# placeholder until the packing family lands
import torch
def pack_bits(codes, bits): return torch.ops.lowbit.pack_bits(codes, bits)
def unpack_bits(packed, bits, n): return torch.ops.lowbit.unpack_bits(packed, bits, n)
