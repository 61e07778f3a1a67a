"""The kernel ABI as Python reads it: native/include/lila_kernels.h, through the cffi
declarations the build writes from it (lila/native/_ffi.py), so that the weight types
with kernels, their blocks and the lila_q8 layout are stated once, in the header.

The declarations need no compiled library: the numba backend reads them too. In a source
tree where the build has not run, the headers are parsed here instead.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lila.errors import LilaError
from lila.formats.quants import GGMLType


def _declarations():
    try:
        from lila.native._ffi import ffi
        return ffi
    except ImportError:
        pass
    from lila.native.build import NATIVE, declarations
    if not (NATIVE / "include").is_dir():
        raise LilaError("the native declarations were not generated; reinstall Lila "
                        "(or run `python -m lila.native.build`)")
    return declarations()


ffi = _declarations()


@dataclass(frozen=True)
class WeightType:
    """One row of LILA_WEIGHT_TYPES."""
    ggml: GGMLType
    block_values: int
    block_bytes: int
    matmul: bool          # gemv and gemm kernels; else the embedding lookup only


def _enum(tag: str) -> dict[str, int]:
    return ffi.typeof(f"enum {tag}").relements


def _constant(name: str) -> int:
    """An integer constant of the declarations (a member of an unnamed enum)."""
    if hasattr(ffi, "integer_const"):           # the module the build writes
        return ffi.integer_const(name)
    return getattr(ffi.dlopen(None), name)      # parsed here: any library handle has them


def _weight_types() -> dict[GGMLType, WeightType]:
    values, sizes, matmul = _enum("lila_block_values"), _enum("lila_block_bytes"), _enum("lila_matmul_type")
    return {GGMLType(id): WeightType(GGMLType(id), values[f"{name}_BLOCK_VALUES"],
                                     sizes[f"{name}_BLOCK_BYTES"],
                                     f"LILA_MATMUL_{name.removeprefix('LILA_')}" in matmul)
            for name, id in sorted(_enum("lila_weight_type").items(), key=lambda item: item[1])}


# Every type with kernels (matmul and embedding lookup), and those with matmul kernels;
# weights of any other type are converted to Q8_0 at load.
WEIGHT_TYPES: dict[GGMLType, WeightType] = _weight_types()
MATMUL_TYPES: frozenset[GGMLType] = frozenset(t for t, w in WEIGHT_TYPES.items() if w.matmul)
# Every type-indexed table of a kernel family has this many entries.
NTYPES: int = dict(ffi.typeof("lila_kernels").fields)["gemv"].type.length


def _numpy_dtype(ctype: str) -> np.dtype:
    """A cffi struct of numbers and arrays of numbers as the numpy dtype of its layout."""
    scalars = {"float": "<f4", "double": "<f8", "int8_t": "i1", "uint8_t": "u1",
               "int16_t": "<i2", "uint16_t": "<u2", "int32_t": "<i4", "uint32_t": "<u4"}
    names, formats, offsets = [], [], []
    for name, field in ffi.typeof(ctype).fields:
        t = field.type
        names.append(name)
        formats.append((scalars[t.item.cname], t.length) if t.kind == "array" else scalars[t.cname])
        offsets.append(field.offset)
    return np.dtype({"names": names, "formats": formats, "offsets": offsets,
                     "itemsize": ffi.sizeof(ctype)})


# lila_q8: one block of activations quantized to 8 bits (fields d, s, qs).
Q8_DTYPE: np.dtype = _numpy_dtype("lila_q8")
Q8_VALUES: int = Q8_DTYPE["qs"].shape[0]      # activations per block

# The memory fabric's namespaces: each op's adapters are scaled by their gates, kept per
# layer in rows of this many.
NAMESPACES: int = _constant("LILA_NAMESPACES")
# Gates below it are shut (0), in every backend.
GATE_FLOOR: float = 2.0 ** _constant("LILA_GATE_FLOOR_LOG2")
# Up to this many adapter ranks on one projection, B is multiplied transposed (rows of the
# rank running along the output); beyond, as rows of the rank, one per output row.
TRANSPOSED_RANK: int = _constant("LILA_LORA_TRANSPOSED_RANK")
