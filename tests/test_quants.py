"""Dequantization is bit-exact against the gguf package's numpy reference."""

from __future__ import annotations

import numpy as np
import pytest

import gguf
import gguf.quants as ref
from gguf_mutations import random_blocks
from lila.errors import ModelFormatError, UnsupportedError
from lila.formats.quants import BLOCK_SIZE, SUPPORTED_TYPES, TYPE_SIZE, GGMLType, dequantize, tensor_nbytes

QUANTIZED = sorted(t for t in SUPPORTED_TYPES if BLOCK_SIZE[t] > 1)
SHAPES = [(1, 1), (3, 2), (7, 1), (2, 3, 2), (5,), (2, 1, 3, 1)]  # in blocks along the row


def ref_type(t: GGMLType) -> gguf.GGMLQuantizationType:
    return gguf.GGMLQuantizationType(int(t))


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal including the sign of zeros and the payload of NaNs."""
    same_layout = a.dtype == b.dtype == np.float32 and a.shape == b.shape
    return same_layout and np.array_equal(a.view(np.uint32), b.view(np.uint32))


def element_shape(t: GGMLType, blocks: tuple[int, ...]) -> tuple[int, ...]:
    return (*blocks[:-1], blocks[-1] * BLOCK_SIZE[t])


def test_type_table_matches_gguf():
    for rt, (block, size) in gguf.GGML_QUANT_SIZES.items():
        t = GGMLType(int(rt))
        assert t.name == rt.name
        assert (BLOCK_SIZE[t], TYPE_SIZE[t]) == (block, size), t.name
    assert set(BLOCK_SIZE) == set(TYPE_SIZE) == set(GGMLType)
    assert {t.name for t in SUPPORTED_TYPES} == {
        "F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"}


@pytest.mark.parametrize("t", QUANTIZED, ids=lambda t: t.name)
@pytest.mark.parametrize("blocks", SHAPES, ids=str)
def test_quantized_bit_exact_on_random_blocks(t, blocks):
    rng = np.random.default_rng(int(t) * 1000 + len(blocks))
    shape = element_shape(t, blocks)
    raw = random_blocks(t, int(np.prod(blocks)), rng).reshape(-1)
    got = dequantize(raw, t, shape)
    want = ref.dequantize(raw.reshape(*blocks[:-1], blocks[-1] * TYPE_SIZE[t]), ref_type(t))
    assert np.isfinite(got).all()
    assert same_bits(got, want)


@pytest.mark.parametrize("t", QUANTIZED, ids=lambda t: t.name)
def test_quantized_bit_exact_with_nonfinite_scales(t):
    """Entirely random bytes: f16 scales may be inf/NaN; results must still match bit for bit."""
    rng = np.random.default_rng(99)
    raw = rng.integers(0, 256, size=64 * TYPE_SIZE[t], dtype=np.uint8)
    with np.errstate(all="ignore"):
        want = ref.dequantize(raw.reshape(8, 8 * TYPE_SIZE[t]), ref_type(t))
    got = dequantize(raw, t, (8, 8 * BLOCK_SIZE[t]))
    assert same_bits(got, want)


@pytest.mark.parametrize("t", [GGMLType.F32, GGMLType.F16, GGMLType.BF16], ids=lambda t: t.name)
def test_float_types_bit_exact(t):
    rng = np.random.default_rng(7)
    values = (rng.standard_normal((5, 12)) * 100).astype(np.float32)
    if t == GGMLType.F32:
        raw = values.view(np.uint8).reshape(-1)
    elif t == GGMLType.F16:
        raw = values.astype(np.float16).view(np.uint8).reshape(-1)
    else:
        raw = ref.quantize(values, gguf.GGMLQuantizationType.BF16).reshape(-1)
    got = dequantize(raw, t, (5, 12))
    want = ref.dequantize(raw.reshape(5, -1), ref_type(t))
    assert same_bits(got, want)
    np.testing.assert_allclose(got, values, rtol=1e-2 if t == GGMLType.BF16 else 1e-3)


def test_f32_is_a_view_not_a_copy():
    raw = np.arange(16, dtype=np.float32).view(np.uint8)
    out = dequantize(raw, GGMLType.F32, (4, 4))
    assert np.shares_memory(out, raw)


@pytest.mark.parametrize("t", [GGMLType.Q4_0, GGMLType.Q4_1, GGMLType.Q5_0, GGMLType.Q5_1, GGMLType.Q8_0],
                         ids=lambda t: t.name)
def test_round_trip_through_gguf_quantize(t):
    rng = np.random.default_rng(3)
    values = rng.standard_normal((9, 128)).astype(np.float32)
    q = ref.quantize(values, ref_type(t))
    got = dequantize(q.reshape(-1), t, values.shape)
    assert same_bits(got, ref.dequantize(q, ref_type(t)))
    step = {GGMLType.Q8_0: 1 / 127}.get(t, 1 / 7 if t in (GGMLType.Q4_0, GGMLType.Q4_1) else 1 / 15)
    assert np.abs(got - values).max() <= step * np.abs(values).max()


def test_tensor_nbytes():
    assert tensor_nbytes(GGMLType.F32, (3, 5)) == 60
    assert tensor_nbytes(GGMLType.Q4_1, (576, 1536)) == 576 * 1536 // 32 * 20
    assert tensor_nbytes(GGMLType.Q6_K, (2, 512)) == 4 * 210
    assert tensor_nbytes(GGMLType.IQ2_XXS, (256,)) == 66
    with pytest.raises(ModelFormatError):
        tensor_nbytes(GGMLType.Q8_0, (4, 33))


def test_wrong_sizes_and_types_are_refused():
    with pytest.raises(ModelFormatError):
        dequantize(np.zeros(33, np.uint8), GGMLType.Q8_0, (32,))
    with pytest.raises(UnsupportedError, match="IQ2_XXS"):
        dequantize(np.zeros(66, np.uint8), GGMLType.IQ2_XXS, (256,))
