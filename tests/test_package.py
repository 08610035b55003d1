import pytest
import torch

import lowbit


def test_ops_are_registered():
    for name in ["choose_qparams_affine", "quantize_affine", "dequantize_affine", "pack_bits", "unpack_bits",
                 "choose_scale_fp8", "quantize_fp8", "dequantize_fp8", "quantize_q8_0", "dequantize_q8_0",
                 "quantize_q4_0", "dequantize_q4_0"]:
        assert hasattr(torch.ops.lowbit, name)
        assert callable(getattr(lowbit.ops, name))


def test_cpu_isa_selection():
    assert lowbit.cpu_isa() in ("avx512", "avx2", "portable")
    with lowbit.use_cpu_isa("portable"):
        assert lowbit.cpu_isa() == "portable"
    with pytest.raises(ValueError, match="unknown CPU ISA 'sse9'"):
        lowbit.set_cpu_isa("sse9")
    info = lowbit.build_info()
    assert {"avx2_kernels", "avx512_kernels", "cuda", "compiler"} <= set(info)
    assert isinstance(lowbit.last_kernels(), dict)
