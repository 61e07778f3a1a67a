"""Malformed GGUF files for robustness tests: a small valid file and byte-level mutations of it.

    data = base_file_bytes()                      # valid GGUF: metadata of every kind, 5 tensor types
    for description, bad in must_fail(data): ...  # each must end in a one-line LilaError
    for description, bad in may_parse(data): ...  # each must end in a LilaError or a clean parse

`layout(data)` locates every header field of a valid file, so new mutations can
aim at one field. Model-level and CLI-level suites build on these functions.
"""

from __future__ import annotations

import random
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import gguf

from lila.formats.gguf import GGMLType, ValueType
from lila.formats.quants import BLOCK_SIZE, TYPE_SIZE

Mutation = tuple[str, bytes]

# Names of equal length, so renaming one to another keeps the layout.
BASE_TENSORS: list[tuple[str, GGMLType, tuple[int, ...]]] = [
    ("tens.f32", GGMLType.F32, (2, 8)),
    ("tens.f16", GGMLType.F16, (3, 32)),
    ("tens.q80", GGMLType.Q8_0, (2, 64)),
    ("tens.q41", GGMLType.Q4_1, (3, 32)),
    ("tens.q4k", GGMLType.Q4_K, (2, 256)),
]
BASE_TOKENS = ["<s>", "hello", "wörld", "☃", ""]


# Byte offsets of the f16 scale fields inside one block of each quantized type.
F16_FIELDS: dict[GGMLType, tuple[int, ...]] = {
    GGMLType.Q4_0: (0,), GGMLType.Q4_1: (0, 2), GGMLType.Q5_0: (0,), GGMLType.Q5_1: (0, 2),
    GGMLType.Q8_0: (0,), GGMLType.Q2_K: (80, 82), GGMLType.Q3_K: (108,), GGMLType.Q4_K: (0, 2),
    GGMLType.Q5_K: (0, 2), GGMLType.Q6_K: (208,),
}


def random_blocks(ggml_type: GGMLType, n_blocks: int, rng: np.random.Generator) -> np.ndarray:
    """Random quantized blocks [n_blocks, TYPE_SIZE] whose f16 scales are finite."""
    size = TYPE_SIZE[ggml_type]
    raw = rng.integers(0, 256, size=(n_blocks, size), dtype=np.uint8)
    for at in F16_FIELDS.get(ggml_type, ()):
        raw[:, at : at + 2] = (rng.standard_normal(n_blocks) * 0.05).astype("<f2").view(np.uint8).reshape(-1, 2)
    return raw


def tensor_data(ggml_type: GGMLType, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Data for GGUFWriter.add_tensor: floats for F32/F16, else uint8 rows of raw blocks."""
    if ggml_type == GGMLType.F32:
        return rng.standard_normal(shape).astype(np.float32)
    if ggml_type == GGMLType.F16:
        return rng.standard_normal(shape).astype(np.float16)
    rows = int(np.prod(shape[:-1]))
    blocks = random_blocks(ggml_type, rows * shape[-1] // BLOCK_SIZE[ggml_type], rng)
    return blocks.reshape(*shape[:-1], shape[-1] // BLOCK_SIZE[ggml_type] * TYPE_SIZE[ggml_type])


def base_file_bytes(
    *,
    tensors: list[tuple[str, GGMLType, tuple[int, ...]]] = BASE_TENSORS,
    extra_metadata: dict[str, Any] | None = None,
    alignment: int = 32,
    seed: int = 0,
) -> bytes:
    """A valid GGUF file made by the gguf package's writer.

    It holds metadata of every value kind (general.alignment written explicitly)."""
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "base.gguf"
        w = gguf.GGUFWriter(path, arch="llama")
        w.add_custom_alignment(alignment)
        w.add_name("mutation base")
        w.add_uint32("test.u32a", 7)
        w.add_uint32("test.u32b", 8)
        w.add_int8("test.i8", -3)
        w.add_uint64("test.u64", 2**40)
        w.add_float32("test.f32", 0.5)
        w.add_float64("test.f64", -1.25)
        w.add_bool("test.flag", True)
        w.add_array("tokenizer.ggml.tokens", BASE_TOKENS)
        w.add_array("tokenizer.ggml.scores", [0.0, -1.0, -2.0, -3.0, -4.0])
        w.add_array("test.nested", [[1, 2], [3]])
        add_metadata(w, extra_metadata or {})
        for name, ggml_type, shape in tensors:
            data = tensor_data(ggml_type, shape, rng)
            raw_dtype = None if ggml_type in (GGMLType.F32, GGMLType.F16) else gguf.GGMLQuantizationType(int(ggml_type))
            w.add_tensor(name, data, raw_dtype=raw_dtype)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        return path.read_bytes()


def write_base_file(directory: str | Path, name: str = "base.gguf", **kwargs: Any) -> Path:
    """Write `base_file_bytes(**kwargs)` into `directory` and return its path."""
    path = Path(directory) / name
    path.write_bytes(base_file_bytes(**kwargs))
    return path


# --- where each field of a valid file sits ------------------------------------------

@dataclass
class KV:
    key: str
    key_len_at: int
    key_at: int
    type_at: int
    value_at: int  # for arrays: the element type; the count follows at +4
    vtype: int
    end: int


@dataclass
class TI:
    name: str
    name_len_at: int
    name_at: int
    n_dims_at: int
    dims_at: int
    type_at: int
    offset_at: int
    rel_offset: int


@dataclass
class Layout:
    kv: dict[str, KV] = field(default_factory=dict)
    tensors: dict[str, TI] = field(default_factory=dict)
    infos_end: int = 0
    data_offset: int = 0
    tensors_end: int = 0  # end of the last tensor's data (trailing padding follows)


def layout(data: bytes, alignment: int = 32) -> Layout:
    """Field offsets of a *valid* little-endian GGUF file (a plain walker, no checks)."""
    out = Layout()
    _, _, n_tensors, n_kv = struct.unpack_from("<4sIQQ", data, 0)
    pos = 24

    def skip_value(vtype: int, pos: int) -> int:
        if vtype == ValueType.STRING:
            return pos + 8 + struct.unpack_from("<Q", data, pos)[0]
        if vtype == ValueType.ARRAY:
            etype, count = struct.unpack_from("<IQ", data, pos)
            pos += 12
            for _ in range(count):
                pos = skip_value(etype, pos)
            return pos
        return pos + {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}[vtype]

    for _ in range(n_kv):
        (klen,) = struct.unpack_from("<Q", data, pos)
        key = data[pos + 8 : pos + 8 + klen].decode()
        type_at = pos + 8 + klen
        (vtype,) = struct.unpack_from("<I", data, type_at)
        end = skip_value(vtype, type_at + 4)
        out.kv[key] = KV(key, pos, pos + 8, type_at, type_at + 4, vtype, end)
        pos = end
    ends = []
    for _ in range(n_tensors):
        (nlen,) = struct.unpack_from("<Q", data, pos)
        name = data[pos + 8 : pos + 8 + nlen].decode()
        n_dims_at = pos + 8 + nlen
        (n_dims,) = struct.unpack_from("<I", data, n_dims_at)
        dims = struct.unpack_from(f"<{n_dims}Q", data, n_dims_at + 4)
        type_at = n_dims_at + 4 + 8 * n_dims
        ggml_type, rel = struct.unpack_from("<IQ", data, type_at)
        out.tensors[name] = TI(name, pos, pos + 8, n_dims_at, n_dims_at + 4, type_at, type_at + 4, rel)
        t = GGMLType(ggml_type)
        ends.append(rel + int(np.prod(dims)) // BLOCK_SIZE[t] * TYPE_SIZE[t])
        pos = type_at + 12
    out.infos_end = pos
    out.data_offset = -(-pos // alignment) * alignment
    out.tensors_end = out.data_offset + max(ends, default=0)
    return out


def put(data: bytes, at: int, fmt: str, value: Any) -> bytes:
    """`data` with struct `fmt` (little-endian unless it says otherwise) written at `at`."""
    buf = bytearray(data)
    struct.pack_into(fmt if fmt[0] in "<>" else "<" + fmt, buf, at, value)
    return bytes(buf)


def put_bytes(data: bytes, at: int, new: bytes) -> bytes:
    return data[:at] + new + data[at + len(new) :]


# --- the mutations -------------------------------------------------------------------

HUGE = (2**32, 2**40, 2**62, 2**63 - 1, 2**63, 2**64 - 1)


def truncations(data: bytes, *, header_points: int = 600, data_points: int = 40) -> list[tuple[int, bytes]]:
    """(length, prefix): every length up to `header_points` bytes, then a spread to the end."""
    lengths = set(range(min(header_points, len(data))))
    lengths.update(np.linspace(header_points, len(data) - 1, data_points, dtype=int).tolist())
    return [(n, data[:n]) for n in sorted(lengths)]


def must_fail(data: bytes) -> list[Mutation]:
    """Mutations of `base_file_bytes()` that no correct reader may accept."""
    lay = layout(data)
    kv, ti = lay.kv, lay.tensors
    t0, t1 = ti["tens.f32"], ti["tens.f16"]
    out: list[Mutation] = [
        ("wrong magic", put_bytes(data, 0, b"GGUX")),
        ("zero magic", put_bytes(data, 0, b"\0\0\0\0")),
        ("legacy ggjt magic", put_bytes(data, 0, b"tjgg")),
        ("big-endian version", put(data, 4, ">I", 3)),
    ]
    out += [(f"version {v}", put(data, 4, "I", v)) for v in (0, 1, 4, 2**31, 2**32 - 1)]
    out += [(f"tensor count {n}", put(data, 8, "Q", n)) for n in (10**6, *HUGE)]
    out += [(f"kv count {n}", put(data, 16, "Q", n)) for n in (10**6, *HUGE)]

    arch, tokens = kv["general.architecture"], kv["tokenizer.ggml.tokens"]
    scores, nested = kv["tokenizer.ggml.scores"], kv["test.nested"]
    for n in HUGE + (2**16, 65 << 20):
        out.append((f"key length {n}", put(data, arch.key_len_at, "Q", n)))
        out.append((f"string value length {n}", put(data, arch.value_at, "Q", n)))
        out.append((f"tensor name length {n}", put(data, t0.name_len_at, "Q", n)))
        out.append((f"string array element length {n}", put(data, tokens.value_at + 12, "Q", n)))
    out.append(("string value length past EOF", put(data, arch.value_at, "Q", len(data))))
    for n in HUGE + (10**9,):
        out.append((f"string array length {n}", put(data, tokens.value_at + 4, "Q", n)))
        out.append((f"f32 array length {n}", put(data, scores.value_at + 4, "Q", n)))
        out.append((f"nested array length {n}", put(data, nested.value_at + 4, "Q", n)))
        out.append((f"inner array length {n}", put(data, nested.value_at + 16, "Q", n)))
    for v in (13, 255, 2**31, 2**32 - 1):
        out.append((f"unknown value type {v}", put(data, kv["test.u32a"].type_at, "I", v)))
        out.append((f"unknown array element type {v}", put(data, scores.value_at, "I", v)))
    out.append(("bool byte 2", put(data, kv["test.flag"].value_at, "B", 2)))
    out.append(("duplicate key", put_bytes(data, kv["test.u32b"].key_at, b"test.u32a")))

    align = kv["general.alignment"]
    for v in (0, 3, 48, 2**31):
        out.append((f"alignment {v}", put(data, align.value_at, "I", v)))
    out.append(("alignment 64 (offsets misaligned)", put(data, align.value_at, "I", 64)))
    out.append(("alignment as float32", put(data, align.type_at, "I", ValueType.FLOAT32)))
    out.append(("alignment as bool", put(put(data, align.type_at, "I", ValueType.BOOL), align.value_at, "B", 1)))

    for v in (0, 5, 2**32 - 1):
        out.append((f"n_dims {v}", put(data, t0.n_dims_at, "I", v)))
    for v in (0, *HUGE):
        out.append((f"dim0 {v}", put(data, t0.dims_at, "Q", v)))
        out.append((f"dim1 {v}", put(data, t0.dims_at + 8, "Q", v)))
    out.append(("dims product wraps 2**64", put(put(data, t0.dims_at, "Q", 2**32), t0.dims_at + 8, "Q", 2**32)))
    out.append(("dims product wraps to small", put(put(data, t1.dims_at, "Q", 2**63), t1.dims_at + 8, "Q", 2)))
    out.append(("row not a multiple of the block", put(data, ti["tens.q80"].dims_at, "Q", 48)))
    for v in (4, 5, 42, 1000, 2**32 - 1):
        out.append((f"unknown ggml type {v}", put(data, t0.type_at, "I", v)))
    out.append(("F32 tensor retyped Q4_0 (row of 8)", put(data, t0.type_at, "I", GGMLType.Q4_0)))
    last = list(ti.values())[-1]
    past_eof = -(-(len(data) - lay.data_offset) // 32) * 32
    for v in (past_eof, past_eof + 2**20, 2**62, 2**64 - 32):
        out.append((f"offset {v}", put(data, last.offset_at, "Q", v)))
    for v in (1, 16, 31):
        out.append((f"offset misaligned by {v}", put(data, t1.offset_at, "Q", t1.rel_offset + v)))
    out.append(("overlapping tensors", put(data, t1.offset_at, "Q", t0.rel_offset)))
    out.append(("duplicate tensor name", put_bytes(data, t1.name_at, b"tens.f32")))

    out.append(("invalid UTF-8 in key", put_bytes(data, arch.key_at + 1, b"\xff")))
    out.append(("invalid UTF-8 in string value", put_bytes(data, arch.value_at + 9, b"\xc3")))
    out.append(("invalid UTF-8 in tensor name", put_bytes(data, t0.name_at + 5, b"\x80")))
    out.append(("invalid UTF-8 in string array", put_bytes(data, tokens.value_at + 12 + 8 + 3 + 8, b"\xfe")))
    out.append(("overlong UTF-8 in string array", put_bytes(data, tokens.value_at + 12 + 8 + 3 + 8, b"\xc0\x80")))
    out.append(("header cut before tensor data", data[: lay.infos_end]))
    out.append(("empty file", b""))
    out.append(("magic only", b"GGUF"))
    return out


def may_parse(data: bytes, *, flips: int = 300, seed: int = 1234) -> list[Mutation]:
    """Mutations that may be harmless: the reader must raise a LilaError or parse cleanly."""
    lay = layout(data)
    out: list[Mutation] = [
        ("kv count + 1", put(data, 16, "Q", len(lay.kv) + 1)),
        ("kv count - 1", put(data, 16, "Q", len(lay.kv) - 1)),
        ("tensor count + 1", put(data, 8, "Q", len(lay.tensors) + 1)),
        ("tensor count - 1", put(data, 8, "Q", len(lay.tensors) - 1)),
        ("alignment 16", put(data, lay.kv["general.alignment"].value_at, "I", 16)),
        ("garbage appended", data + bytes(range(256))),
    ]
    rng = random.Random(seed)
    for i in range(flips):
        buf = bytearray(data)
        for _ in range(rng.choice((1, 1, 2, 4))):
            at = rng.randrange(lay.infos_end)
            buf[at] ^= 1 << rng.randrange(8) if rng.random() < 0.5 else rng.randrange(1, 256)
        out.append((f"random header damage #{i}", bytes(buf)))
    return out


def deep_nesting_file(depth: int) -> bytes:
    """A valid-by-construction file whose metadata nests arrays `depth` levels deep."""
    value: Any = [1]
    for _ in range(depth - 1):
        value = [value]
    return base_file_bytes(extra_metadata={"test.deep": value})


def unsupported_type_file() -> bytes:
    """A well-formed file with tensors of types Lila lists but cannot dequantize."""
    return base_file_bytes(tensors=BASE_TENSORS + [
        ("tens.iq2", GGMLType.IQ2_XXS, (2, 256)),
        ("tens.tq1", GGMLType.TQ1_0, (1, 256)),
    ])


def add_metadata(writer: gguf.GGUFWriter, metadata: dict) -> None:
    """Write plain Python values with the GGUF type each naturally has."""
    for key, value in metadata.items():
        if isinstance(value, list):
            writer.add_array(key, value)
        elif isinstance(value, bool):
            writer.add_bool(key, value)
        elif isinstance(value, int):
            writer.add_uint32(key, value)
        elif isinstance(value, float):
            writer.add_float32(key, value)
        else:
            writer.add_string(key, value)
