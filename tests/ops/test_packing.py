"""pack_bits / unpack_bits against a plain-PyTorch reference (which is the spec).

Layout: u = code + 2**(bits-1); element i of a row in bits (i*bits) % 8 of byte
(i*bits) // 8; rows start on byte boundaries; padding bits are 0 when packing and
ignored when unpacking.
"""
import pytest
import torch

import lowbit  # noqa: F401
from lowbit.ops import pack_bits, unpack_bits

NS = [1, 2, 3, 4, 5, 7, 8, 31, 32, 33, 127, 128, 129, 4096 + 3]
BITS = [2, 4]


def ref_pack(codes: torch.Tensor, bits: int) -> torch.Tensor:
    per = 8 // bits
    n = codes.shape[-1]
    nb = (n * bits + 7) // 8
    u = codes.to(torch.int64) + 2 ** (bits - 1)
    assert ((u >= 0) & (u < 2 ** bits)).all()
    pad = torch.zeros(*codes.shape[:-1], nb * per - n, dtype=torch.int64)
    u = torch.cat([u, pad], dim=-1).reshape(*codes.shape[:-1], nb, per)
    shifts = torch.arange(per, dtype=torch.int64) * bits
    return (u << shifts).sum(-1).to(torch.uint8)


def ref_unpack(packed: torch.Tensor, bits: int, n: int) -> torch.Tensor:
    per = 8 // bits
    shifts = torch.arange(per, dtype=torch.int64) * bits
    u = (packed.to(torch.int64).unsqueeze(-1) >> shifts) & (2 ** bits - 1)
    u = u.flatten(-2)[..., :n]
    return (u - 2 ** (bits - 1)).to(torch.int8)


def rand_codes(shape, bits):
    return torch.randint(-2 ** (bits - 1), 2 ** (bits - 1), shape, dtype=torch.int8)


def rand_bytes(shape):
    return torch.randint(0, 256, shape, dtype=torch.uint8)


def nbytes(n, bits):
    return (n * bits + 7) // 8


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("n", NS)
@pytest.mark.parametrize("rows", [1, 3, 17])
def test_pack_matches_reference(isa, bits, n, rows):
    codes = rand_codes((rows, n), bits)
    got = pack_bits(codes, bits)
    assert got.dtype == torch.uint8 and got.shape == (rows, nbytes(n, bits))
    assert torch.equal(got, ref_pack(codes, bits))


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("n", NS)
@pytest.mark.parametrize("rows", [1, 3, 17])
def test_unpack_matches_reference(isa, bits, n, rows):
    # Random bytes, padding bits included: unpacking must ignore them.
    packed = rand_bytes((rows, nbytes(n, bits)))
    got = unpack_bits(packed, bits, n)
    assert got.dtype == torch.int8 and got.shape == (rows, n)
    assert torch.equal(got, ref_unpack(packed, bits, n))


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("n", [1, 3, 33, 128, 129, 4099])
def test_3d_and_round_trip(isa, bits, n):
    codes = rand_codes((2, 5, n), bits)
    packed = pack_bits(codes, bits)
    assert packed.shape == (2, 5, nbytes(n, bits))
    assert torch.equal(packed, ref_pack(codes, bits))
    assert torch.equal(unpack_bits(packed, bits, n), codes)
    # Rows stay addressable: row r of the packed tensor is the packing of row r alone.
    assert torch.equal(packed[1, 3], pack_bits(codes[1, 3].clone(), bits))


@pytest.mark.parametrize("bits", BITS)
def test_full_range_every_value(isa, bits):
    # Every code value in every position of a byte.
    vals = torch.arange(-2 ** (bits - 1), 2 ** (bits - 1), dtype=torch.int8)
    codes = torch.cartesian_prod(*[vals] * (8 // bits)).to(torch.int8).reshape(1, -1)
    packed = pack_bits(codes, bits)
    assert torch.equal(packed, ref_pack(codes, bits))
    assert torch.equal(unpack_bits(packed, bits, codes.shape[-1]), codes)


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("shape", [(3, 200_003), (2, 2 ** 17 + 64), (20_000, 7), (9_000, 12), (1, 2 ** 20)])
def test_large_threaded_paths(isa, bits, shape):
    # Long rows cut into chunks (with and without a tail), many short rows, and
    # byte-aligned rows treated as one long row.
    codes = rand_codes(shape, bits)
    packed = pack_bits(codes, bits)
    assert torch.equal(packed, ref_pack(codes, bits))
    assert torch.equal(unpack_bits(packed, bits, shape[-1]), codes)


@pytest.mark.parametrize("bits", BITS)
def test_non_contiguous_input_is_copied(isa, bits):
    codes = rand_codes((37, 12), bits).t()
    packed = pack_bits(codes, bits)
    assert torch.equal(packed, ref_pack(codes.contiguous(), bits))
    strided = rand_bytes((6, 40))[:, ::2]
    assert torch.equal(unpack_bits(strided, bits, 20 * 8 // bits), ref_unpack(strided.contiguous(), bits, 20 * 8 // bits))


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("shape", [(0,), (0, 5), (4, 0), (2, 0, 3)])
def test_empty(isa, bits, shape):
    codes = torch.empty(shape, dtype=torch.int8)
    packed = pack_bits(codes, bits)
    assert packed.dtype == torch.uint8
    assert packed.shape == (*shape[:-1], nbytes(shape[-1], bits))
    out = unpack_bits(packed, bits, shape[-1])
    assert out.dtype == torch.int8 and out.shape == shape


# ---- bad inputs ---------------------------------------------------------------

@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("n", [5, 129, 300])
@pytest.mark.parametrize("pos", [0, -1, "mid"])
@pytest.mark.parametrize("row", [0, -1])
def test_pack_out_of_range_code_raises(isa, bits, n, pos, row):
    qmin, qmax = -2 ** (bits - 1), 2 ** (bits - 1) - 1
    for bad in (qmax + 1, qmin - 1, 127, -128):
        codes = rand_codes((3, n), bits)
        codes[row, n // 2 if pos == "mid" else pos] = bad
        with pytest.raises(RuntimeError, match=rf"lowbit.pack_bits: expected codes in \[{qmin}, {qmax}\] for bits={bits}"):
            pack_bits(codes, bits)


def test_bits_8_and_others_rejected():
    codes = torch.zeros(4, 8, dtype=torch.int8)
    with pytest.raises(RuntimeError, match="expected bits 2 or 4, got 8.*nothing to pack"):
        pack_bits(codes, 8)
    with pytest.raises(RuntimeError, match="expected bits 2 or 4, got 8"):
        unpack_bits(torch.zeros(4, 8, dtype=torch.uint8), 8, 8)
    for bits in (0, 1, 3, 16, -4):
        with pytest.raises(RuntimeError, match=f"lowbit.pack_bits: expected bits 2 or 4, got {bits}"):
            pack_bits(codes, bits)
        with pytest.raises(RuntimeError, match=f"lowbit.unpack_bits: expected bits 2 or 4, got {bits}"):
            unpack_bits(torch.zeros(4, 4, dtype=torch.uint8), bits, 8)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int16, torch.int32, torch.float32])
def test_pack_wrong_dtype(dtype):
    with pytest.raises(RuntimeError, match="lowbit.pack_bits: expected codes of dtype Char"):
        pack_bits(torch.zeros(2, 4, dtype=dtype), 4)


@pytest.mark.parametrize("dtype", [torch.int8, torch.int32, torch.float16])
def test_unpack_wrong_dtype(dtype):
    with pytest.raises(RuntimeError, match="lowbit.unpack_bits: expected packed of dtype Byte"):
        unpack_bits(torch.zeros(2, 4, dtype=dtype), 4, 8)


def test_zero_dim_rejected():
    with pytest.raises(RuntimeError, match="lowbit.pack_bits: expected codes of rank >= 1"):
        pack_bits(torch.tensor(1, dtype=torch.int8), 4)
    with pytest.raises(RuntimeError, match="lowbit.unpack_bits: expected packed of rank >= 1"):
        unpack_bits(torch.tensor(1, dtype=torch.uint8), 4, 2)


def test_unpack_wrong_length_or_negative_n():
    packed = torch.zeros(3, 4, dtype=torch.uint8)
    with pytest.raises(RuntimeError, match=r"expected the last axis of packed to hold ceil\(n \* bits / 8\) = 5 "
                                           r"bytes for n=10, bits=4, got 4"):
        unpack_bits(packed, 4, 10)
    with pytest.raises(RuntimeError, match="= 3 bytes for n=9, bits=2, got 4"):
        unpack_bits(packed, 2, 9)
    with pytest.raises(RuntimeError, match="lowbit.unpack_bits: expected n >= 0, got -1"):
        unpack_bits(packed, 4, -1)
    # Every n with the right byte count is accepted (padding hides n).
    assert unpack_bits(packed, 4, 7).shape == (3, 7)
    assert unpack_bits(packed, 2, 13).shape == (3, 13)


# ---- fake / compile -------------------------------------------------------------

@pytest.mark.parametrize("bits", BITS)
def test_opcheck(bits):
    for shape in [(5, 33), (2, 3, 8), (1,)]:
        codes = rand_codes(shape, bits)
        torch.library.opcheck(torch.ops.lowbit.pack_bits.default, (codes, bits))
        packed = pack_bits(codes, bits)
        torch.library.opcheck(torch.ops.lowbit.unpack_bits.default, (packed, bits, shape[-1]))


@pytest.mark.parametrize("bits", BITS)
def test_meta_shapes_match_cpu(bits):
    for shape in [(5, 33), (2, 3, 7), (0, 4)]:
        codes = rand_codes(shape, bits)
        cpu = pack_bits(codes, bits)
        meta = pack_bits(codes.to("meta"), bits)
        assert meta.shape == cpu.shape and meta.dtype == cpu.dtype
        un = unpack_bits(cpu.to("meta"), bits, shape[-1])
        assert un.shape == codes.shape and un.dtype == torch.int8
    with pytest.raises(RuntimeError, match="expected the last axis of packed to hold"):
        unpack_bits(torch.empty(3, 4, dtype=torch.uint8, device="meta"), 4, 10)
    with pytest.raises(RuntimeError, match="expected bits 2 or 4, got 8"):
        pack_bits(torch.empty(3, 4, dtype=torch.int8, device="meta"), 8)


def test_compile_fullgraph():
    @torch.compile(fullgraph=True, backend="eager")
    def f(codes):
        return unpack_bits(pack_bits(codes, 4), 4, codes.shape[-1])

    codes = rand_codes((6, 45), 4)
    assert torch.equal(f(codes), codes)
