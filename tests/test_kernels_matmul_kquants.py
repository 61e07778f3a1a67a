"""The native K-quant products (lila_gemv_q4_k_*, lila_gemm_q4_k_*, and the same for Q6_K)
against numpy.

    out[c * out_stride + r] = sum_k W[r, k] * X[c, k]     r < rows, c < cols

W is random GGML superblocks (256 weights), X is random floats quantized to lila_q8 blocks.
Two references, as NMSE bounds (kernel_reference.nmse):

  exact   dequantized weights (float64) @ the dequantized q8 activations (float64): the
          kernel sees exactly these numbers, so only its fp32 rounding and summation
          order differ.                                         NMSE < EXACT_NMSE
  fp32    dequantized weights @ the unquantized activations: adds the error of
          quantizing the activations to 8 bits, what a model sees.  NMSE < FP32_NMSE,
          over all the outputs of a test together

Besides values, the tests check that nothing outside out's cells is written (sentinels
around and between them), that nothing outside the weight rows or the activation blocks is
read (each lies against a page that faults when touched), and rows longer than the kernels'
activation scratch (128 superblocks for one column, 128 / n for n), which they do in chunks.

Same structure as test_kernels_matmul.py, to be merged into it: WEIGHT_TYPES here holds
the K-quant types.
"""
from __future__ import annotations

import ctypes
import mmap
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pytest

from kernel_reference import dequantize_q8, family_params, nmse, pointer, quantize_q8
from lila.formats.quants import BLOCK_SIZE, TYPE_SIZE, GGMLType, dequantize
from lila.native import library

EXACT_NMSE = 1e-10
FP32_NMSE = 1e-3

ROWS = (1, 3, 7, 33)
COLS = (1, 2, 3, 5, 9)


# --- random weight superblocks, one generator per type -------------------------------------
# gen(rng, n) -> uint8 [n, TYPE_SIZE]: random bytes whose f16 scale fields hold sane values,
# so every quant and sub-block scale bit pattern appears but no scale is NaN, inf or huge.

def _f16_bytes(values: np.ndarray) -> np.ndarray:
    """float values -> their little-endian f16 bytes, [n, 2]."""
    return np.ascontiguousarray(values.astype("<f2")).view(np.uint8).reshape(-1, 2)


def _scales(rng: np.random.Generator, n: int, lo: float, hi: float) -> np.ndarray:
    return rng.uniform(lo, hi, n) * rng.choice([-1.0, 1.0], n)


def _random_blocks(rng: np.random.Generator, ggml_type: GGMLType, n: int) -> np.ndarray:
    return rng.integers(0, 256, (n, TYPE_SIZE[ggml_type]), dtype=np.uint8)


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


@dataclass(frozen=True)
class WeightType:
    generate: Callable[[np.random.Generator, int], np.ndarray]
    nbs: tuple[int, ...]          # row lengths to test, in 32-element q8 blocks


WEIGHT_TYPES: dict[GGMLType, WeightType] = {
    GGMLType.Q4_K: WeightType(random_q4_k, (8, 16, 24)),
    GGMLType.Q6_K: WeightType(random_q6_k, (8, 16, 24)),
}

# Longer than the kernels' scratch for every column count: 131 superblocks is two chunks for
# one column (128), and 3, 4 and 5 chunks for 2, 3 and 4 columns (64, 42, 32).
LONG_NB = 8 * 131


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
    """One call: values against the exact reference, no write outside out's cells.
    Returns (outputs, fp32 reference), flattened, for check_fp32."""
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
    assert nmse(got, exact) < EXACT_NMSE, f"{where}: exact nmse {nmse(got, exact):.3g}"

    written = np.zeros(buf.shape, bool)
    cells = lead + np.arange(cols)[:, None] * out_stride + np.arange(rows)[None, :]
    written[cells.ravel()] = True
    untouched = buf[~written]
    assert np.all(untouched == np.float32(-7.25e30)), f"{where}: wrote outside out's cells"
    return got.ravel(), fp32.ravel()


def check_fp32(results, where):
    got = np.concatenate([g for g, _ in results])
    ref = np.concatenate([r for _, r in results])
    assert nmse(got, ref) < FP32_NMSE, f"{where}: fp32 nmse {nmse(got, ref):.3g}"


# --- values, on odd shapes -------------------------------------------------------------------

@pytest.mark.parametrize("family", family_params())
@pytest.mark.parametrize("ggml_type", list(WEIGHT_TYPES), ids=lambda t: t.name)
@pytest.mark.parametrize("rows", ROWS)
def test_gemv(family, ggml_type, rows):
    results = [check(family, "gemv", ggml_type, rows, nb, 1, seed=rows * 1000 + nb)
               for nb in WEIGHT_TYPES[ggml_type].nbs]
    check_fp32(results, f"{ggml_type.name} gemv rows={rows}")


@pytest.mark.parametrize("family", family_params())
@pytest.mark.parametrize("ggml_type", list(WEIGHT_TYPES), ids=lambda t: t.name)
@pytest.mark.parametrize("rows", ROWS)
def test_gemm(family, ggml_type, rows):
    results = [check(family, "gemm", ggml_type, rows, nb, cols, seed=rows * 1000 + nb * 10 + cols)
               for nb in WEIGHT_TYPES[ggml_type].nbs for cols in COLS]
    check_fp32(results, f"{ggml_type.name} gemm rows={rows}")


@pytest.mark.parametrize("family", family_params())
@pytest.mark.parametrize("ggml_type", list(WEIGHT_TYPES), ids=lambda t: t.name)
@pytest.mark.parametrize("op", ["gemv", "gemm"])
def test_long_rows(family, ggml_type, op):
    """Rows longer than the activation scratch: done in chunks, every chunk after the
    first adding to out."""
    results = [check(family, op, ggml_type, 3, LONG_NB, cols, seed=cols)
               for cols in ((1,) if op == "gemv" else (1, 2, 3, 4, 5))]
    check_fp32(results, f"{ggml_type.name} {op} long rows")


@pytest.mark.parametrize("family", family_params())
@pytest.mark.parametrize("ggml_type", list(WEIGHT_TYPES), ids=lambda t: t.name)
@pytest.mark.parametrize("op", ["gemv", "gemm"])
def test_row_stride(family, ggml_type, op):
    """Rows further apart than their blocks: the kernel steps by row_bytes."""
    nb = WEIGHT_TYPES[ggml_type].nbs[-1]
    result = check(family, op, ggml_type, 13, nb, 1 if op == "gemv" else 6, seed=7, row_pad=40)
    check_fp32([result], f"{ggml_type.name} {op} padded rows")


# --- no read outside the weights or the activations --------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                       ctypes.c_int, ctypes.c_long]
_libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]


class Fenced:
    """A buffer with an inaccessible page on each side: reading past either end of the
    array returned by place() faults, as it would at the end of a mapped model file."""

    def __init__(self, nbytes: int):
        self.page = mmap.PAGESIZE
        self.inner = -(-nbytes // self.page) * self.page
        self.size = self.inner + 2 * self.page
        self.addr = _libc.mmap(None, self.size, mmap.PROT_READ | mmap.PROT_WRITE,
                               mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)
        assert self.addr not in (None, ctypes.c_void_p(-1).value), "mmap failed"
        for fence in (self.addr, self.addr + self.page + self.inner):
            assert _libc.mprotect(fence, self.page, 0) == 0   # PROT_NONE

    def place(self, data: np.ndarray, at_end: bool) -> np.ndarray:
        """A copy of data (contiguous bytes) against the start or the end fence."""
        raw = data.reshape(-1).view(np.uint8)
        start = self.page + (self.inner - raw.size if at_end else 0)
        buf = (ctypes.c_uint8 * raw.size).from_address(self.addr + start)
        arr = np.frombuffer(buf, np.uint8)
        arr[:] = raw
        return arr.view(data.dtype).reshape(data.shape)

    def close(self):
        _libc.munmap(self.addr, self.size)


@pytest.mark.parametrize("family", family_params())
@pytest.mark.parametrize("ggml_type", list(WEIGHT_TYPES), ids=lambda t: t.name)
@pytest.mark.parametrize("op", ["gemv", "gemm"])
def test_reads_stay_inside(family, ggml_type, op):
    rng = np.random.default_rng(11)
    for rows, nb, cols in ((1, 8, 1), (9, WEIGHT_TYPES[ggml_type].nbs[0], 5),
                           (33, WEIGHT_TYPES[ggml_type].nbs[-1], 7)):
        cols = 1 if op == "gemv" else cols
        weights = random_weights(rng, ggml_type, rows, nb)
        xq = quantize_q8(rng.standard_normal((cols, nb * 32)).astype(np.float32))
        expected = np.zeros((cols, rows), np.float32)
        run(family, op, ggml_type, weights, weights.shape[1], rows, xq, nb, cols, expected,
            rows)
        fw, fx = Fenced(weights.nbytes), Fenced(xq.nbytes)
        try:
            for at_end in (True, False):
                w, x = fw.place(weights, at_end), fx.place(xq, at_end)
                out = np.zeros((cols, rows), np.float32)
                run(family, op, ggml_type, w, weights.shape[1], rows, x, nb, cols, out, rows)
                np.testing.assert_array_equal(out, expected)
        finally:
            fw.close()
            fx.close()
