"""Row kernels of every runnable native family against numpy: quantize_q8, rmsnorm,
rmsnorm_q8, add, to_f16 and the embedding rows.

Bounds:
- quantize_q8, add, to_f16 and every embed type: bit for bit (to_f16 against numpy's
  astype(float16), embed against lila.formats.quants.dequantize(...) * scale in fp32).
- rmsnorm: NMSE < 1e-12 against float64 numpy.
- rmsnorm_q8 against quantize_q8 of numpy's fp32 rmsnorm (reference backend's formula):
  d within 1e-6 relative; a code may differ by 1 (the kernel normalises as
  (x * (1 / rms)) * w, numpy as x / rms * w, so a value right at a rounding boundary of
  x / d can land on either side), at most 1% of codes do; s == d * sum(qs) exactly.
  Against the kernel's own rmsnorm followed by its quantize_q8 it is bit-exact.

Every input row sits right before an inaccessible page, so reading past its end
crashes the test; every output is followed by sentinels that must survive.
"""
from __future__ import annotations

import numpy as np
import pytest

from gguf_mutations import random_blocks
from kernel_reference import Q8, family_params, guarded, nmse, pointer, quantize_q8
from lila.formats.quants import BLOCK_SIZE, TYPE_SIZE, GGMLType, dequantize
from lila.native import library
from lila.native.abi import WEIGHT_TYPES

SIZES = [1, 7, 31, 32, 33, 96, 576, 1000]
Q8_SIZES = [32, 96, 576, 1024, 4096]
EPS = 1e-5
PAD = 16                            # sentinel elements after each output
SENTINEL_F32 = np.uint32(0x7FC0DEAD)
SENTINEL_U16 = np.uint16(0xDEAD)


# --- memory helpers ------------------------------------------------------------------

def padded(n: int, dtype) -> np.ndarray:
    """An output of n elements followed by PAD sentinels (the whole array is returned)."""
    dtype = np.dtype(dtype)
    if dtype == Q8:
        out = np.zeros(n + PAD, Q8)
        out.view(np.uint8)[:] = 0xA5
        return out
    out = np.empty(n + PAD, dtype)
    sentinel = SENTINEL_U16 if dtype.itemsize == 2 else SENTINEL_F32
    out.view(sentinel.dtype)[:] = sentinel
    return out


def assert_sentinels(out: np.ndarray, n: int) -> None:
    if out.dtype == Q8:
        assert (out[n:].view(np.uint8) == 0xA5).all(), "wrote past the last block"
    else:
        sentinel = SENTINEL_U16 if out.dtype.itemsize == 2 else SENTINEL_F32
        assert (out[n:].view(sentinel.dtype) == sentinel).all(), "wrote past the end"


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape, (a.dtype, b.dtype, a.shape, b.shape)
    u = np.uint16 if a.dtype.itemsize == 2 else np.uint32
    return bool(np.array_equal(a.view(u), b.view(u)))


@pytest.fixture(params=family_params())
def kernels(request):
    native = library()
    table = native.kernels(request.param)
    assert table is not None
    return native, table


# --- inputs --------------------------------------------------------------------------

def rows(n: int, seed: int) -> dict[str, np.ndarray]:
    """Named fp32 rows of length n: typical data and the edge cases."""
    rng = np.random.default_rng(seed * 7919 + n)
    normal = rng.standard_normal(n).astype(np.float32)
    huge = (rng.standard_normal(n) * 0.01).astype(np.float32)
    huge[rng.integers(n)] = 3.0e15
    negzero = np.full(n, -0.0, np.float32)
    negzero[::3] = normal[::3]
    spread = (rng.standard_normal(n) * np.exp(rng.uniform(-20, 20, n))).astype(np.float32)
    return {"normal": normal, "zeros": np.zeros(n, np.float32), "huge": huge,
            "negzero": negzero, "spread": spread}


ROW_KINDS = ["normal", "zeros", "huge", "negzero", "spread"]


# --- quantize_q8 ---------------------------------------------------------------------

def run_quantize(native, table, x: np.ndarray) -> np.ndarray:
    n = x.size
    xg = guarded(x)
    out = padded(n // 32, Q8)
    table.quantize_q8(pointer(native, xg, "float *"), n, pointer(native, out, "lila_q8 *"))
    assert_sentinels(out, n // 32)
    return out[:n // 32]


def assert_q8_equal(got: np.ndarray, want: np.ndarray) -> None:
    assert same_bits(got["d"], want["d"]), "d differs"
    assert np.array_equal(got["qs"], want["qs"]), \
        f"{int((got['qs'] != want['qs']).sum())} codes differ"
    assert same_bits(got["s"], want["s"]), "s differs"


@pytest.mark.parametrize("n", Q8_SIZES)
@pytest.mark.parametrize("kind", ROW_KINDS)
def test_quantize_q8_bit_exact(kernels, n, kind):
    native, table = kernels
    x = rows(n, 1)[kind]
    assert_q8_equal(run_quantize(native, table, x), quantize_q8(x))


def test_quantize_q8_rounds_half_to_even(kernels):
    """A block with max 127 has d = 1 exactly, so x.5 values are exact ties."""
    native, table = kernels
    x = np.zeros(64, np.float32)
    x[0] = 127.0
    x[1:9] = [0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5, -126.5]
    x[32] = -127.0
    x[33:36] = [3.5, -3.5, 4.5]
    got = run_quantize(native, table, x)
    assert list(got["qs"][0, :9]) == [127, 0, 2, 2, 0, -2, -2, 126, -126]
    assert list(got["qs"][1, :4]) == [-127, 4, -4, 4]
    assert_q8_equal(got, quantize_q8(x))


def test_quantize_q8_zero_sized(kernels):
    native, table = kernels
    out = padded(0, Q8)
    table.quantize_q8(native.ffi.NULL, 0, pointer(native, out, "lila_q8 *"))
    assert_sentinels(out, 0)


# --- rmsnorm -------------------------------------------------------------------------

def rmsnorm64(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    x64 = x.astype(np.float64)
    return x64 / np.sqrt(np.mean(x64 * x64) + np.float64(np.float32(eps))) * w.astype(np.float64)


def rmsnorm32(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    """As lila/executor/reference.py computes it."""
    rms = np.sqrt(np.mean(x * x, keepdims=True) + np.float32(eps))
    return x / rms * w


def norm_weight(n: int) -> np.ndarray:
    return (1.0 + 0.5 * np.random.default_rng(n).standard_normal(n)).astype(np.float32)


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("kind", ROW_KINDS)
def test_rmsnorm(kernels, n, kind):
    native, table = kernels
    x = rows(n, 2)[kind]
    w = norm_weight(n)
    xg, wg = guarded(x), guarded(w)
    out = padded(n, np.float32)
    table.rmsnorm(pointer(native, xg, "float *"), pointer(native, wg, "float *"), n, EPS,
                  pointer(native, out, "float *"))
    assert_sentinels(out, n)
    want = rmsnorm64(x, w, EPS)
    assert nmse(out[:n], want) < 1e-12
    if kind == "zeros":
        assert not out[:n].any()


@pytest.mark.parametrize("n", SIZES)
def test_rmsnorm_in_place(kernels, n):
    native, table = kernels
    x = rows(n, 3)["normal"]
    w = norm_weight(n)
    separate = padded(n, np.float32)
    table.rmsnorm(pointer(native, x, "float *"), pointer(native, w, "float *"), n, 1e-6,
                  pointer(native, separate, "float *"))
    inplace = np.concatenate([x, separate[n:]])       # x, then sentinels
    table.rmsnorm(pointer(native, inplace, "float *"), pointer(native, w, "float *"), n, 1e-6,
                  pointer(native, inplace, "float *"))
    assert_sentinels(inplace, n)
    assert same_bits(inplace[:n], separate[:n])


# --- rmsnorm_q8 ----------------------------------------------------------------------

def run_rmsnorm_q8(native, table, x, w, eps) -> np.ndarray:
    n = x.size
    xg, wg = guarded(x), guarded(w)
    out = padded(n // 32, Q8)
    table.rmsnorm_q8(pointer(native, xg, "float *"), pointer(native, wg, "float *"), n, eps,
                     pointer(native, out, "lila_q8 *"))
    assert_sentinels(out, n // 32)
    return out[:n // 32]


@pytest.mark.parametrize("n", Q8_SIZES)
@pytest.mark.parametrize("kind", ROW_KINDS)
def test_rmsnorm_q8_against_numpy(kernels, n, kind):
    native, table = kernels
    x = rows(n, 4)[kind]
    w = norm_weight(n)
    got = run_rmsnorm_q8(native, table, x, w, EPS)
    want = quantize_q8(rmsnorm32(x, w, EPS))
    np.testing.assert_allclose(got["d"], want["d"], rtol=1e-6, atol=0)
    diff = np.abs(got["qs"].astype(np.int32) - want["qs"].astype(np.int32))
    assert diff.max() <= 1
    assert (diff != 0).sum() <= max(1, n // 100)
    sums = got["qs"].astype(np.int32).sum(axis=-1).astype(np.float32)
    assert same_bits(got["s"], got["d"] * sums)


@pytest.mark.parametrize("n", Q8_SIZES)
@pytest.mark.parametrize("kind", ROW_KINDS)
def test_rmsnorm_q8_is_rmsnorm_then_quantize(kernels, n, kind):
    """The fused kernel gives the bits of the family's own rmsnorm, then quantize_q8."""
    native, table = kernels
    x = rows(n, 5)[kind]
    w = norm_weight(n)
    normed = np.empty(n, np.float32)
    table.rmsnorm(pointer(native, x, "float *"), pointer(native, w, "float *"), n, EPS,
                  pointer(native, normed, "float *"))
    assert_q8_equal(run_rmsnorm_q8(native, table, x, w, EPS), run_quantize(native, table, normed))


# --- add -----------------------------------------------------------------------------

@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("kind", ROW_KINDS)
def test_add_bit_exact(kernels, n, kind):
    native, table = kernels
    a = rows(n, 6)[kind]
    b = rows(n, 7)["negzero" if kind == "negzero" else "normal"]
    ag, bg = guarded(a), guarded(b)
    out = padded(n, np.float32)
    table.add(pointer(native, ag, "float *"), pointer(native, bg, "float *"), n,
              pointer(native, out, "float *"))
    assert_sentinels(out, n)
    assert same_bits(out[:n], a + b)


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("alias", ["a", "b"])
def test_add_in_place(kernels, n, alias):
    native, table = kernels
    a, b = rows(n, 8)["normal"], rows(n, 9)["spread"]
    want = a + b
    buf = padded(n, np.float32)
    buf[:n] = a if alias == "a" else b
    other = b if alias == "a" else a
    p, q = pointer(native, buf, "float *"), pointer(native, other, "float *")
    if alias == "a":
        table.add(p, q, n, p)
    else:
        table.add(q, p, n, p)
    assert_sentinels(buf, n)
    assert same_bits(buf[:n], want)


# --- to_f16 --------------------------------------------------------------------------

def f16_edges() -> np.ndarray:
    """Ties at several magnitudes, overflow, subnormals, signed zeros, infinities."""
    one_ulp = np.float32(2.0 ** -10)
    ties = [1 + one_ulp / 2, 1 + 3 * one_ulp / 2, -(1 + one_ulp / 2), 2048 + 1, 2048 + 3,
            65504 + 16, 65520, 65519.99, 2.0 ** -25, 3 * 2.0 ** -25, 2.0 ** -26]
    other = [0.0, -0.0, 1e-8, -1e-8, 6.1e-5, 7e4, -7e4, 1e30, np.inf, -np.inf, 3.14159, -2.71828]
    return np.array(ties + other, np.float32)


@pytest.mark.parametrize("n", SIZES + [23, 64, 65])
def test_to_f16_bit_exact(kernels, n):
    native, table = kernels
    x = rows(n, 10)["spread"].copy()
    edges = f16_edges()
    x[:min(n, edges.size)] = edges[:n]
    xg = guarded(x)
    out = padded(n, np.uint16)
    with np.errstate(over="ignore"):
        want = x.astype(np.float16).view(np.uint16)
    table.to_f16(pointer(native, xg, "float *"), n, pointer(native, out, "uint16_t *"))
    assert_sentinels(out, n)
    assert np.array_equal(out[:n], want)


# --- embed ---------------------------------------------------------------------------

EMBED_TYPES = sorted(WEIGHT_TYPES)   # every type of the kernel ABI has an embedding lookup


def embed_sizes(t: GGMLType) -> list[int]:
    block = BLOCK_SIZE[t]
    if block == 1:
        return SIZES
    return [block * k for k in (1, 2, 3, 7, 16)]


def embed_row(t: GGMLType, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if t == GGMLType.F32:
        return rows(n, seed)["spread"].view(np.uint8)
    if t == GGMLType.F16:
        values = rng.standard_normal(n).astype(np.float16)
        values[::5] = np.float16(-0.0)
        values[1::7] = np.float16(6e-8)      # subnormal halves
        return values.view(np.uint8)
    return random_blocks(t, n // BLOCK_SIZE[t], rng).reshape(-1)


@pytest.mark.parametrize("t", EMBED_TYPES, ids=lambda t: t.name)
@pytest.mark.parametrize("scale", [1.0, 0.3725, 64.0])
def test_embed_bit_exact(kernels, t, scale):
    native, table = kernels
    fn = table.embed[int(t)]
    assert fn != native.ffi.NULL
    for i, n in enumerate(embed_sizes(t)):
        raw = embed_row(t, n, seed=100 * int(t) + i)
        assert raw.size == n // BLOCK_SIZE[t] * TYPE_SIZE[t]
        rawg = guarded(raw)
        out = padded(n, np.float32)
        fn(pointer(native, rawg), n, scale, pointer(native, out, "float *"))
        assert_sentinels(out, n)
        want = dequantize(raw, t, (n,)) * np.float32(scale)
        assert same_bits(out[:n], want), f"n={n}: {int((out[:n] != want).sum())} values differ"


@pytest.mark.parametrize("t", EMBED_TYPES, ids=lambda t: t.name)
def test_embed_zero_scale_blocks(kernels, t):
    """All-zero blocks (zero scales, zero codes) give zeros of the reference's sign."""
    native, table = kernels
    n = max(BLOCK_SIZE[t], 32)
    raw = np.zeros(n // BLOCK_SIZE[t] * TYPE_SIZE[t], np.uint8)
    rawg = guarded(raw)
    out = padded(n, np.float32)
    table.embed[int(t)](pointer(native, rawg), n, 1.0, pointer(native, out, "float *"))
    assert_sentinels(out, n)
    assert same_bits(out[:n], dequantize(raw, t, (n,)) * np.float32(1.0))
