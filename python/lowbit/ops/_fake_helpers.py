"""Shape rules shared by the fake (meta) implementations of the op families."""
import torch

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def check_float(x: torch.Tensor, op: str, arg: str) -> None:
    torch._check(x.dtype in FLOAT_DTYPES,
                 lambda: f"lowbit.{op}: expected {arg} of dtype float32, float16 or bfloat16, got {x.dtype}")


def param_shape(x: torch.Tensor, axis, group_size, op: str) -> list:
    """Keepdim shape of per-tensor / per-axis / per-group parameters (see checks.h)."""
    torch._check(axis is None or group_size is None,
                 lambda: f"lowbit.{op}: pass either axis (per-axis) or group_size (per-group along the last axis), not both")
    shape = list(x.shape)
    if group_size is not None:
        torch._check(x.dim() >= 1, lambda: f"lowbit.{op}: per-group parameters need a tensor of rank >= 1, got a 0-d tensor")
        torch._check(group_size > 0, lambda: f"lowbit.{op}: expected group_size > 0, got {group_size}")
        torch._check(x.shape[-1] % group_size == 0,
                     lambda: f"lowbit.{op}: group_size {group_size} does not divide the last axis of size {x.shape[-1]} (input shape {list(x.shape)})")
        shape[-1] = x.shape[-1] // group_size
        return shape
    if axis is not None:
        dim = x.dim()
        torch._check(dim > 0, lambda: f"lowbit.{op}: per-axis parameters need a tensor of rank >= 1, got a 0-d tensor")
        torch._check(-dim <= axis < dim, lambda: f"lowbit.{op}: expected axis in [{-dim}, {dim - 1}] for a tensor of rank {dim}, got {axis}")
        a = axis % dim
        return [s if d == a else 1 for d, s in enumerate(shape)]
    return [1] * len(shape)


def _scale_layout_ok(x: torch.Tensor, scale: torch.Tensor) -> bool:
    # Mirrors layout_from_scale in csrc/ops/checks.h.
    if scale.numel() == 1:
        return True
    dim = x.dim()
    if all(scale.shape[d] == x.shape[d] for d in range(dim - 1)):
        if scale.shape[-1] > 0 and x.shape[-1] % scale.shape[-1] == 0:
            return True
        if scale.shape[-1] == 0 and x.shape[-1] == 0:
            return True
    non_one = [d for d in range(dim) if scale.shape[d] != 1]
    return len(non_one) == 1 and scale.shape[non_one[0]] == x.shape[non_one[0]]


def check_scale(x: torch.Tensor, scale: torch.Tensor, op: str) -> None:
    torch._check(scale.dtype == torch.float32,
                 lambda: f"lowbit.{op}: expected scale of dtype Float, got {scale.dtype}")
    torch._check(scale.device == x.device,
                 lambda: f"lowbit.{op}: expected scale on the device of the input ({x.device}), got {scale.device}")
    torch._check(scale.dim() == x.dim(),
                 lambda: f"lowbit.{op}: expected scale of rank {x.dim()} (the input's rank, keepdim-style), "
                         f"got shape {list(scale.shape)} for input shape {list(x.shape)}")
    torch._check(_scale_layout_ok(x, scale),
                 lambda: f"lowbit.{op}: scale of shape {list(scale.shape)} is not a per-tensor, per-axis or "
                         f"per-group (last axis) layout for input of shape {list(x.shape)}")
