"""The native weight x activation products (lila_gemv_* and lila_gemm_*) against numpy.

    out[c * out_stride + r] = sum_k W[r, k] * X[c, k]     r < rows, c < cols

W is random GGML weight blocks (32 weights for Q4_0, Q4_1, Q5_0, Q8_0; 256-weight
superblocks for Q4_K, Q6_K), X is random floats quantized to lila_q8 blocks. Two
references, as NMSE bounds (kernel_reference.nmse):

  exact   dequantized weights (float64) @ the dequantized q8 activations (float64): the
          kernel sees exactly these numbers, so only its fp32 rounding and summation
          order differ.                                         NMSE < EXACT_NMSE,
          over all the outputs of a test together (a lone dot product that cancels to
          near zero would turn fp32 rounding into a large relative error; a wrong
          output still dominates the sum); for the strict types (the K-quants) also on
          every call's outputs alone
  fp32    dequantized weights @ the unquantized activations: adds the error of
          quantizing the activations to 8 bits, what a model sees.  NMSE < FP32_NMSE,
          over all the outputs of a test together, and only where they are at least
          FP32_MIN_OUTPUTS (a few dot products can all happen to be near zero, making
          their relative error meaningless); test_fp32_reference always has enough.
          The strict types are held to it however few the outputs.

Besides values, the tests check that nothing outside out's cells is written (sentinels
around and between them), that nothing outside the weight rows or the activation blocks is
read (each lies against a page that faults when touched), and long rows: for the block
types LONG_NB blocks, enough for kernels that work in chunks of blocks, on 1 and 13
columns (8 + 4 + 1); for the K-quants rows longer than the kernels' activation scratch
(128 superblocks for one column, 128 / n for n), which they do in chunks.

Adding a weight type: write its random-block generator and add a WeightType entry to
WEIGHT_TYPES; every test here then covers it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pytest

from kernel_reference import (dequantize_q8, family_params, guarded, nmse, pointer,
                              quantize_q8)
from lila.formats.quants import BLOCK_SIZE, TYPE_SIZE, GGMLType, dequantize
from lila.native import abi, library

EXACT_NMSE = 1e-10
FP32_NMSE = 1e-3
FP32_MIN_OUTPUTS = 32

ROWS = (1, 3, 7, 33, 65)
COLS = (1, 2, 3, 5, 9)


# --- random weight blocks, one generator per type ------------------------------------------
# gen(rng, n) -> uint8 [n, TYPE_SIZE]: random bytes whose f16 scale fields hold sane values,
# so every quant (and K-quant sub-block scale) bit pattern appears but no scale is NaN, inf
# or huge.

def _f16_bytes(values: np.ndarray) -> np.ndarray:
    """float values -> their little-endian f16 bytes, [n, 2]."""
    return np.ascontiguousarray(values.astype("<f2")).view(np.uint8).reshape(-1, 2)


def _scales(rng: np.random.Generator, n: int, lo: float = 0.002, hi: float = 0.05,
            signed: bool = True) -> np.ndarray:
    d = rng.uniform(lo, hi, n)
    return d * rng.choice([-1.0, 1.0], n) if signed else d


def _random_blocks(rng: np.random.Generator, ggml_type: GGMLType, n: int) -> np.ndarray:
    return rng.integers(0, 256, (n, TYPE_SIZE[ggml_type]), dtype=np.uint8)


def random_q4_0(rng, n):
    b = _random_blocks(rng, GGMLType.Q4_0, n)
    b[:, 0:2] = _f16_bytes(_scales(rng, n))
    return b


def random_q4_1(rng, n):
    b = _random_blocks(rng, GGMLType.Q4_1, n)
    d = _scales(rng, n, signed=False)
    b[:, 0:2] = _f16_bytes(d)
    b[:, 2:4] = _f16_bytes(-8 * d * rng.uniform(0.5, 1.5, n))   # min, as ggml makes it
    return b


def random_q5_0(rng, n):
    b = _random_blocks(rng, GGMLType.Q5_0, n)   # qh: 4 random bytes of fifth bits
    b[:, 0:2] = _f16_bytes(_scales(rng, n))
    return b


def random_q8_0(rng, n):
    b = _random_blocks(rng, GGMLType.Q8_0, n)   # -128 included, though ggml never writes it
    b[:, 0:2] = _f16_bytes(_scales(rng, n, 0.0002, 0.005))
    return b


def random_q4_k(rng, n):
    # d, dmin, then 12 bytes of 6-bit sub-block scales and mins, then the nibbles: all the
    # packed scale bits random. d * 63 * 15 and dmin * 63 stay within a few units.
    b = _random_blocks(rng, GGMLType.Q4_K, n)
    b[:, 0:2] = _f16_bytes(_scales(rng, n, 0.0005, 0.004))
    b[:, 2:4] = _f16_bytes(_scales(rng, n, 0.001, 0.03))
    return b


def random_q6_k(rng, n):
    # ql, qh, 16 int8 scales (-128..127), then d.
    b = _random_blocks(rng, GGMLType.Q6_K, n)
    b[:, 208:210] = _f16_bytes(_scales(rng, n, 0.00005, 0.0005))
    return b


# --- the weight types and their shapes --------------------------------------------------------
# test_long_rows: each entry of long_rows is one test, its calls (op, rows, cols) on rows of
# long_nb blocks checked together.

LONG_NB = 72        # blocks enough for kernels that work in chunks of blocks (a multiple of 8)
BLOCK_LONG_ROWS = {f"rows{rows}": (("gemv", rows, 1), ("gemm", rows, 1), ("gemm", rows, 13))
                   for rows in (5, 6)}                 # 1 and 13 columns (8 + 4 + 1)

# Longer than the K-quant kernels' scratch for every column count: 131 superblocks is two
# chunks for one column (128), and 3, 4 and 5 chunks for 2, 3 and 4 columns (64, 42, 32);
# every chunk after the first adds to out.
K_LONG_NB = 8 * 131
K_LONG_ROWS = {"gemv": (("gemv", 3, 1),),
               "gemm": tuple(("gemm", 3, cols) for cols in (1, 2, 3, 4, 5))}


@dataclass(frozen=True)
class WeightType:
    generate: Callable[[np.random.Generator, int], np.ndarray]
    nbs: tuple[int, ...]          # row lengths to test, in 32-element q8 blocks
    long_nb: int                  # test_long_rows' row length, in blocks
    long_rows: dict[str, tuple[tuple[str, int, int], ...]]    # test id -> (op, rows, cols)
    strict: bool = False          # exact bound on every call alone, fp32 on any count


WEIGHT_TYPES: dict[GGMLType, WeightType] = {
    GGMLType.Q4_0: WeightType(random_q4_0, (1, 3, 9, 18), LONG_NB, BLOCK_LONG_ROWS),
    GGMLType.Q4_1: WeightType(random_q4_1, (1, 3, 9, 18), LONG_NB, BLOCK_LONG_ROWS),
    GGMLType.Q5_0: WeightType(random_q5_0, (1, 3, 9, 18), LONG_NB, BLOCK_LONG_ROWS),
    GGMLType.Q8_0: WeightType(random_q8_0, (1, 3, 9, 18), LONG_NB, BLOCK_LONG_ROWS),
    # superblocks of 256 weights: nb a multiple of 8
    GGMLType.Q4_K: WeightType(random_q4_k, (8, 16, 24), K_LONG_NB, K_LONG_ROWS, strict=True),
    GGMLType.Q6_K: WeightType(random_q6_k, (8, 16, 24), K_LONG_NB, K_LONG_ROWS, strict=True),
}


def test_every_matmul_type_of_the_abi_has_its_cases():
    assert set(WEIGHT_TYPES) == abi.MATMUL_TYPES


# --- calling a kernel ------------------------------------------------------------------------

def random_weights(rng, ggml_type: GGMLType, rows: int, nb: int) -> np.ndarray:
    """rows x (nb * 32) weights as packed blocks, uint8 [rows, row_bytes]."""
    per_row = nb * 32 // BLOCK_SIZE[ggml_type]
    blocks = WEIGHT_TYPES[ggml_type].generate(rng, rows * per_row)
    return blocks.reshape(rows, per_row * TYPE_SIZE[ggml_type])


def dequantized(weights: np.ndarray, ggml_type: GGMLType) -> np.ndarray:
    rows, row_bytes = weights.shape
    n = row_bytes // TYPE_SIZE[ggml_type] * BLOCK_SIZE[ggml_type]
    return dequantize(np.ascontiguousarray(weights), ggml_type, (rows, n))


def kernel(family: str, op: str, ggml_type: GGMLType):
    native = library()
    fn = getattr(native.kernels(family), op)[int(ggml_type)]
    assert fn != native.ffi.NULL, f"{family} has no {op} for {ggml_type.name}"
    return native, fn


def run(family, op, ggml_type, w: np.ndarray, row_bytes: int, rows: int, xq: np.ndarray,
        nb: int, cols: int, out: np.ndarray, out_stride: int) -> None:
    """Call the kernel on w (rows of row_bytes) and xq (cols x nb lila_q8 blocks)."""
    native, fn = kernel(family, op, ggml_type)
    fn(pointer(native, w), row_bytes, rows, pointer(native, xq, "lila_q8 *"), nb, cols,
       pointer(native, out, "float *"), out_stride)


def check(family, op, ggml_type, rows, nb, cols, seed, row_pad=0):
    """One call; asserts no write outside out's cells (and, for a strict type, the exact
    bound) and returns (outputs, exact reference, fp32 reference), flattened, for
    check_values."""
    rng = np.random.default_rng(seed)
    weights = random_weights(rng, ggml_type, rows, nb)
    row_bytes = weights.shape[1] + row_pad
    w = np.zeros((rows, row_bytes), np.uint8)
    w[:, :weights.shape[1]] = weights
    x = rng.standard_normal((cols, nb * 32)).astype(np.float32)
    xq = quantize_q8(x)

    out_stride = rows + 5                     # a gap after each column's rows
    lead, tail = 16, 16
    buf = np.full(lead + cols * out_stride + tail, np.float32(-7.25e30), np.float32)
    view = buf[lead:lead + cols * out_stride]
    run(family, op, ggml_type, w, row_bytes, rows, xq, nb, cols, view, out_stride)

    got = view.reshape(cols, out_stride)[:, :rows].astype(np.float64)
    wf = dequantized(weights, ggml_type).astype(np.float64)
    exact = dequantize_q8(xq).astype(np.float64) @ wf.T
    fp32 = x.astype(np.float64) @ wf.T
    where = f"{ggml_type.name} {op} rows={rows} nb={nb} cols={cols}"
    if WEIGHT_TYPES[ggml_type].strict:
        assert nmse(got, exact) < EXACT_NMSE, f"{where}: exact nmse {nmse(got, exact):.3g}"

    written = np.zeros(buf.shape, bool)
    cells = lead + np.arange(cols)[:, None] * out_stride + np.arange(rows)[None, :]
    written[cells.ravel()] = True
    untouched = buf[~written]
    assert np.all(untouched == np.float32(-7.25e30)), f"{where}: wrote outside out's cells"
    return got.ravel(), exact.ravel(), fp32.ravel()


def check_values(results, ggml_type, where):
    got, exact, fp32 = (np.concatenate(parts) for parts in zip(*results))
    assert nmse(got, exact) < EXACT_NMSE, f"{where}: exact nmse {nmse(got, exact):.3g}"
    if WEIGHT_TYPES[ggml_type].strict or got.size >= FP32_MIN_OUTPUTS:
        assert nmse(got, fp32) < FP32_NMSE, f"{where}: fp32 nmse {nmse(got, fp32):.3g}"


# --- values, on odd shapes -------------------------------------------------------------------

@pytest.mark.parametrize("family", family_params())
@pytest.mark.parametrize("ggml_type", list(WEIGHT_TYPES), ids=lambda t: t.name)
@pytest.mark.parametrize("rows", ROWS)
def test_gemv(family, ggml_type, rows):
    results = [check(family, "gemv", ggml_type, rows, nb, 1, seed=rows * 1000 + nb)
               for nb in WEIGHT_TYPES[ggml_type].nbs]
    check_values(results, ggml_type, f"{ggml_type.name} gemv rows={rows}")


@pytest.mark.parametrize("family", family_params())
@pytest.mark.parametrize("ggml_type", list(WEIGHT_TYPES), ids=lambda t: t.name)
@pytest.mark.parametrize("rows", ROWS)
def test_gemm(family, ggml_type, rows):
    results = [check(family, "gemm", ggml_type, rows, nb, cols, seed=rows * 1000 + nb * 10 + cols)
               for nb in WEIGHT_TYPES[ggml_type].nbs for cols in COLS]
    check_values(results, ggml_type, f"{ggml_type.name} gemm rows={rows}")


@pytest.mark.parametrize("family", family_params())
@pytest.mark.parametrize("ggml_type,calls", [
    pytest.param(t, calls, id=f"{t.name}-{name}")
    for t, wt in WEIGHT_TYPES.items() for name, calls in wt.long_rows.items()])
def test_long_rows(family, ggml_type, calls):
    """Rows of the type's long_nb blocks (LONG_NB, K_LONG_NB), the calls of one long_rows
    entry checked together."""
    nb = WEIGHT_TYPES[ggml_type].long_nb
    results = [check(family, op, ggml_type, rows, nb, cols, seed=rows * 10 + cols)
               for op, rows, cols in calls]
    check_values(results, ggml_type, f"{ggml_type.name} long rows nb={nb} {calls}")


@pytest.mark.parametrize("family", family_params())
@pytest.mark.parametrize("ggml_type", list(WEIGHT_TYPES), ids=lambda t: t.name)
@pytest.mark.parametrize("op", ["gemv", "gemm"])
def test_fp32_reference(family, ggml_type, op):
    """Enough outputs for the fp32 bound to mean something: 65 rows (x 9 columns)."""
    nb = WEIGHT_TYPES[ggml_type].nbs[-1]
    cols = 1 if op == "gemv" else 9
    result = check(family, op, ggml_type, 65, nb, cols, seed=5)
    assert result[0].size >= FP32_MIN_OUTPUTS
    check_values([result], ggml_type, f"{ggml_type.name} {op} 65 rows")


@pytest.mark.parametrize("family", family_params())
@pytest.mark.parametrize("ggml_type", list(WEIGHT_TYPES), ids=lambda t: t.name)
@pytest.mark.parametrize("op", ["gemv", "gemm"])
def test_row_stride(family, ggml_type, op):
    """Rows further apart than their blocks: the kernel steps by row_bytes."""
    nb = WEIGHT_TYPES[ggml_type].nbs[-1]
    result = check(family, op, ggml_type, 13, nb, 1 if op == "gemv" else 6, seed=7, row_pad=40)
    check_values([result], ggml_type, f"{ggml_type.name} {op} padded rows")


# --- no read outside the weights or the activations --------------------------------------------

@pytest.mark.parametrize("family", family_params())
@pytest.mark.parametrize("ggml_type", list(WEIGHT_TYPES), ids=lambda t: t.name)
@pytest.mark.parametrize("op", ["gemv", "gemm"])
def test_reads_stay_inside(family, ggml_type, op):
    """Weights and activations against a page that faults, after their end and before
    their start; the outputs as with ordinary arrays."""
    wt = WEIGHT_TYPES[ggml_type]
    rng = np.random.default_rng(11)
    for rows, nb, cols in ((1, wt.nbs[0], 1), (9, wt.nbs[0], 5), (33, wt.nbs[-1], 7),
                           (5, wt.long_nb, 13)):
        cols = 1 if op == "gemv" else cols
        weights = random_weights(rng, ggml_type, rows, nb)
        xq = quantize_q8(rng.standard_normal((cols, nb * 32)).astype(np.float32))
        expected = np.zeros((cols, rows), np.float32)
        run(family, op, ggml_type, weights, weights.shape[1], rows, xq, nb, cols, expected,
            rows)
        for at_end in (True, False):
            w, x = guarded(weights, at_end), guarded(xq, at_end)
            out = np.zeros((cols, rows), np.float32)
            run(family, op, ggml_type, w, weights.shape[1], rows, x, nb, cols, out, rows)
            np.testing.assert_array_equal(out, expected)
