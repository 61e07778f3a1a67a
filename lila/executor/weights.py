"""Weights as the matmul kernels take them, shared by the native and numba backends.

Types with matmul kernels (lila.native.abi.MATMUL_TYPES, from the kernel ABI's header) are
multiplied straight from the file's map, as rows of GGML blocks.
Any other type is converted once, at load, to Q8_0: 8.5 bits per weight loses little
against F16/BF16 or the rarer block types, and keeps every product an integer dot.
The converted rows live in anonymous memory, or, in low-memory mode, in a SpillFile.
"""
from __future__ import annotations

import mmap
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np

from lila.errors import LilaError
from lila.formats.gguf import GGUFFile
from lila.formats.quants import GGMLType, dequantize
from lila.native.abi import MATMUL_TYPES, WEIGHT_TYPES

Q8_0_BLOCK_VALUES = WEIGHT_TYPES[GGMLType.Q8_0].block_values
Q8_0_BLOCK_BYTES = WEIGHT_TYPES[GGMLType.Q8_0].block_bytes
# Values converted per step: bounds the fp32 temporaries to a few MiB.
_CONVERT_CHUNK = 1 << 20


def quantize_q8_0(values: np.ndarray) -> np.ndarray:
    """Rows of values (last axis a multiple of 32) -> their Q8_0 blocks as uint8, shape
    (..., n // 32 * 34). As ggml's quantize_row_q8_0_ref: d = max|x| / 127 in fp32,
    q = x * (1 / d) rounded half away from zero, d stored as fp16."""
    x = np.asarray(values, np.float32)
    if x.ndim == 0 or x.shape[-1] % 32:
        raise ValueError(f"cannot quantize shape {x.shape} to Q8_0 blocks of 32")
    blocks = x.reshape(-1, 32)
    d = np.abs(blocks).max(axis=1, keepdims=True) / np.float32(127)
    with np.errstate(divide="ignore"):
        inverse = np.where(d > 0, np.float32(1) / d, np.float32(0)).astype(np.float32)
    scaled = (blocks * inverse).astype(np.float64)   # float64: adding 0.5 is then exact
    codes = np.trunc(scaled + np.copysign(0.5, scaled)).astype(np.int8)
    out = np.empty((len(blocks), Q8_0_BLOCK_BYTES), np.uint8)
    out[:, :2] = d.astype("<f2").view(np.uint8)
    out[:, 2:] = codes.view(np.uint8)
    return out.reshape(*x.shape[:-1], x.shape[-1] // 32 * Q8_0_BLOCK_BYTES)


class SpillFile:
    """Converted weights in an unlinked file (low-memory mode). Its pages, like the GGUF
    map's, are the kernel's to write back, drop under memory pressure and read again when
    a matmul needs them; rows in anonymous memory could only stay in RAM, having no swap
    to go to on most small boards."""

    def __init__(self, directory: Path, nbytes: int):
        try:
            directory.mkdir(parents=True, exist_ok=True)
            free = shutil.disk_usage(directory).free
            if free < nbytes:
                raise LilaError(f"low-memory mode writes the {nbytes >> 20} MB of converted "
                                f"weights to {directory}, which has {free >> 20} MB free; "
                                "set LILA_HOME to a folder on a disk with room")
            # Unlinked from the start: nothing is left behind, even by a killed process.
            self._file = tempfile.TemporaryFile(dir=directory)
        except OSError as e:
            raise LilaError(f"cannot write converted weights to {directory}: {e.strerror or e}") from None
        self.directory = directory
        self._end = 0

    def store(self, rows: int, row_bytes: int, chunks: Iterator[np.ndarray]) -> np.ndarray:
        """Append rows x row_bytes written chunk by chunk, as a read-only view of the file."""
        fd = self._file.fileno()
        start = offset = self._end
        # No fsync: the kernel writes the dirty pages back when it needs the memory (checked
        # under a 128 MB cgroup limit with 335 MB of converted weights).
        try:
            for chunk in chunks:
                offset += os.pwrite(fd, chunk, offset)
        except OSError as e:
            raise LilaError(f"cannot write converted weights to {self.directory}: "
                            f"{e.strerror or e}") from None
        if offset - start != rows * row_bytes:
            raise LilaError(f"short write of converted weights to {self.directory}")
        # mmap offsets must be multiples of the allocation granularity: the next tensor
        # starts at the next one, the gap left as a hole in the file
        self._end = -(-offset // mmap.ALLOCATIONGRANULARITY) * mmap.ALLOCATIONGRANULARITY
        view = mmap.mmap(fd, rows * row_bytes, access=mmap.ACCESS_READ, offset=start)
        return np.frombuffer(view, np.uint8).reshape(rows, row_bytes)


def matmul_weight(gguf: GGUFFile, name: str, spill: SpillFile | None = None,
                  kept: frozenset[int] = MATMUL_TYPES) -> tuple[GGMLType, np.ndarray]:
    """A 2-D weight as (its type, uint8 array of its rows of blocks): a read-only view of
    the map for the types in `kept` (the backend's matmul kernels), else a read-only Q8_0
    copy made now, in spill if given."""
    info = gguf.tensors[name]
    if len(info.shape) != 2:
        raise LilaError(f"weight {name} has shape {info.shape}; a matmul needs 2 dimensions")
    rows, width = info.shape
    raw = gguf.tensor_bytes(name).reshape(rows, -1)
    if info.ggml_type in kept:
        return info.ggml_type, raw
    if width % 32:
        raise LilaError(f"weight {name} ({info.ggml_type.name}) has rows of {width} values, "
                        f"which cannot be converted to Q8_0 blocks of 32")
    row_bytes = width // 32 * Q8_0_BLOCK_BYTES
    chunks = _q8_0_chunks(raw, info.ggml_type, width)
    if spill is not None:
        converted = spill.store(rows, row_bytes, chunks)
    else:
        converted = np.empty((rows, row_bytes), np.uint8)
        start = 0
        for chunk in chunks:
            converted[start:start + len(chunk)] = chunk
            start += len(chunk)
        converted.flags.writeable = False   # as the map: one array type for every weight
    gguf.advise_unused(name)
    return GGMLType.Q8_0, converted


def _q8_0_chunks(raw: np.ndarray, ggml_type: GGMLType, width: int) -> Iterator[np.ndarray]:
    """raw's rows of ggml_type blocks as Q8_0 rows, a few at a time."""
    step = max(1, _CONVERT_CHUNK // width)
    for start in range(0, len(raw), step):
        chunk = raw[start:start + step]
        yield quantize_q8_0(dequantize(chunk, ggml_type, (len(chunk), width)))
