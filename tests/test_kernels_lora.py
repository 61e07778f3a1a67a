"""lila_lora_up, the memory fabric's B product, of every runnable native family against
numpy:

    out[c * out_stride + r] = sum_{j < rank} coef[c * coef_stride + j] * Bt[j][r]

for r < nb * 32, c < cols, row j of Bt being nb Q8_0 blocks at bt + j * row_bytes.

Bounds, against kernel_reference.lora_up (float64 over the exact fp32 values of Bt, d * q
being exact in fp32):
- every output within (rank + 2) 2^-24 (|coef| @ |Bt|) of it: the worst case of any fp32
  summation order over rank products, each rounded once more for coef * d (the kernels
  sum (coef * d) * q over j with FMAs); and NMSE < 1e-10 over a test's outputs, as
  test_kernels_matmul's exact bound;
- rank 0: exact zeros;
- every family gives the same bits: each output is the same fp32 chain over j in all of
  them.

Each shape runs three times: tight strides with every input against an inaccessible page
after its end, the same before its start, and strides larger than the minimum (row_bytes
> nb * 34, coef_stride > rank, out_stride > nb * 32) whose padding holds NaN (coef) and
0xFF bytes (Bt, an f16 NaN as a d), so a read past a row shows in the outputs. Outputs
are surrounded by sentinels, also in the gaps a larger out_stride leaves.
"""
from __future__ import annotations

import numpy as np
import pytest

from kernel_reference import family_params, guarded, lora_up, nmse, pointer
from lila.formats.quants import TYPE_SIZE, GGMLType
from lila.native import library

BLOCK_BYTES = TYPE_SIZE[GGMLType.Q8_0]
EXACT_NMSE = 1e-10
RANKS = (0, 1, 3, 4, 16, 17, 80, 160)
NBS = (1, 2, 3, 5)
COLS = (1, 2, 7, 33)
SENTINEL = np.float32(-7.25e30)
LEAD = TAIL = 16
LAYOUTS = ("tight-end", "tight-start", "padded")


@pytest.fixture(params=family_params())
def family(request):
    return request.param


def random_bt(rng: np.random.Generator, rank: int, nb: int, row_bytes: int) -> np.ndarray:
    """rank rows of nb random Q8_0 blocks (d of either sign, 2e-4..5e-3; every code,
    -128 included), then row_bytes - nb * 34 bytes of 0xFF."""
    rows = np.full((rank, row_bytes), 0xFF, np.uint8)
    blocks = rng.integers(0, 256, (rank, nb, BLOCK_BYTES), dtype=np.uint8)
    d = rng.uniform(2e-4, 5e-3, (rank, nb)) * rng.choice([-1.0, 1.0], (rank, nb))
    blocks[:, :, 0:2] = d.astype("<f2")[..., None].view(np.uint8)
    rows[:, :nb * BLOCK_BYTES] = blocks.reshape(rank, nb * BLOCK_BYTES)
    return rows


def call(family: str, bt: np.ndarray, row_bytes: int, rank: int, nb: int, coef: np.ndarray,
         coef_stride: int, cols: int, out: np.ndarray, out_stride: int) -> None:
    native = library()
    fn = native.kernels(family).lora_up
    assert fn != native.ffi.NULL, f"{family} has no lora_up"
    fn(pointer(native, bt), row_bytes, rank, nb, pointer(native, coef, "float *"), coef_stride,
       cols, pointer(native, out, "float *"), out_stride)


def run(family: str, rank: int, nb: int, cols: int, layout: str, seed: int):
    """One call; asserts nothing outside out's cells was written, returns (outputs, exact
    reference, |coef| @ |Bt|), each [cols, nb * 32]."""
    rng = np.random.default_rng(seed)
    padded = layout == "padded"
    row_bytes = nb * BLOCK_BYTES + (7 if padded else 0)
    coef_stride = rank + (3 if padded else 0)
    out_stride = nb * 32 + (5 if padded else 0)
    rows = random_bt(rng, rank, nb, row_bytes)
    coef = np.full((cols, coef_stride), np.nan, np.float32)
    coef[:, :rank] = rng.standard_normal((cols, rank))

    at_end = layout != "tight-start"
    bt_g, coef_g = guarded(rows, at_end), guarded(coef, at_end)
    buf = np.full(LEAD + cols * out_stride + TAIL, SENTINEL, np.float32)
    view = buf[LEAD:LEAD + cols * out_stride]
    call(family, bt_g, row_bytes, rank, nb, coef_g, coef_stride, cols, view, out_stride)

    written = np.zeros(buf.shape, bool)
    cells = LEAD + np.arange(cols)[:, None] * out_stride + np.arange(nb * 32)[None, :]
    written[cells.ravel()] = True
    where = f"rank={rank} nb={nb} cols={cols} {layout}"
    assert np.all(buf[~written] == SENTINEL), f"{where}: wrote outside out's cells"
    got = buf[cells].astype(np.float64)
    exact = lora_up(rows, rank, nb, coef, cols)
    bt = lora_up(rows, rank, nb, np.eye(rank), rank)         # Bt itself, [rank, nb * 32]
    magnitude = np.abs(coef[:, :rank]).astype(np.float64) @ np.abs(bt)
    return got, exact, magnitude


def check(got, exact, magnitude, rank, where):
    assert np.isfinite(got).all(), f"{where}: non-finite outputs (read past a row?)"
    if rank == 0:
        assert not got.any(), f"{where}: rank 0 must give zeros"
        return
    bound = (rank + 2) * 2.0 ** -24 * magnitude
    worst = np.abs(got - exact) - bound
    assert (worst <= 0).all(), f"{where}: {int((worst > 0).sum())} outputs off the fp32 bound"


@pytest.mark.parametrize("rank", RANKS)
@pytest.mark.parametrize("nb", NBS)
@pytest.mark.parametrize("cols", COLS)
def test_lora_up(family, rank, nb, cols):
    results = []
    for i, layout in enumerate(LAYOUTS):
        got, exact, magnitude = run(family, rank, nb, cols, layout,
                                    seed=rank * 10000 + nb * 100 + cols * 3 + i)
        check(got, exact, magnitude, rank, f"rank={rank} nb={nb} cols={cols} {layout}")
        results.append((got.ravel(), exact.ravel()))
    if rank:
        got, exact = (np.concatenate(parts) for parts in zip(*results))
        assert nmse(got, exact) < EXACT_NMSE, f"nmse {nmse(got, exact):.3g}"


@pytest.mark.parametrize("rank,nb,cols", [(17, 3, 7), (160, 5, 2), (1, 1, 1)])
def test_families_agree_bit_for_bit(rank, nb, cols):
    families = [f for f in family_params() if isinstance(f, str)]
    outs = [run(f, rank, nb, cols, "padded", seed=5)[0] for f in families]
    for f, o in zip(families[1:], outs[1:]):
        assert np.array_equal(o.astype(np.float32).view(np.uint32),
                              outs[0].astype(np.float32).view(np.uint32)), \
            f"{f} differs from {families[0]}"


def test_nothing_to_do(family):
    """nb = 0 or cols = 0: nothing read, nothing written."""
    native = library()
    out = np.full(64, SENTINEL, np.float32)
    coef = guarded(np.ones((2, 4), np.float32))
    rows = guarded(random_bt(np.random.default_rng(1), 4, 1, BLOCK_BYTES))
    call(family, rows, BLOCK_BYTES, 4, 0, coef, 4, 2, out, 32)
    assert np.all(out == SENTINEL)
    fn = native.kernels(family).lora_up
    fn(native.ffi.NULL, BLOCK_BYTES, 4, 2, native.ffi.NULL, 4, 0, native.ffi.NULL, 64)
