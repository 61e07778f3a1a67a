"""The native library: hand-written kernels and the plan executor, loaded through cffi.

`library()` loads it once per process. It is None where it was not built (no compiler,
an architecture without kernels yet); `unavailable_reason()` then says why.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path



class Native:
    """The cffi handle (ffi) and the loaded library (lib)."""

    def __init__(self, path: Path):
        from lila.native._ffi import ffi
        self.ffi = ffi
        # Never unmapped, even when this object is collected at interpreter exit before a
        # backend whose threads and destructor still run the library's code.
        self.lib = ffi.dlopen(str(path), ffi.RTLD_NOW | ffi.RTLD_NODELETE)
        self.path = path

    def kernels(self, family: str):
        """The family's kernel table (a cdata struct pointer), or None if not built."""
        table = self.lib.lila_kernel_table(family.encode())
        return None if table == self.ffi.NULL else table

    def kernel_symbols(self, family: str) -> dict[str, str | None]:
        """Every entry of the family's table ("gemv[Q4_1]", "rmsnorm") and the symbol that
        implements it ("lila_gemv_q4_1_avx2"), None where the entry is empty."""
        from lila.formats.quants import GGMLType
        table, symbols = self.kernels(family), {}
        for field, info in self.ffi.typeof("lila_kernels").fields:
            if field == "name":
                continue
            entry = getattr(table, field)
            if info.type.kind == "array":
                for ggml_type in GGMLType:
                    if int(ggml_type) < info.type.length and entry[ggml_type] != self.ffi.NULL:
                        symbols[f"{field}[{ggml_type.name}]"] = self._symbol(entry[ggml_type])
            else:
                symbols[field] = self._symbol(entry) if entry != self.ffi.NULL else None
        return symbols

    def _symbol(self, fn) -> str | None:
        name = self.lib.lila_kernel_name(self.ffi.cast("void *", fn))
        return None if name == self.ffi.NULL else self.ffi.string(name).decode()


@lru_cache(maxsize=1)
def _load() -> tuple[Native | None, str]:
    from lila.native.build import FFI_MODULE, LIBRARY, PACKAGE_DIR
    path = PACKAGE_DIR / LIBRARY
    if not path.exists() or not (PACKAGE_DIR / f"{FFI_MODULE}.py").exists():
        return None, "native kernels not built (run `make setup` or `python -m lila.native.build`)"
    try:
        return Native(path), ""
    except Exception as e:   # cffi reports a bad cdef or library with several types
        return None, f"native library did not load: {e}"


def library() -> Native | None:
    return _load()[0]


def unavailable_reason() -> str:
    return _load()[1]
