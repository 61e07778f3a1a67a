"""ggml tensor types: block layouts, sizes and vectorised numpy dequantization.

Each quantized type stores a row as blocks of BLOCK_SIZE elements packed into
TYPE_SIZE bytes. The dequantizers below reproduce ggml's reference arithmetic
operation for operation in float32, so they are bit-exact against
`gguf.quants.dequantize` (tests/test_quants.py proves it per type).
"""

from __future__ import annotations

import enum
from typing import Callable

import numpy as np

from lila.errors import ModelFormatError, UnsupportedError

QK_K = 256  # elements per super-block of the k-quants


class GGMLType(enum.IntEnum):
    """Every tensor type id ggml has assigned, so an unsupported one can be named."""

    F32 = 0
    F16 = 1
    Q4_0 = 2
    Q4_1 = 3
    # 4 and 5 were Q4_2 and Q4_3, removed before GGUF existed.
    Q5_0 = 6
    Q5_1 = 7
    Q8_0 = 8
    Q8_1 = 9
    Q2_K = 10
    Q3_K = 11
    Q4_K = 12
    Q5_K = 13
    Q6_K = 14
    Q8_K = 15
    IQ2_XXS = 16
    IQ2_XS = 17
    IQ3_XXS = 18
    IQ1_S = 19
    IQ4_NL = 20
    IQ3_S = 21
    IQ2_S = 22
    IQ4_XS = 23
    I8 = 24
    I16 = 25
    I32 = 26
    I64 = 27
    F64 = 28
    IQ1_M = 29
    BF16 = 30
    # 31-33 and 36-38 are the interleaved Q4_0 / IQ4_NL repacks that ggml once
    # wrote to files and has since removed; they keep Q4_0's block size.
    Q4_0_4_4 = 31
    Q4_0_4_8 = 32
    Q4_0_8_8 = 33
    TQ1_0 = 34
    TQ2_0 = 35
    IQ4_NL_4_4 = 36
    IQ4_NL_4_8 = 37
    IQ4_NL_8_8 = 38
    MXFP4 = 39
    NVFP4 = 40
    Q1_0 = 41


_T = GGMLType
# (elements per block, bytes per block), as in ggml's type_traits.
_LAYOUT: dict[GGMLType, tuple[int, int]] = {
    _T.F32: (1, 4),
    _T.F16: (1, 2),
    _T.Q4_0: (32, 2 + 16),
    _T.Q4_1: (32, 2 + 2 + 16),
    _T.Q5_0: (32, 2 + 4 + 16),
    _T.Q5_1: (32, 2 + 2 + 4 + 16),
    _T.Q8_0: (32, 2 + 32),
    _T.Q8_1: (32, 4 + 4 + 32),
    _T.Q2_K: (QK_K, 2 + 2 + QK_K // 16 + QK_K // 4),
    _T.Q3_K: (QK_K, 2 + QK_K // 4 + QK_K // 8 + 12),
    _T.Q4_K: (QK_K, 2 + 2 + QK_K // 2 + 12),
    _T.Q5_K: (QK_K, 2 + 2 + QK_K // 2 + QK_K // 8 + 12),
    _T.Q6_K: (QK_K, 2 + QK_K // 2 + QK_K // 4 + QK_K // 16),
    _T.Q8_K: (QK_K, 4 + QK_K + QK_K // 8),
    _T.IQ2_XXS: (QK_K, 2 + QK_K // 4),
    _T.IQ2_XS: (QK_K, 2 + QK_K // 4 + QK_K // 32),
    _T.IQ3_XXS: (QK_K, 2 + QK_K // 4 + QK_K // 8),
    _T.IQ1_S: (QK_K, 2 + QK_K // 8 + QK_K // 16),
    _T.IQ4_NL: (32, 2 + 16),
    _T.IQ3_S: (QK_K, 2 + QK_K // 4 + QK_K // 8 + QK_K // 32 + 4),
    _T.IQ2_S: (QK_K, 2 + QK_K // 4 + QK_K // 16),
    _T.IQ4_XS: (QK_K, 2 + 2 + QK_K // 2 + QK_K // 64),
    _T.I8: (1, 1),
    _T.I16: (1, 2),
    _T.I32: (1, 4),
    _T.I64: (1, 8),
    _T.F64: (1, 8),
    _T.IQ1_M: (QK_K, QK_K // 8 + QK_K // 16 + QK_K // 32),
    _T.BF16: (1, 2),
    _T.Q4_0_4_4: (32, 2 + 16),
    _T.Q4_0_4_8: (32, 2 + 16),
    _T.Q4_0_8_8: (32, 2 + 16),
    _T.TQ1_0: (QK_K, 2 + 4 * 13),
    _T.TQ2_0: (QK_K, 2 + 64),
    _T.IQ4_NL_4_4: (32, 2 + 16),
    _T.IQ4_NL_4_8: (32, 2 + 16),
    _T.IQ4_NL_8_8: (32, 2 + 16),
    _T.MXFP4: (32, 1 + 16),
    _T.NVFP4: (64, 4 + 32),
    _T.Q1_0: (128, 2 + 16),
}
BLOCK_SIZE: dict[GGMLType, int] = {t: b for t, (b, _) in _LAYOUT.items()}
TYPE_SIZE: dict[GGMLType, int] = {t: s for t, (_, s) in _LAYOUT.items()}


def tensor_nbytes(ggml_type: GGMLType, shape: tuple[int, ...]) -> int:
    """Bytes a tensor of `shape` (numpy order, row innermost) occupies in `ggml_type`."""
    if not shape or shape[-1] % BLOCK_SIZE[ggml_type]:
        raise ModelFormatError(
            f"shape {shape} does not split into {ggml_type.name} blocks of {BLOCK_SIZE[ggml_type]}")
    n = 1
    for d in shape:
        n *= d
    return n // BLOCK_SIZE[ggml_type] * TYPE_SIZE[ggml_type]


# --- dequantizers: (blocks uint8 [n, TYPE_SIZE]) -> float32 [n, BLOCK_SIZE] ---------

def _f16(b: np.ndarray) -> np.ndarray:
    """Column(s) of little-endian f16 bytes -> float32 [n, 1]."""
    return np.ascontiguousarray(b).view("<f2").astype(np.float32)


def _nibbles(qs: np.ndarray) -> np.ndarray:
    """Bytes [n, k] -> [n, 2k] uint8: all low nibbles, then all high nibbles (ggml order)."""
    return np.concatenate([qs & 0x0F, qs >> 4], axis=-1)


def _bits(b: np.ndarray) -> np.ndarray:
    """Bytes [n, k] -> [n, 8k] uint8 of 0/1, bit 0 of byte 0 first (a little-endian bitfield)."""
    return np.unpackbits(b, axis=-1, bitorder="little")


def _q4_0(b: np.ndarray) -> np.ndarray:
    q = _nibbles(b[:, 2:]).astype(np.int8) - np.int8(8)
    return _f16(b[:, :2]) * q.astype(np.float32)


def _q4_1(b: np.ndarray) -> np.ndarray:
    out = _nibbles(b[:, 4:]).astype(np.float32)
    out *= _f16(b[:, :2])
    out += _f16(b[:, 2:4])
    return out


def _q5_0(b: np.ndarray) -> np.ndarray:
    q = (_nibbles(b[:, 6:]) | (_bits(b[:, 2:6]) << 4)).astype(np.int8) - np.int8(16)
    return _f16(b[:, :2]) * q.astype(np.float32)


def _q5_1(b: np.ndarray) -> np.ndarray:
    out = (_nibbles(b[:, 8:]) | (_bits(b[:, 4:8]) << 4)).astype(np.float32)
    out *= _f16(b[:, :2])
    out += _f16(b[:, 2:4])
    return out


def _q8_0(b: np.ndarray) -> np.ndarray:
    return b[:, 2:].view(np.int8).astype(np.float32) * _f16(b[:, :2])


def _q2_k(b: np.ndarray) -> np.ndarray:
    # scales[16] (low nibble scale, high nibble min), qs[64], d, dmin.
    # qs holds 2 halves of 32 bytes; 2-bit field s of byte i is element half*128 + s*32 + i.
    n = len(b)
    sc = b[:, :16]
    dl = (_f16(b[:, 80:82]) * (sc & 0x0F).astype(np.float32))[:, :, None]
    ml = (_f16(b[:, 82:84]) * (sc >> 4).astype(np.float32))[:, :, None]
    qs = b[:, 16:80].reshape(n, 2, 1, 32) >> np.array([0, 2, 4, 6], np.uint8).reshape(1, 1, 4, 1)
    q = (qs & 3).reshape(n, 16, 16).astype(np.float32)
    return (dl * q - ml).reshape(n, QK_K)


def _q3_k(b: np.ndarray) -> np.ndarray:
    # hmask[32], qs[64], scales[12] (16 six-bit signed scales), d.
    n = len(b)
    hmask, qs, packed = b[:, :32], b[:, 32:96], b[:, 96:108]
    lo = (packed[:, :8].reshape(n, 1, 8) >> np.array([0, 4], np.uint8).reshape(1, 2, 1)).reshape(n, 16)
    hi = (packed[:, 8:].reshape(n, 1, 4) >> np.array([0, 2, 4, 6], np.uint8).reshape(1, 4, 1)).reshape(n, 16)
    sc = ((lo & 0x0F) | ((hi & 0x03) << 4)).astype(np.int8) - np.int8(32)
    dl = (_f16(b[:, 108:110]) * sc.astype(np.float32)).reshape(n, 16, 1)
    ql = qs.reshape(n, 2, 1, 32) >> np.array([0, 2, 4, 6], np.uint8).reshape(1, 1, 4, 1)
    qh = hmask.reshape(n, 1, 1, 32) >> np.arange(8, dtype=np.uint8).reshape(1, 1, 8, 1)
    ql = ql.reshape(n, 16, 16) & 3
    qh = (qh.reshape(n, 16, 16) & 1) ^ 1  # a clear hmask bit means "subtract 4"
    q = (ql.astype(np.int8) - (qh << 2).astype(np.int8)).astype(np.float32)
    return (dl * q).reshape(n, QK_K)


def _k_scale_min(packed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """12 bytes -> 8 six-bit scales and 8 six-bit mins (Q4_K / Q5_K packing)."""
    n = len(packed)
    p = packed.reshape(n, 3, 4)
    d, m, md = p[:, 0], p[:, 1], p[:, 2]
    sc = np.concatenate([d & 0x3F, (md & 0x0F) | ((d >> 2) & 0x30)], axis=-1)
    mn = np.concatenate([m & 0x3F, (md >> 4) | ((m >> 2) & 0x30)], axis=-1)
    return sc, mn


def _q4_k_like(b: np.ndarray, qh: np.ndarray | None, qs: np.ndarray) -> np.ndarray:
    # Eight sub-blocks of 32: sub-block 2c+k holds nibble k of qs bytes [32c, 32c+32).
    n = len(b)
    sc, mn = _k_scale_min(b[:, 4:16])
    d = (_f16(b[:, :2]) * sc.astype(np.float32)).reshape(n, 8, 1)
    dm = (_f16(b[:, 2:4]) * mn.astype(np.float32)).reshape(n, 8, 1)
    q = (qs.reshape(n, 4, 1, 32) >> np.array([0, 4], np.uint8).reshape(1, 1, 2, 1)).reshape(n, 8, 32) & 0x0F
    if qh is not None:  # bit j of qh[i] is the fifth bit of sub-block j, element i
        q |= ((qh.reshape(n, 1, 32) >> np.arange(8, dtype=np.uint8).reshape(1, 8, 1)) & 1) << 4
    return (d * q.astype(np.float32) - dm).reshape(n, QK_K)


def _q4_k(b: np.ndarray) -> np.ndarray:
    return _q4_k_like(b, None, b[:, 16:144])


def _q5_k(b: np.ndarray) -> np.ndarray:
    return _q4_k_like(b, b[:, 16:48], b[:, 48:176])


def _q6_k(b: np.ndarray) -> np.ndarray:
    # ql[128], qh[64], scales[16] int8, d.
    n = len(b)
    d = (_f16(b[:, 208:210]) * b[:, 192:208].view(np.int8).astype(np.float32)).reshape(n, 16, 1)
    ql = (b[:, :128].reshape(n, 2, 1, 64) >> np.array([0, 4], np.uint8).reshape(1, 1, 2, 1)) & 0x0F
    qh = (b[:, 128:192].reshape(n, 2, 1, 32) >> np.array([0, 2, 4, 6], np.uint8).reshape(1, 1, 4, 1)) & 3
    q = (ql.reshape(n, 8, 32) | (qh.reshape(n, 8, 32) << 4)).astype(np.int8) - np.int8(32)
    return (d * q.reshape(n, 16, 16).astype(np.float32)).reshape(n, QK_K)


_BLOCK_DEQUANT: dict[GGMLType, Callable[[np.ndarray], np.ndarray]] = {
    _T.Q4_0: _q4_0, _T.Q4_1: _q4_1, _T.Q5_0: _q5_0, _T.Q5_1: _q5_1, _T.Q8_0: _q8_0,
    _T.Q2_K: _q2_k, _T.Q3_K: _q3_k, _T.Q4_K: _q4_k, _T.Q5_K: _q5_k, _T.Q6_K: _q6_k,
}
SUPPORTED_TYPES: frozenset[GGMLType] = frozenset({_T.F32, _T.F16, _T.BF16, *_BLOCK_DEQUANT})

# Blocks per step: bounds the temporaries to a few MiB so they stay cache-friendly.
_CHUNK_ELEMENTS = 1 << 18


def dequantize(raw: np.ndarray, ggml_type: GGMLType, shape: tuple[int, ...]) -> np.ndarray:
    """Decode the raw bytes of a tensor into a float32 array of `shape`.

    F32 data comes back as a (read-only, if `raw` is) view of `raw`, not a copy.
    """
    ggml_type = GGMLType(ggml_type)
    if ggml_type not in SUPPORTED_TYPES:
        raise UnsupportedError(f"tensor type {ggml_type.name} is not supported by Lila's dequantizer")
    nbytes = tensor_nbytes(ggml_type, shape)
    raw = np.asarray(raw).reshape(-1).view(np.uint8)
    if raw.size != nbytes:
        raise ModelFormatError(f"{ggml_type.name} tensor of shape {shape} needs {nbytes} bytes, got {raw.size}")
    if ggml_type == _T.F32:
        return raw.view("<f4").astype(np.float32, copy=False).reshape(shape)
    if ggml_type == _T.F16:
        return raw.view("<f2").astype(np.float32).reshape(shape)
    if ggml_type == _T.BF16:  # bf16 is the top half of an f32
        return (raw.view("<u2").astype(np.uint32) << 16).view(np.float32).reshape(shape)

    block, size = BLOCK_SIZE[ggml_type], TYPE_SIZE[ggml_type]
    blocks = raw.reshape(-1, size)
    out = np.empty((len(blocks), block), dtype=np.float32)
    step = max(1, _CHUNK_ELEMENTS // block)
    fn = _BLOCK_DEQUANT[ggml_type]
    # A non-finite scale in a hostile file yields NaN/inf like ggml does; numpy's
    # warnings about it are not how Lila reports problems.
    with np.errstate(all="ignore"):
        for i in range(0, len(blocks), step):
            out[i:i + step] = fn(blocks[i:i + step])
    return out.reshape(shape)
