"""What kernel tests share: the native kernel families this machine can run, the numpy
references of activation quantization and of the fabric's transposed B product
(lora_up), the error measure, and arrays placed against inaccessible pages.

Error bounds are normalised mean squared errors, as llama.cpp's test-backend-ops states
them: sum((a - b)^2) / sum(b^2) against the numpy reference.
"""
from __future__ import annotations

import ctypes
import mmap

import numpy as np
import pytest

from lila.formats.quants import TYPE_SIZE, GGMLType, dequantize
from lila.hardware import detect
from lila.hardware.backends import supported_families
from lila.native import library
from lila.native.abi import Q8_DTYPE as Q8   # lila_q8, as native/include/lila_kernels.h lays it out
NATIVE_FAMILIES = ("avx2", "avx512", "avx512-vnni", "neon", "neon-dotprod")


def runnable_families() -> list[str]:
    """Kernel families built into the library that this CPU can run."""
    native = library()
    if native is None:
        return []
    cpu = {f.name for f in supported_families(detect())}
    return [f for f in NATIVE_FAMILIES if f in cpu and native.kernels(f) is not None]


def family_params():
    """pytest parameters: one per runnable family; a test with none fails (the build is
    part of `make setup`), it is not skipped."""
    families = runnable_families()
    if not families:
        return [pytest.param(None, marks=pytest.mark.xfail(strict=True,
                                                          reason="no native kernels built"))]
    return families


def quantize_q8(x: np.ndarray) -> np.ndarray:
    """Rows of x (length a multiple of 32) -> lila_q8 blocks, shape (rows, n // 32),
    exactly as the kernels do it: d = max|x| / 127, q = round_half_even(x * (1 / d))."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    blocks = x.reshape(*x.shape[:-1], -1, 32)
    amax = np.abs(blocks).max(axis=-1)
    d = (amax / np.float32(127)).astype(np.float32)
    with np.errstate(divide="ignore"):
        inv = np.where(d > 0, np.float32(1) / d, np.float32(0)).astype(np.float32)
    q = np.rint(blocks * inv[..., None]).astype(np.int8)
    out = np.zeros(blocks.shape[:-1], Q8)
    out["d"] = d
    out["qs"] = q
    out["s"] = d * q.astype(np.int32).sum(axis=-1).astype(np.float32)
    return out


def dequantize_q8(blocks: np.ndarray) -> np.ndarray:
    """lila_q8 blocks -> float32 rows."""
    values = blocks["qs"].astype(np.float32) * blocks["d"][..., None]
    return values.reshape(*blocks.shape[:-1], -1)


def lora_up(bt_rows: np.ndarray, rank: int, nb: int, coef: np.ndarray,
            cols: int) -> np.ndarray:
    """The fabric's B product, as lila_lora_up computes it: bt_rows is uint8
    [>= rank, row_bytes], row j's first nb Q8_0 blocks being row j of Bt (f16 d, 32 int8
    each); coef is float [>= cols, >= rank]. Returns coef @ Bt, [cols, nb * 32], in
    float64 over the exact fp32 values of Bt (d * q is exact in fp32)."""
    rows = np.ascontiguousarray(bt_rows[:rank, :nb * TYPE_SIZE[GGMLType.Q8_0]])
    bt = dequantize(rows, GGMLType.Q8_0, (rank, nb * 32)).astype(np.float64)
    return np.asarray(coef, np.float64)[:cols, :rank] @ bt


def nmse(actual: np.ndarray, expected: np.ndarray) -> float:
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    denom = float(np.sum(expected ** 2))
    err = float(np.sum((actual - expected) ** 2))
    return err / denom if denom > 0 else err


def pointer(native, array: np.ndarray, ctype: str = "void *"):
    """A cffi pointer to a contiguous numpy array (kept alive by the caller)."""
    assert array.flags.c_contiguous
    return native.ffi.cast(ctype, native.ffi.from_buffer(array))


_libc = ctypes.CDLL(None, use_errno=True)
_libc.mprotect.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
_libc.mprotect.restype = ctypes.c_int


def guarded(values: np.ndarray, at_end: bool = True) -> np.ndarray:
    """A copy of values between two PROT_NONE pages, its last byte (at_end) or its first
    against one: a kernel reading or writing past that end faults, as it would at the end
    of a mapped model file. The mapping lives as long as the returned array, so hold on to
    the array (not only a pointer() to it) until the kernel has run."""
    values = np.ascontiguousarray(values)
    page = mmap.PAGESIZE
    pages = max(1, -(-values.nbytes // page))
    mm = mmap.mmap(-1, (pages + 2) * page)
    base = ctypes.addressof(ctypes.c_char.from_buffer(mm))
    for offset in (0, (pages + 1) * page):
        if _libc.mprotect(base + offset, page, 0) != 0:
            raise OSError(ctypes.get_errno(), "mprotect failed")
    start = page + (pages * page - values.nbytes if at_end else 0)
    out = np.frombuffer(mm, np.uint8, values.nbytes, start).view(values.dtype)
    out = out.reshape(values.shape)
    out[...] = values
    return out
