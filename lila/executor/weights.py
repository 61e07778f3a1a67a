"""Weights as the matmul kernels take them, shared by the native and numba backends.

Types with kernels are multiplied straight from the file's map, as rows of GGML blocks.
Any other type is converted once, at load, to Q8_0: 8.5 bits per weight loses little
against F16/BF16 or the rarer block types, and keeps every product an integer dot.
"""
from __future__ import annotations

import numpy as np

from lila.errors import LilaError
from lila.formats.gguf import GGUFFile
from lila.formats.quants import GGMLType, dequantize

KERNEL_TYPES: frozenset[GGMLType] = frozenset({
    GGMLType.Q4_0, GGMLType.Q4_1, GGMLType.Q5_0, GGMLType.Q8_0, GGMLType.Q4_K, GGMLType.Q6_K})

Q8_0_BLOCK_BYTES = 34
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


def matmul_weight(gguf: GGUFFile, name: str) -> tuple[GGMLType, np.ndarray]:
    """A 2-D weight as (its type, uint8 array of its rows of blocks): a read-only view of
    the map for KERNEL_TYPES, else a read-only Q8_0 copy made now."""
    info = gguf.tensors[name]
    if len(info.shape) != 2:
        raise LilaError(f"weight {name} has shape {info.shape}; a matmul needs 2 dimensions")
    rows, width = info.shape
    raw = gguf.tensor_bytes(name).reshape(rows, -1)
    if info.ggml_type in KERNEL_TYPES:
        return info.ggml_type, raw
    if width % 32:
        raise LilaError(f"weight {name} ({info.ggml_type.name}) has rows of {width} values, "
                        f"which cannot be converted to Q8_0 blocks of 32")
    converted = np.empty((rows, width // 32 * Q8_0_BLOCK_BYTES), np.uint8)
    step = max(1, _CONVERT_CHUNK // width)
    for start in range(0, rows, step):
        chunk = raw[start:start + step]
        converted[start:start + step] = quantize_q8_0(
            dequantize(chunk, info.ggml_type, (len(chunk), width)))
    converted.flags.writeable = False   # as the map: one array type for every weight
    return GGMLType.Q8_0, converted
