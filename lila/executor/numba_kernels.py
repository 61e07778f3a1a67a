"""The numba backend's kernels: each does one op of the plan on numpy arrays.

They implement the math of the native kernels (native/include/lila_kernels.h), so the
two backends agree closely:
  - a linear's input rows are quantized to blocks of 32 int8 values (d = max|x| / 127,
    q = round-half-even(x * (1 / d)), s = d * sum(q)), kept as three arrays: d and s
    (rows, blocks) and qs (rows, width);
  - weights are read as the raw bytes of their GGML blocks and each product is an
    integer dot per block of 32 with fp32 scales: with weight = scale * code + offset
    in a block, its product with x ~= d * qs is scale * (d * sum(code * qs)) + offset * s;
  - the KV cache is fp16, kept as uint16 bits (numba has no float16 on the CPU).

How the code is shaped by numba (each point measured, on x86-64 with AVX2):
  - numba leaves LLVM's SLP vectorizer off, so a loop with a constant trip count of 16
    or 32 is unrolled into scalar code; the block loops therefore run a count LLVM
    cannot fold (`_lanes`), which the loop vectorizer does vectorize;
  - numba checks every signed index for wrap-around (a negative index counts from the
    end), which keeps LLVM from vectorizing; the hot loops index with uint64 (`_u64`),
    which has no such check (2x). Mixing uint64 and int64 makes float64 in numba, so
    offsets there are uint64 throughout;
  - calls between kernels are not inlined by LLVM (and pass every array as seven
    words), so the per-block helpers are inlined by numba (inline="always") and each
    weight type has its own loop over rows;
  - a kernel taking another kernel as an argument is never found in numba's on-disk
    cache, so weight types are told apart by a branch on the type id, per tile of rows
    (`_type_switch` writes the branches from the kernel ABI's type table);
  - compile time: a jitted function compiles the code of everything it calls again, and
    a parallel one twice more. So there are two parallel kernels (_matmul, attention),
    each calling serial ones, and matmul's choice of path is made in Python;
  - arguments keep one type each (int64 sizes, float64 scalars, C-contiguous arrays,
    weights read-only), so each kernel is compiled once and then cached on disk.

Matrix products have two paths. A few tokens (decode) take the GEMV: each weight block
is decoded in registers straight into its integer dot. More tokens take the GEMM: each
weight row is decoded once to int16 codes (by the decoders of the embedding lookup),
then multiplied by the tokens four at a time. Both combine a block's integer dot into
fp32 by the same expression, so a token's result does not depend on its batch.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
from numba import njit, prange

from lila.formats.quants import GGMLType
from lila.native import abi

# GGML type ids of the two types looked up without a decoder.
F32, F16 = int(GGMLType.F32), int(GGMLType.F16)

# From this many tokens on, decoding each weight row once and multiplying it by all
# tokens (GEMM) beats decoding it again for each token (GEMV).
GEMM_MIN_TOKENS = 4
# Weight rows per parallel task.
_ROW_TILE = 16

_F16_SUBNORMAL_UNIT = np.float32(2.0 ** -24)
_F32_FROM_F16_EXPONENT = (127 - 15) << 23
_F32_TWO_POW_24 = np.float32(2.0 ** 24)
_ZERO = np.float32(0.0)
_ONE = np.float32(1.0)
_HALF = np.float32(0.5)
_Q8_MAX = np.float32(127.0)
_GELU_C = np.float32(math.sqrt(2.0 / math.pi))
_GELU_CUBIC = np.float32(0.044715)

_u64 = np.uint64
_BLOCK = np.uint64(32)

_kernel = njit(cache=True, nogil=True)
_parallel_kernel = njit(cache=True, nogil=True, parallel=True)
_inline = njit(cache=True, nogil=True, inline="always")


# --- fp16 -------------------------------------------------------------------------------------

@_inline
def f16_to_f32(h: int) -> np.float32:
    """fp16 bits -> float32, exactly."""
    exponent = h & 0x7C00
    if exponent == 0:          # zero or subnormal: mantissa * 2^-24
        magnitude = np.float32(h & 0x3FF) * _F16_SUBNORMAL_UNIT
    elif exponent == 0x7C00:   # inf or nan
        magnitude = np.uint32(0x7F800000 | ((h & 0x3FF) << 13)).view(np.float32)
    else:
        magnitude = np.uint32(((h & 0x7FFF) << 13) + _F32_FROM_F16_EXPONENT).view(np.float32)
    return -magnitude if h & 0x8000 else magnitude


@_inline
def f32_to_f16(x: np.float32) -> int:
    """float32 -> fp16 bits, rounded to nearest even (as numpy's astype(float16))."""
    bits = np.int64(np.float32(x).view(np.uint32))
    sign = (bits >> 16) & 0x8000
    bits &= 0x7FFFFFFF
    if bits >= 0x7F800000:     # inf, nan (kept a nan)
        return sign | 0x7C00 | (0x200 if bits > 0x7F800000 else 0)
    if bits >= 0x477FF000:     # 65520 and above round past the largest fp16, 65504
        return sign | 0x7C00
    if bits < 0x38800000:      # below 2^-14: a subnormal fp16, mantissa = x * 2^24
        magnitude = np.uint32(bits).view(np.float32) * _F32_TWO_POW_24
        return sign | np.int64(np.rint(magnitude))
    half = (bits >> 13) - ((127 - 15) << 10)
    rest = bits & 0x1FFF       # the 13 mantissa bits dropped
    if rest > 0x1000 or (rest == 0x1000 and half & 1):
        half += 1              # a carry into the exponent is still right
    return sign | half


@_inline
def _f16_at(raw, offset: np.uint64) -> np.float32:
    """The little-endian fp16 at raw[offset:offset + 2]."""
    return f16_to_f32(np.int64(raw[offset]) | (np.int64(raw[offset + _u64(1)]) << 8))


@_inline
def _u32_at(raw, offset: np.uint64) -> int:
    return (np.int64(raw[offset]) | (np.int64(raw[offset + _u64(1)]) << 8)
            | (np.int64(raw[offset + _u64(2)]) << 16) | (np.int64(raw[offset + _u64(3)]) << 24))


@_inline
def _lanes(xq, count: int) -> np.uint64:
    """count (16 or 32; xq holds at least one block of 32), as a value LLVM cannot fold:
    see the module's docstring. (Not 32 // 2 for 16: LLVM then vectorizes worse.)"""
    return _u64(min(count, xq.size))


@_inline
def _k_scale_min(row, packed: np.uint64, j: np.uint64) -> tuple[int, int]:
    """Sub-block j's 6-bit scale and min from the 12 bytes at row[packed:] (Q4_K)."""
    at = packed + j
    if j < 4:
        return np.int64(row[at]) & 63, np.int64(row[at + _u64(4)]) & 63
    scale = (np.int64(row[at + _u64(4)]) & 0xF) | ((np.int64(row[at - _u64(4)]) >> 6) << 4)
    minimum = (np.int64(row[at + _u64(4)]) >> 4) | ((np.int64(row[at]) >> 6) << 4)
    return scale, minimum


# --- per-block integer dots with q8 activations (the GEMV) ------------------------------------
# Each returns sum(code[i] * xq[x0 + i]) over one block's codes, read from the weight row
# at `start`, as an int32. Products are formed in int16 and summed in int32, the widths
# the vector instructions have.

@_inline
def _nibble_pair_dot(row, start, xq, x0, half) -> np.int32:
    """Codes in 16 bytes: element i < 16 the low nibble of byte i, element i + 16 its
    high nibble (Q4_0, Q4_1, the low bits of Q5_0). half: 16."""
    isum = np.int32(0)
    for i in range(half):
        byte = np.int16(row[start + i])
        isum = np.int32(isum + np.int32((byte & 0xF) * np.int16(xq[x0 + i])
                                        + (byte >> 4) * np.int16(xq[x0 + half + i])))
    return isum


@_inline
def _nibble_sums(row, start, xq, x0, lanes) -> tuple[np.int32, np.int32]:
    """Two sub-blocks in 32 bytes: the low nibbles are the first's codes, the high nibbles
    the second's (Q4_K); a sum for each, as each has its scale. (For Q4_0's single block
    two sums cost a third more than _nibble_pair_dot's one; for Q4_K two sub-blocks per
    pass over the bytes gain a fifth.)"""
    low = high = np.int32(0)
    for i in range(lanes):
        byte = np.int16(row[start + i])
        low = np.int32(low + np.int32((byte & 0xF) * np.int16(xq[x0 + i])))
        high = np.int32(high + np.int32((byte >> 4) * np.int16(xq[x0 + lanes + i])))
    return low, high


@_inline
def _bit_dot(bits: int, xq, x0, lanes) -> np.int32:
    """Codes are the bits of `bits`, bit i for element i (the fifth bits of Q5_0)."""
    isum = np.int32(0)
    word = np.int32(bits)
    for i in range(lanes):
        isum = np.int32(isum + np.int32(((word >> np.int32(i)) & 1) * np.int16(xq[x0 + i])))
    return isum


@_inline
def _int8_dot(row, start, xq, x0, lanes) -> np.int32:
    """Codes are 32 int8 (Q8_0)."""
    isum = np.int32(0)
    for i in range(lanes):
        isum = np.int32(isum + np.int32(np.int16(np.int8(row[start + i])) * np.int16(xq[x0 + i])))
    return isum


@_inline
def _q6_k_dot(row, low, low_shift: int, high, high_shift: int, xq, x0, count) -> np.int32:
    """Q6_K codes minus 32 (count of them: 16, which share a scale): 4 low bits from
    row[low + i] >> low_shift, 2 high bits from row[high + i] >> high_shift."""
    isum = np.int32(0)
    for i in range(count):
        code = (((np.int16(row[low + i]) >> low_shift) & 0xF)
                | (((np.int16(row[high + i]) >> high_shift) & 3) << 4)) - 32
        isum = np.int32(isum + np.int32(code * np.int16(xq[x0 + i])))
    return isum


# --- weight rows times one token's q8 row (the GEMV) ------------------------------------------
# One function per type, over rows lo <= r < hi: a loop over rows calling a per-row
# function through the type's branch costs a third more.

@_inline
def _block_product(scale: np.float32, offset: np.float32, isum: np.int32, d: np.float32,
                   s: np.float32) -> np.float32:
    """A block's weight . x from its integer dot: weight = scale * code + offset and
    x ~= d * qs, s = d * sum(qs). The GEMV and the GEMM both use it, so a token's result
    does not depend on how many tokens share the call."""
    return scale * (d * np.float32(isum)) + offset * s


@_inline
def _store(out, bias, r, value: np.float32) -> None:
    out[r] = value + bias[r] if bias.size else value


@_kernel
def _gemv_q4_0(w, lo, hi, xd, xs, xq, bias, out) -> None:
    # blocks: d (f16), 16 bytes of nibble pairs; weight = d * (code - 8)
    half = _lanes(xq, 16)
    for r in range(lo, hi):
        row, acc = w[r], _ZERO
        for b in range(_u64(xd.size)):
            base = b * _u64(18)
            isum = _nibble_pair_dot(row, base + _u64(2), xq, b * _BLOCK, half)
            d = _f16_at(row, base)
            acc += _block_product(d, np.float32(-8.0) * d, isum, xd[b], xs[b])
        _store(out, bias, r, acc)


@_kernel
def _gemv_q4_1(w, lo, hi, xd, xs, xq, bias, out) -> None:
    # blocks: d, m (f16), 16 bytes of nibble pairs; weight = d * code + m
    half = _lanes(xq, 16)
    for r in range(lo, hi):
        row, acc = w[r], _ZERO
        for b in range(_u64(xd.size)):
            base = b * _u64(20)
            isum = _nibble_pair_dot(row, base + _u64(4), xq, b * _BLOCK, half)
            d, m = _f16_at(row, base), _f16_at(row, base + _u64(2))
            acc += _block_product(d, m, isum, xd[b], xs[b])
        _store(out, bias, r, acc)


@_kernel
def _gemv_q5_0(w, lo, hi, xd, xs, xq, bias, out) -> None:
    # blocks: d (f16), 32 fifth bits (u32), 16 bytes of nibble pairs; weight = d * (code - 16)
    half, lanes = _lanes(xq, 16), _lanes(xq, 32)
    for r in range(lo, hi):
        row, acc = w[r], _ZERO
        for b in range(_u64(xd.size)):
            base = b * _u64(22)
            isum = (_nibble_pair_dot(row, base + _u64(6), xq, b * _BLOCK, half)
                    + 16 * _bit_dot(_u32_at(row, base + _u64(2)), xq, b * _BLOCK, lanes))
            d = _f16_at(row, base)
            acc += _block_product(d, np.float32(-16.0) * d, isum, xd[b], xs[b])
        _store(out, bias, r, acc)


@_kernel
def _gemv_q8_0(w, lo, hi, xd, xs, xq, bias, out) -> None:
    # blocks: d (f16), 32 int8; weight = d * code
    lanes = _lanes(xq, 32)
    for r in range(lo, hi):
        row, acc = w[r], _ZERO
        for b in range(_u64(xd.size)):
            base = b * _u64(34)
            isum = _int8_dot(row, base + _u64(2), xq, b * _BLOCK, lanes)
            acc += _block_product(_f16_at(row, base), _ZERO, isum, xd[b], xs[b])
        _store(out, bias, r, acc)


@_kernel
def _gemv_q4_k(w, lo, hi, xd, xs, xq, bias, out) -> None:
    # super-blocks of 256: d, dmin (f16), 12 bytes of 6-bit scales and mins, 128 bytes in
    # which sub-blocks 2c and 2c + 1 (32 elements each) are the low and high nibbles of
    # bytes [32c, 32c + 32); weight = d * scale_j * code - dmin * min_j
    lanes = _lanes(xq, 32)
    for r in range(lo, hi):
        row, acc = w[r], _ZERO
        for sb in range(_u64(xd.size // 8)):
            base = sb * _u64(144)
            d, dmin = _f16_at(row, base), _f16_at(row, base + _u64(2))
            for c in range(_u64(4)):
                b = sb * _u64(8) + _u64(2) * c
                sums = _nibble_sums(row, base + _u64(16) + c * _BLOCK, xq, b * _BLOCK, lanes)
                for k in range(_u64(2)):
                    scale, minimum = _k_scale_min(row, base + _u64(4), _u64(2) * c + k)
                    acc += _block_product(d * np.float32(scale), -(dmin * np.float32(minimum)),
                                          sums[k], xd[b + k], xs[b + k])
        _store(out, bias, r, acc)


@_kernel
def _gemv_q6_k(w, lo, hi, xd, xs, xq, bias, out) -> None:
    # super-blocks of 256: ql[128], qh[64], int8 scales[16], d (f16). Element 32k + l of
    # half h (k < 4, l < 32): low bits ql[64h + 32(k & 1) + l] >> 4(k >> 1), high bits
    # qh[32h + l] >> 2k; weight = d * scales[8h + 2k + l // 16] * (code - 32). The scale
    # changes every 16 elements: it multiplies each 16's integer sum.
    half = _lanes(xq, 16)
    for r in range(lo, hi):
        row, acc = w[r], _ZERO
        for sb in range(_u64(xd.size // 8)):
            base = sb * _u64(210)
            d = _f16_at(row, base + _u64(208))
            for h in range(_u64(2)):
                for k in range(_u64(4)):
                    b = sb * _u64(8) + h * _u64(4) + k
                    low = base + _u64(64) * h + _BLOCK * (k & _u64(1))
                    high = base + _u64(128) + _BLOCK * h
                    low_shift, high_shift = 4 * np.int64(k >> _u64(1)), 2 * np.int64(k)
                    isum = np.int32(0)
                    scales = base + _u64(192) + _u64(8) * h + _u64(2) * k
                    for part in range(_u64(2)):
                        first = half * part
                        scale = np.int32(np.int8(row[scales + part]))
                        isum += scale * _q6_k_dot(row, low + first, low_shift, high + first,
                                                  high_shift, xq, b * _BLOCK + first, half)
                    acc += _block_product(d, _ZERO, isum, xd[b], xs[b])
        _store(out, bias, r, acc)


# --- weight rows -> codes, scales and offsets (the GEMM and the embedding lookup) -------------
# Each decoder fills, for one row of blocks, weight[i] = scale[i // 32] * q[i] + offset[i // 32]
# with q int16.

@_inline
def _decode_nibble_pairs(row, start, q, q0, half) -> None:
    for i in range(half):
        byte = np.int16(row[start + i])
        q[q0 + i] = byte & 0xF
        q[q0 + half + i] = byte >> 4


@_kernel
def _decode_q4_0(row, q, scale, offset) -> None:
    half = _lanes(q, 16)
    for b in range(_u64(scale.size)):
        base = b * _u64(18)
        d = _f16_at(row, base)
        scale[b], offset[b] = d, np.float32(-8.0) * d
        _decode_nibble_pairs(row, base + _u64(2), q, b * _BLOCK, half)


@_kernel
def _decode_q4_1(row, q, scale, offset) -> None:
    half = _lanes(q, 16)
    for b in range(_u64(scale.size)):
        base = b * _u64(20)
        scale[b], offset[b] = _f16_at(row, base), _f16_at(row, base + _u64(2))
        _decode_nibble_pairs(row, base + _u64(4), q, b * _BLOCK, half)


@_kernel
def _decode_q5_0(row, q, scale, offset) -> None:
    half, lanes = _lanes(q, 16), _lanes(q, 32)
    for b in range(_u64(scale.size)):
        base = b * _u64(22)
        d = _f16_at(row, base)
        scale[b], offset[b] = d, np.float32(-16.0) * d
        _decode_nibble_pairs(row, base + _u64(6), q, b * _BLOCK, half)
        high = np.int32(_u32_at(row, base + _u64(2)))
        for i in range(lanes):
            q[b * _BLOCK + i] |= np.int16(((high >> np.int32(i)) & 1) << 4)


@_kernel
def _decode_q8_0(row, q, scale, offset) -> None:
    lanes = _lanes(q, 32)
    for b in range(_u64(scale.size)):
        base = b * _u64(34)
        scale[b], offset[b] = _f16_at(row, base), _ZERO
        for i in range(lanes):
            q[b * _BLOCK + i] = np.int16(np.int8(row[base + _u64(2) + i]))


@_kernel
def _decode_q4_k(row, q, scale, offset) -> None:
    lanes = _lanes(q, 32)
    for sb in range(_u64(scale.size // 8)):
        base = sb * _u64(144)
        d, dmin = _f16_at(row, base), _f16_at(row, base + _u64(2))
        for j in range(_u64(8)):
            sc, minimum = _k_scale_min(row, base + _u64(4), j)
            b = sb * _u64(8) + j
            scale[b], offset[b] = d * np.float32(sc), -(dmin * np.float32(minimum))
            nibbles, shift = base + _u64(16) + (j >> _u64(1)) * _BLOCK, 4 * np.int64(j & _u64(1))
            for i in range(lanes):
                q[b * _BLOCK + i] = (np.int16(row[nibbles + i]) >> shift) & 0xF


@_kernel
def _decode_q6_k(row, q, scale, offset) -> None:
    # The int8 scale changes every 16 elements, so it is folded into the codes
    # (|(code - 32) * scale| <= 32 * 128 fits int16) and the block scale is d.
    half = _lanes(q, 16)
    for sb in range(_u64(scale.size // 8)):
        base = sb * _u64(210)
        d = _f16_at(row, base + _u64(208))
        for h in range(_u64(2)):
            for k in range(_u64(4)):
                b = sb * _u64(8) + h * _u64(4) + k
                scale[b], offset[b] = d, _ZERO
                low = base + _u64(64) * h + _BLOCK * (k & _u64(1))
                high = base + _u64(128) + _BLOCK * h
                low_shift, high_shift = 4 * np.int64(k >> _u64(1)), 2 * np.int64(k)
                scales = base + _u64(192) + _u64(8) * h + _u64(2) * k
                for part in range(_u64(2)):
                    first = half * part
                    sixteen = np.int16(np.int8(row[scales + part]))
                    for i in range(half):
                        code = (((np.int16(row[low + first + i]) >> low_shift) & 0xF)
                                | (((np.int16(row[high + first + i]) >> high_shift) & 3) << 4)) - 32
                        q[b * _BLOCK + first + i] = code * sixteen


def _type_switch(name: str, params: str, prefix: str) -> Callable:
    """The inlined function `name(wtype, params)` that calls `prefix + <type>(params)` for
    wtype, for every MATMUL type of the kernel ABI (LILA_WEIGHT_TYPES in lila_kernels.h):
    `if wtype == 2: _gemv_q4_0(...) elif ...`, the dispatch numba keeps inside a parallel
    loop and caches. Written as source because numba cannot call a kernel taken from a
    container. A type without its kernel here is left out: its weights reach these
    kernels converted to Q8_0 (missing_kernels() names such types)."""
    kernels = {int(t): globals()[prefix + t.name.lower()] for t in sorted(abi.MATMUL_TYPES)
               if prefix + t.name.lower() in globals()}
    lines = [f"def {name}(wtype, {params}):"]
    for i, (type_id, kernel) in enumerate(kernels.items()):
        lines += [f"    {'elif' if i else 'if'} wtype == {type_id}:",
                  f"        {kernel.__name__}({params})"]
    namespace = {kernel.__name__: kernel for kernel in kernels.values()}
    exec("\n".join(lines if kernels else [*lines, "    pass"]), namespace)
    return njit(nogil=True, inline="always")(namespace[name])


def missing_kernels() -> list[str]:
    """The ABI's MATMUL types numba has no _gemv_ or _decode_ kernel for."""
    return [t.name for t in sorted(abi.MATMUL_TYPES)
            if not all(prefix + t.name.lower() in globals() for prefix in ("_gemv_", "_decode_"))]


# out[r] = W[r] . X (+ bias[r]) for rows lo <= r < hi of wtype blocks, X one token's q8 row.
# (No error for other types: a raise would keep the parallel loop it is inlined in from
# running in parallel.)
_gemv_rows = _type_switch("_gemv_rows", "w, lo, hi, xd, xs, xq, bias, out", "_gemv_")
# One row of wtype blocks -> weight[i] = scale[i // 32] * q[i] + offset[i // 32].
decode_row = _type_switch("decode_row", "row, q, scale, offset", "_decode_")
# The types both kernels handle, and those the embedding lookup reads.
MATMUL_TYPES = frozenset(int(t) for t in abi.MATMUL_TYPES) - {
    int(GGMLType[name]) for name in missing_kernels()}
EMBED_TYPES = (F32, F16, *sorted(MATMUL_TYPES))


# --- activations ------------------------------------------------------------------------------

@_kernel
def quantize_q8(x, n: int, d, s, qs) -> None:
    """Rows x[:n] (width a multiple of 32) -> q8 blocks: d[:n], s[:n] (rows, width // 32)
    and qs[:n] (rows, width) int8, as lila_quantize_fn."""
    for t in range(n):
        for b in range(x.shape[1] // 32):
            amax = _ZERO
            for i in range(b * 32, b * 32 + 32):
                amax = max(amax, abs(x[t, i]))
            scale = amax / _Q8_MAX
            inverse = _ONE / scale if scale > 0 else _ZERO
            total = 0
            for i in range(b * 32, b * 32 + 32):
                code = np.int8(np.rint(x[t, i] * inverse))
                qs[t, i] = code
                total += code
            d[t, b] = scale
            s[t, b] = scale * np.float32(total)


# --- weight x activation products -------------------------------------------------------------

@_inline
def _codes_dot4(q, start, x0, x1, x2, x3, lanes) -> tuple[np.int32, np.int32, np.int32, np.int32]:
    """sum(q[start + i] * x[start + i]) for four tokens' rows x at once, each code loaded
    once."""
    s0 = s1 = s2 = s3 = np.int32(0)
    for i in range(start, start + lanes):
        code = q[i]
        s0 = np.int32(s0 + np.int32(code * x0[i]))
        s1 = np.int32(s1 + np.int32(code * x1[i]))
        s2 = np.int32(s2 + np.int32(code * x2[i]))
        s3 = np.int32(s3 + np.int32(code * x3[i]))
    return s0, s1, s2, s3


@_kernel
def _gemm_rows(wtype: int, w, lo: int, hi: int, tokens_d, tokens_s, tokens_q, first: int,
               count: int, bias, out) -> None:
    """out[first + t, r] = W[r] . X[t] (+ bias[r]) for rows lo <= r < hi, t < count, the
    tokens as _gemm_tokens lays them out."""
    padded, width = tokens_q.shape
    blocks, lanes = width // 32, _lanes(tokens_q, 32)
    q = np.empty(width, np.int16)
    scale, offset = np.empty(blocks, np.float32), np.empty(blocks, np.float32)
    acc = np.empty(padded, np.float32)
    for r in range(lo, hi):
        decode_row(wtype, w[r], q, scale, offset)
        acc[:] = 0
        for t in range(0, padded, 4):
            rows_d, rows_s = tokens_d[t:t + 4], tokens_s[t:t + 4]
            for b in range(_u64(blocks)):
                sums = _codes_dot4(q, b * _BLOCK, tokens_q[t], tokens_q[t + 1], tokens_q[t + 2],
                                   tokens_q[t + 3], lanes)
                for j in range(4):
                    acc[t + j] += _block_product(scale[b], offset[b], sums[j], rows_d[j, b],
                                                 rows_s[j, b])
        for t in range(count):
            out[first + t, r] = acc[t] + bias[r] if bias.size else acc[t]


@_kernel
def _gemm_tokens(xd, xs, xq, first: int, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The GEMM's copy of tokens first.. first + count: in groups of four, the last padded
    with zero tokens; codes as int16, as int16 x int16 products are what vectorizes."""
    padded = (count + 3) // 4 * 4
    tokens_q = np.zeros((padded, xq.shape[1]), np.int16)
    tokens_d = np.zeros((padded, xd.shape[1]), np.float32)
    tokens_s = np.zeros((padded, xd.shape[1]), np.float32)
    for t in range(count):
        for k in range(xq.shape[1]):
            tokens_q[t, k] = xq[first + t, k]
        for b in range(xd.shape[1]):
            tokens_d[t, b], tokens_s[t, b] = xd[first + t, b], xs[first + t, b]
    return tokens_d, tokens_s, tokens_q


@_parallel_kernel
def _matmul(wtype: int, w, xd, xs, xq, first: int, count: int, tokens_d, tokens_s, tokens_q,
            bias, out) -> None:
    # One parallel kernel for both paths (each costs seconds to compile); the GEMM's when
    # tokens_q holds the tokens (_gemm_tokens), else the GEMV's.
    rows = w.shape[0]
    for tile in prange((rows + _ROW_TILE - 1) // _ROW_TILE):
        lo, hi = tile * _ROW_TILE, min(rows, (tile + 1) * _ROW_TILE)
        if tokens_q.shape[0]:
            _gemm_rows(wtype, w, lo, hi, tokens_d, tokens_s, tokens_q, first, count, bias, out)
        else:
            for t in range(first, first + count):
                _gemv_rows(wtype, w, _u64(lo), _u64(hi), xd[t], xs[t], xq[t], bias, out[t])


_NO_TOKENS = (np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32),
              np.zeros((0, 0), np.int16))


def matmul(wtype: int, w: np.ndarray, xd: np.ndarray, xs: np.ndarray, xq: np.ndarray,
           first: int, count: int, bias: np.ndarray, out: np.ndarray) -> None:
    """out[t, r] = sum_k W[r, k] * X[t, k] (+ bias[r]) for tokens first <= t < first + count,
    in parallel over the weight's rows. w: (rows, row bytes) blocks of wtype; xd, xs, xq:
    the tokens' q8 activations (quantize_q8); bias: empty for none."""
    if wtype not in MATMUL_TYPES:
        raise ValueError(f"no numba kernel for weight type {wtype}")
    tokens = _gemm_tokens(xd, xs, xq, first, count) if count >= GEMM_MIN_TOKENS else _NO_TOKENS
    _matmul(wtype, w, xd, xs, xq, first, count, *tokens, bias, out)


# --- embedding --------------------------------------------------------------------------------

@_kernel
def embed(wtype: int, table, tokens, n: int, scale: float, out) -> None:
    """out[t] = (row tokens[t] of table, dequantized) * scale, t < n. table: (rows, row
    bytes) of one of EMBED_TYPES."""
    if wtype not in EMBED_TYPES:
        raise ValueError("no numba embedding lookup for this type")
    width = out.shape[1]
    q = np.empty(width, np.int16)
    block_scale, block_offset = np.empty(width // 32, np.float32), np.empty(width // 32, np.float32)
    factor = np.float32(scale)
    for t in range(n):
        row = table[tokens[t]]
        if wtype == F32:
            values = row.view(np.float32)
            for i in range(width):
                out[t, i] = values[i] * factor
        elif wtype == F16:
            for i in range(width):
                out[t, i] = _f16_at(row, _u64(2 * i)) * factor
        else:
            decode_row(wtype, row, q, block_scale, block_offset)
            for i in range(width):
                value = block_scale[i // 32] * np.float32(q[i]) + block_offset[i // 32]
                out[t, i] = value * factor


# --- row ops ----------------------------------------------------------------------------------

@_kernel
def rmsnorm(x, n: int, weight, eps: float, heads: int, out) -> None:
    """out[t] = x[t] / sqrt(mean(x[t]^2) + eps) * weight, over each of `heads` equal slices
    of the row (weight has one slice's length). out may be x."""
    size = weight.size
    for t in range(n):
        for h in range(heads):
            start = h * size
            total = 0.0                 # float64: no rounding worth the name at any length
            for i in range(start, start + size):
                total += np.float64(x[t, i]) * np.float64(x[t, i])
            inverse_rms = np.float32(1.0 / math.sqrt(total / size + eps))
            for i in range(size):
                out[t, start + i] = (x[t, start + i] * inverse_rms) * weight[i]


@_kernel
def rope(x, n: int, pos0: int, heads: int, head_dim: int, rot_dim: int, inv_freq,
         scale: float, neox: bool) -> None:
    """Rotate, in place, the first rot_dim dims of each head of rows x[:n] (positions
    pos0..): pair j turns by angle position * scale * inv_freq[j]. neox: pairs
    (j, j + rot_dim / 2); otherwise (2j, 2j + 1)."""
    half = rot_dim // 2
    for t in range(n):
        position = (pos0 + t) * scale
        for j in range(half):
            angle = position * inv_freq[j]     # float64, as the reference and native
            cos, sin = np.float32(math.cos(angle)), np.float32(math.sin(angle))
            first, second = (j, j + half) if neox else (2 * j, 2 * j + 1)
            for h in range(heads):
                a, b = x[t, h * head_dim + first], x[t, h * head_dim + second]
                x[t, h * head_dim + first] = a * cos - b * sin
                x[t, h * head_dim + second] = b * cos + a * sin


@_kernel
def silu_mul(gate, up, n: int, out) -> None:
    """out = gate * sigmoid(gate) * up, rows < n; sigmoid as 0.5 + 0.5 tanh(x / 2), which
    cannot overflow. out may alias."""
    for t in range(n):
        for i in range(gate.shape[1]):
            g = gate[t, i]
            out[t, i] = g * (_HALF + _HALF * np.tanh(_HALF * g)) * up[t, i]


@_kernel
def gelu_mul(gate, up, n: int, out) -> None:
    """out = gelu(gate) * up, rows < n, gelu the tanh approximation. out may alias."""
    for t in range(n):
        for i in range(gate.shape[1]):
            g = gate[t, i]
            inner = _GELU_C * (g + _GELU_CUBIC * g * g * g)
            out[t, i] = _HALF * g * (_ONE + np.tanh(inner)) * up[t, i]


@_kernel
def add(a, b, n: int, out) -> None:
    """out = a + b, rows < n. out may alias."""
    for t in range(n):
        for i in range(a.shape[1]):
            out[t, i] = a[t, i] + b[t, i]


@_kernel
def lora_up(bt, coef, n: int, out) -> None:
    """out[t, r] += sum_j coef[t, j] * Bt[j, r], rows t < n: the memory fabric's B product.
    Bt as the fabric stacks it: Q8_0, block-major, block k of rank row j at bt[k, 34 j:]."""
    width = out.shape[1]
    for k in range(bt.shape[0]):
        for j in range(coef.shape[1]):
            d = _f16_at(bt[k], _u64(j * 34))
            for i in range(min(32, width - k * 32)):
                w = d * np.float32(np.int8(bt[k, j * 34 + 2 + i]))
                for t in range(n):
                    out[t, k * 32 + i] += coef[t, j] * w


# --- attention --------------------------------------------------------------------------------

@_kernel
def store_f16(x, n: int, cache, pos0: int) -> None:
    """cache[pos0 + t] = fp16 bits of x[t], t < n."""
    for t in range(n):
        for i in range(x.shape[1]):
            cache[pos0 + t, i] = f32_to_f16(x[t, i])


@_inline
def _f16_row(cached, start: int, row) -> None:
    """row[:] = the fp16 values cached[start:start + row.size] as float32."""
    offset = _u64(start)
    for i in range(_u64(row.size)):
        row[i] = f16_to_f32(np.int64(cached[offset + i]))


@njit(cache=True, nogil=True, fastmath={"reassoc"})
def _attend(q, k_cache, v_cache, t: int, kv: int, position: int, group: int, head_dim: int,
            scale: float, window: int, out) -> None:
    """out[t] for the query heads of kv head kv at `position`, over the cached rows.
    (fastmath reassoc: LLVM may then split the fp32 dot products into vector lanes.)"""
    first = max(0, position + 1 - window) if window > 0 else 0
    count = position + 1 - first
    factor = np.float32(scale)
    scores = np.empty((group, count), np.float32)
    row = np.empty(head_dim, np.float32)
    queries = q[t, kv * group * head_dim:(kv + 1) * group * head_dim].reshape(group, head_dim)
    # each cached row is converted from fp16 once for all the query heads that share it
    for j in range(count):
        _f16_row(k_cache[first + j], kv * head_dim, row)
        for g in range(group):
            dot = _ZERO
            for i in range(head_dim):
                dot += queries[g, i] * row[i]
            scores[g, j] = dot * factor
    outputs = out[t, kv * group * head_dim:(kv + 1) * group * head_dim].reshape(group, head_dim)
    outputs[:] = 0.0
    for g in range(group):
        peak = scores[g].max()
        total = _ZERO
        for j in range(count):
            scores[g, j] = np.exp(scores[g, j] - peak)
            total += scores[g, j]
        scores[g] /= total
    for j in range(count):
        _f16_row(v_cache[first + j], kv * head_dim, row)
        for g in range(group):
            p = scores[g, j]
            for i in range(head_dim):
                outputs[g, i] += p * row[i]


@_parallel_kernel
def attention(q, k, v, n: int, pos0: int, k_cache, v_cache, heads: int, head_dim: int,
              scale: float, window: int, out) -> None:
    """Store k[:n], v[:n] in the fp16 caches at positions pos0.., then causal attention
    of each query head over the cache: out[t, head] = softmax(scale * q.K^T) V over
    positions <= pos0 + t (and > pos0 + t - window when window > 0). The caches hold
    kv_heads * head_dim values per position; query head h reads kv head
    h // (heads // kv_heads)."""
    store_f16(k, n, k_cache, pos0)
    store_f16(v, n, v_cache, pos0)
    kv_heads = k_cache.shape[1] // head_dim
    for task in prange(n * kv_heads):
        t, kv = task // kv_heads, task % kv_heads
        _attend(q, k_cache, v_cache, t, kv, pos0 + t, heads // kv_heads, head_dim, scale,
                window, out)
