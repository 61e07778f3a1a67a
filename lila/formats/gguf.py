"""GGUF reader: the header parsed with struct, tensor data left in a read-only mmap.

GGUF layout (little-endian, versions 2 and 3):

    magic "GGUF" | version u32 | tensor_count u64 | kv_count u64
    kv_count x   (key: string, value_type u32, value)
    tensor_count x (name: string, n_dims u32, ne[n_dims] u64, ggml_type u32, offset u64)
    padding to `general.alignment` | tensor data (offsets are relative to here)

    string = length u64 + UTF-8 bytes (no terminator)
    array  = element_type u32 + count u64 + elements

GGUF parsers have a long history of integer-overflow bugs, so every count,
length, shape and offset is checked against the bytes the file actually holds
before it is used, and nothing is allocated in proportion to a claimed count.
Every problem becomes a one-line ModelFormatError / UnsupportedError naming the file.
"""

from __future__ import annotations

import array
import enum
import mmap
import os
import stat
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from lila.errors import LilaError, ModelFormatError, UnsupportedError
from lila.formats.quants import BLOCK_SIZE, SUPPORTED_TYPES, TYPE_SIZE, GGMLType, dequantize

__all__ = ["GGMLType", "GGUFFile", "TensorInfo", "ValueType"]

MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_ALIGNMENT = 1 << 30
MAX_NAME_BYTES = 65535  # metadata keys and tensor names
MAX_STRING_BYTES = 64 << 20  # a string value (some files embed a whole tokenizer.json)
MAX_ARRAY_DEPTH = 3
MAX_TENSORS = 1 << 20
MAX_KEYS = 1 << 20
# Python objects built from metadata (strings, nested arrays): 8M is ~30x the largest
# real vocabulary and caps a hostile file's memory at a few hundred MiB.
MAX_METADATA_OBJECTS = 1 << 23

_HEADER = struct.Struct("<4sIQQ")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
# Smallest possible encodings, to bound claimed counts by the bytes left.
_MIN_KV_BYTES = 8 + 4 + 1  # empty key, type, one-byte value
_MIN_TENSOR_INFO_BYTES = 8 + 4 + 8 + 4 + 8  # empty name, n_dims, one dim, type, offset
_MIN_ARRAY_BYTES = 4 + 8

# Magics of the pre-GGUF ggml formats, as they appear on disk.
_LEGACY_MAGICS = {b"lmgg": "ggml", b"fmgg": "ggmf", b"tjgg": "ggjt", b"algg": "ggla"}


class ValueType(enum.IntEnum):
    """GGUF metadata value types."""

    UINT8 = 0
    INT8 = 1
    UINT16 = 2
    INT16 = 3
    UINT32 = 4
    INT32 = 5
    FLOAT32 = 6
    BOOL = 7
    STRING = 8
    ARRAY = 9
    UINT64 = 10
    INT64 = 11
    FLOAT64 = 12


_V = ValueType
# Scalar value types: struct format for single values, numpy dtype for arrays.
_SCALAR_FORMATS: dict[ValueType, str] = {
    _V.UINT8: "B", _V.INT8: "b", _V.UINT16: "H", _V.INT16: "h", _V.UINT32: "I", _V.INT32: "i",
    _V.FLOAT32: "f", _V.BOOL: "B", _V.UINT64: "Q", _V.INT64: "q", _V.FLOAT64: "d",
}
_SCALAR_STRUCTS = {t: struct.Struct("<" + f) for t, f in _SCALAR_FORMATS.items()}
_SCALAR_DTYPES = {t: np.dtype("<" + f) for t, f in _SCALAR_FORMATS.items()}


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of the file. `shape` is in numpy order (GGUF `ne` reversed):
    a 2-D weight is (out_features, in_features); `offset` is absolute in the file."""

    name: str
    shape: tuple[int, ...]
    ggml_type: GGMLType
    offset: int
    nbytes: int


def _q(s: str, limit: int = 80) -> str:
    """Quote a file-supplied string for a one-line message (repr escapes newlines)."""
    return repr(s if len(s) <= limit else s[: limit - 3] + "...")


def _show_path(path: str) -> str:
    return path if path.isprintable() else repr(path)


class _HeaderParser:
    """Walks the header from the start of the map; `pos` only moves forward."""

    def __init__(self, mm: mmap.mmap, size: int, path: str):
        self.mm, self.size, self.path = mm, size, path
        self.pos = 0
        self.objects = 0  # budget for MAX_METADATA_OBJECTS

    def error(self, msg: str) -> ModelFormatError:
        return ModelFormatError(f"{self.path}: {msg}")

    def truncated(self, what: str) -> ModelFormatError:
        return self.error(f"file ends at byte {self.size} inside {what} (truncated download?)")

    def left(self) -> int:
        return self.size - self.pos

    def unpack(self, s: struct.Struct, what: str) -> Any:
        if s.size > self.left():
            raise self.truncated(what)
        (v,) = s.unpack_from(self.mm, self.pos)
        self.pos += s.size
        return v

    def string(self, what: str, cap: int) -> str:
        n = self.unpack(_U64, what)
        if n > cap:
            raise self.error(f"{what} claims a length of {n} bytes (limit {cap})")
        if n > self.left():
            raise self.truncated(what)
        raw = self.mm[self.pos : self.pos + n]
        self.pos += n
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self.error(f"{what} is not valid UTF-8") from None

    def name(self, what: str) -> str:
        """A metadata key or tensor name. Real ones are identifiers; one with control
        characters can only be damage, and would reach messages and terminals raw."""
        name = self.string(what, MAX_NAME_BYTES)
        if not name.isprintable():
            raise self.error(f"{what} {_q(name)} holds control characters")
        return name

    def count_objects(self, n: int, what: str) -> None:
        self.objects += n
        if self.objects > MAX_METADATA_OBJECTS:
            raise self.error(f"{what}: metadata holds more than {MAX_METADATA_OBJECTS} strings/arrays")

    def value(self, vtype: int, what: str, depth: int = 0) -> Any:
        if vtype == _V.STRING:
            return self.string(what, MAX_STRING_BYTES)
        if vtype == _V.ARRAY:
            return self.array(what, depth + 1)
        if vtype not in _SCALAR_STRUCTS:
            raise self.error(f"{what} has unknown value type {vtype}")
        v = self.unpack(_SCALAR_STRUCTS[vtype], what)
        if vtype == _V.BOOL:
            if v > 1:
                raise self.error(f"{what} is a bool with byte value {v} (expected 0 or 1)")
            return bool(v)
        return v

    def array(self, what: str, depth: int) -> Any:
        if depth > MAX_ARRAY_DEPTH:
            raise self.error(f"{what} nests arrays deeper than {MAX_ARRAY_DEPTH} levels")
        etype = self.unpack(_U32, what)
        n = self.unpack(_U64, what)
        if etype == _V.STRING:
            return self.string_array(n, what)
        if etype == _V.ARRAY:
            if n > self.left() // _MIN_ARRAY_BYTES:
                raise self.truncated(f"{what} (array of {n} arrays)")
            self.count_objects(n, what)
            return [self.array(f"{what}[{i}]", depth + 1) for i in range(n)]
        dtype = _SCALAR_DTYPES.get(etype)  # type: ignore[call-overload]
        if dtype is None:
            raise self.error(f"{what} is an array of unknown value type {etype}")
        if n > self.left() // dtype.itemsize:
            raise self.truncated(f"{what} (array of {n} {ValueType(etype).name})")
        # A read-only view into the map, like the tensors: no copy of big arrays.
        arr = np.frombuffer(self.mm, dtype=dtype, count=n, offset=self.pos)
        self.pos += n * dtype.itemsize
        if etype == _V.BOOL:
            if n and arr.max() > 1:
                raise self.error(f"{what} holds a bool that is neither 0 nor 1")
            arr = arr.view(np.bool_)
        return arr

    def string_array(self, n: int, what: str) -> list[str]:
        # The hot path of the header (49k tokens and 49k merges in even a small model):
        # Python only walks the chain of length prefixes; numpy and one decode do the rest.
        if n > self.left() // 8:
            raise self.truncated(f"{what} (array of {n} strings)")
        self.count_objects(n, what)
        if n == 0:
            return []
        heads = self._string_heads(n, what)
        lengths = np.diff(heads) - 8
        longest = int(lengths.argmax())
        if lengths[longest] > MAX_STRING_BYTES:
            raise self.error(
                f"{what}[{longest}] claims a length of {lengths[longest]} bytes (limit {MAX_STRING_BYTES})")
        self.pos = int(heads[-1])
        return self._decode_strings(heads, what)

    def _string_heads(self, n: int, what: str) -> np.ndarray:
        """Offsets of the n length prefixes, then the offset just past the last string."""
        mm, pos = self.mm, self.pos
        unpack = _U64.unpack_from
        heads = array.array("q")
        append = heads.append
        try:
            for _ in range(n):
                append(pos)
                pos += 8 + unpack(mm, pos)[0]
            if pos > self.size:
                raise OverflowError
            append(pos)
        except (struct.error, OverflowError):
            # Either the file ends inside the last prefix, or the string before it ran past the end.
            i = len(heads) - 1 - (heads[-1] > self.size)
            raise self.truncated(f"{what} (string {i} of {n})") from None
        return np.frombuffer(heads, dtype=np.int64)

    def _decode_strings(self, heads: np.ndarray, what: str) -> list[str]:
        base, n = int(heads[0]), len(heads) - 1
        region = np.frombuffer(self.mm, np.uint8, count=int(heads[-1]) - base, offset=base).copy()
        prefix = heads[:-1] - base
        # Turn each 8-byte prefix into one NUL separator: strict UTF-8 decoding of the
        # joined text then validates every string, as no sequence can span a NUL.
        region[prefix] = 0
        edges = np.zeros(len(region) + 1, dtype=np.int8)  # +1/-1 around each prefix's other 7 bytes
        edges[prefix + 1] = 1
        edges[prefix + 8] = -1
        drop = np.cumsum(edges[:-1], dtype=np.int8).view(np.bool_)
        joined = region[~drop].tobytes()
        if joined.count(0) == n:  # else some string holds a NUL itself
            try:
                return joined[1:].decode("utf-8").split("\0")
            except UnicodeDecodeError:
                pass  # located below
        out: list[str] = []
        try:
            for a, b in zip((heads[:-1] + 8).tolist(), heads[1:].tolist()):
                out.append(self.mm[a:b].decode("utf-8"))
        except UnicodeDecodeError:
            raise self.error(f"{what}[{len(out)}] is not valid UTF-8") from None
        return out


# Linux's MADV_COLD (5.4+): deactivate the pages, reclaim them first. Python's mmap module
# names it only from 3.12 on where at all.
MADV_COLD = 20


def _parse(mm: mmap.mmap, size: int, path: str) -> tuple[int, int, dict[str, Any], dict[str, TensorInfo], int]:
    """Parse and validate everything but the tensor data itself."""
    p = _HeaderParser(mm, size, path)
    magic = bytes(mm[:4])
    if magic != MAGIC:
        if magic in _LEGACY_MAGICS:
            raise UnsupportedError(
                f"{path}: is a pre-GGUF '{_LEGACY_MAGICS[magic]}' file; convert it to GGUF with llama.cpp")
        raise ModelFormatError(f"{path}: not a GGUF file (starts with {magic!r}, expected {MAGIC!r})")
    if size < _HEADER.size:
        raise p.truncated("the GGUF header")
    _, version, n_tensors, n_kv = _HEADER.unpack_from(mm, 0)
    if version not in SUPPORTED_VERSIONS:
        swapped = int.from_bytes(version.to_bytes(4, "little"), "big")
        if swapped in (1, 2, 3):
            raise UnsupportedError(
                f"{path}: is a big-endian GGUF (version {swapped}); Lila reads little-endian GGUF only")
        hint = " (an early 2023 format: re-convert the model with a current llama.cpp)" if version == 1 else ""
        raise UnsupportedError(f"{path}: GGUF version {version} is not supported{hint}; Lila reads versions 2 and 3")
    p.pos = _HEADER.size
    if n_tensors > MAX_TENSORS or n_kv > MAX_KEYS:
        raise p.error(f"header claims {n_tensors} tensors and {n_kv} metadata keys (limits {MAX_TENSORS}, {MAX_KEYS})")
    if n_tensors * _MIN_TENSOR_INFO_BYTES + n_kv * _MIN_KV_BYTES > p.left():
        raise p.truncated(f"the header, which claims {n_tensors} tensors and {n_kv} metadata keys")

    metadata: dict[str, Any] = {}
    for i in range(n_kv):
        key = p.name(f"the key of metadata entry {i}")
        what = f"metadata key {_q(key)}"
        if key in metadata:
            raise p.error(f"duplicate {what}")
        metadata[key] = p.value(p.unpack(_U32, what), what)

    alignment = _alignment(metadata, p)
    raw_infos = [_tensor_info(p, i, alignment) for i in range(n_tensors)]
    data_offset = -(-p.pos // alignment) * alignment

    tensors: dict[str, TensorInfo] = {}
    for name, shape, ggml_type, rel, nbytes in raw_infos:
        if name in tensors:
            raise p.error(f"duplicate tensor name {_q(name)}")
        if rel + nbytes > size - data_offset:
            raise p.error(f"tensor {_q(name)} extends past the end of the file (truncated download?)")
        tensors[name] = TensorInfo(name, shape, ggml_type, data_offset + rel, nbytes)
    _check_overlaps(tensors, p)
    return version, alignment, metadata, tensors, data_offset


def _alignment(metadata: dict[str, Any], p: _HeaderParser) -> int:
    a = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if type(a) is not int or a < 1 or a > MAX_ALIGNMENT or a & (a - 1):
        raise p.error(f"general.alignment is {_q(str(a))}; it must be a power of two up to {MAX_ALIGNMENT}")
    return a


def _tensor_info(p: _HeaderParser, i: int, alignment: int) -> tuple[str, tuple[int, ...], GGMLType, int, int]:
    name = p.name(f"the name of tensor {i}")
    what = f"tensor {_q(name)}"
    n_dims = p.unpack(_U32, what)
    if not 1 <= n_dims <= MAX_DIMS:
        raise p.error(f"{what} has {n_dims} dimensions (expected 1 to {MAX_DIMS})")
    if 8 * n_dims > p.left():
        raise p.truncated(what)
    ne = struct.unpack_from(f"<{n_dims}Q", p.mm, p.pos)
    p.pos += 8 * n_dims
    type_id = p.unpack(_U32, what)
    rel = p.unpack(_U64, what)
    if min(ne) < 1:
        raise p.error(f"{what} has a zero dimension {list(ne)}")
    try:
        ggml_type = GGMLType(type_id)
    except ValueError:
        raise UnsupportedError(
            f"{p.path}: {what} has unknown ggml type id {type_id}; Lila does not know this type") from None
    block = BLOCK_SIZE[ggml_type]
    if ne[0] % block:
        raise p.error(f"{what} has rows of {ne[0]} elements, not a multiple of the {ggml_type.name} block size {block}")
    n_elements = 1
    for d in ne:  # Python ints cannot overflow; compare with the file size before any use
        n_elements *= d
    nbytes = n_elements // block * TYPE_SIZE[ggml_type]
    if nbytes > p.size:
        raise p.error(f"{what} of shape {list(reversed(ne))} needs {nbytes} bytes, more than the whole file")
    if rel % alignment:
        raise p.error(f"{what} data offset {rel} is not aligned to {alignment} bytes")
    return name, tuple(reversed(ne)), ggml_type, rel, nbytes


def _check_overlaps(tensors: dict[str, TensorInfo], p: _HeaderParser) -> None:
    by_offset = sorted(tensors.values(), key=lambda t: t.offset)
    for a, b in zip(by_offset, by_offset[1:]):
        if a.offset + a.nbytes > b.offset:
            raise p.error(f"tensors {_q(a.name)} and {_q(b.name)} overlap in the file")


@dataclass(frozen=True)
class FileChange:
    """What happened to a mapped file on disk. in_place: the mapped bytes themselves
    changed (truncated, overwritten), so the weights read from them can't be trusted."""
    description: str
    in_place: bool


def _identity(st: os.stat_result) -> tuple[int, int, int, int]:
    """Which file, and which version of it: device, inode, size, modification time."""
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def _unmap(mm: mmap.mmap) -> None:
    try:
        mm.close()
    except BufferError:
        pass  # arrays handed out (tensors, metadata) still use the map; it goes with the last of them


class GGUFFile:
    """A GGUF file mapped read-only. Tensor data stays in the map: nothing is copied at open.

    Use `GGUFFile.open(path)` (also a context manager)."""

    path: str
    version: int
    alignment: int
    file_size: int
    data_offset: int
    metadata: dict[str, Any]
    tensors: dict[str, TensorInfo]

    def __init__(self, path: str, mm: mmap.mmap, size: int, identity: tuple[int, int, int, int],
                 location: str | os.PathLike):
        self.path, self._mm, self.file_size = path, mm, size
        self._identity, self._location = identity, location
        self.version, self.alignment, self.metadata, self.tensors, self.data_offset = _parse(mm, size, path)

    @classmethod
    def open(cls, path: str | os.PathLike) -> GGUFFile:
        """Map and validate `path`; raises a LilaError with a one-line message on any problem."""
        shown = _show_path(os.fsdecode(path))
        try:
            # Check before opening: opening a FIFO would block until someone writes to it.
            mode = os.stat(path).st_mode
            if stat.S_ISDIR(mode):
                raise LilaError(f"{shown}: is a directory, not a GGUF file")
            if not stat.S_ISREG(mode):
                raise LilaError(f"{shown}: is not a regular file")
            with open(path, "rb") as f:
                st = os.fstat(f.fileno())
                if st.st_size == 0:
                    raise ModelFormatError(f"{shown}: is empty, not a GGUF file")
                mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except FileNotFoundError:
            raise LilaError(f"{shown}: no such file") from None
        except ValueError:  # e.g. an embedded NUL byte
            raise LilaError(f"{shown}: is not a valid path") from None
        except PermissionError:
            raise LilaError(f"{shown}: permission denied") from None
        except OSError as e:
            raise LilaError(f"{shown}: cannot read ({e.strerror or e})") from None
        try:
            return cls(shown, mm, st.st_size, _identity(st), path)
        except BaseException:
            _unmap(mm)
            raise

    def _info(self, name: str) -> TensorInfo:
        if self._mm is None:
            raise LilaError(f"{self.path}: file is closed")
        info = self.tensors.get(name)
        if info is None:
            raise ModelFormatError(f"{self.path}: has no tensor {_q(name)}")
        return info

    def tensor_bytes(self, name: str) -> np.ndarray:
        """The tensor's raw bytes: a read-only uint8 view into the map (no copy)."""
        info = self._info(name)
        return np.frombuffer(self._mm, dtype=np.uint8, count=info.nbytes, offset=info.offset)

    def tensor(self, name: str) -> np.ndarray:
        """The tensor dequantized to float32, shaped `tensors[name].shape` (F32: a view)."""
        info = self._info(name)
        if info.ggml_type not in SUPPORTED_TYPES:
            raise UnsupportedError(
                f"{self.path}: tensor {_q(name)} has type {info.ggml_type.name}, which Lila does not support "
                f"(supported: {', '.join(t.name for t in sorted(SUPPORTED_TYPES))})")
        return dequantize(self.tensor_bytes(name), info.ggml_type, info.shape)

    def advise_unused(self, name: str) -> None:
        """Tell the OS that the tensor's pages will not be read again (a copy converted
        from them is used instead), so that under memory pressure they are reclaimed
        before the weights still in use. Only pages wholly inside the tensor; a hint, so
        a kernel without MADV_COLD (Linux < 5.4) or another OS is simply not told."""
        info = self._info(name)
        page = mmap.PAGESIZE
        start = -(-info.offset // page) * page
        end = (info.offset + info.nbytes) // page * page
        if end > start and hasattr(self._mm, "madvise"):
            try:
                self._mm.madvise(MADV_COLD, start, end - start)
            except OSError:
                pass

    def change(self) -> FileChange | None:
        """How the file at this path differs from the one mapped at open, or None."""
        try:
            st = os.stat(self._location)
        except OSError:
            return FileChange("is no longer there (the loaded copy is intact)", in_place=False)
        now = _identity(st)
        if now[:2] != self._identity[:2]:
            return FileChange("was replaced by another file (the loaded copy is intact)",
                              in_place=False)
        if now[2] != self._identity[2]:
            return FileChange(f"changed size on disk ({self._identity[2]} -> {now[2]} bytes)",
                              in_place=True)
        if now != self._identity:
            return FileChange("was modified on disk since it was loaded", in_place=True)
        return None

    def unsupported_tensors(self) -> list[tuple[str, str]]:
        """(name, type name) of every tensor whose type Lila cannot dequantize, in file order."""
        return [(t.name, t.ggml_type.name) for t in self.tensors.values() if t.ggml_type not in SUPPORTED_TYPES]

    def close(self) -> None:
        mm, self._mm = self._mm, None
        if mm is not None:
            _unmap(mm)

    def __enter__(self) -> GGUFFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
