"""The native library: hand-written kernels and the plan executor, loaded through cffi.

`library()` loads it once per process. It is None where it was not built (no compiler,
an architecture without kernels yet); `unavailable_reason()` then says why.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
LIBRARY = "liblila.so"
CDEF = "liblila.cdef"     # the declarations the library was built with, for cffi


class Native:
    """The cffi handle (ffi) and the loaded library (lib)."""

    def __init__(self, path: Path, cdef: str):
        import cffi
        self.ffi = cffi.FFI()
        self.ffi.cdef(cdef)
        self.lib = self.ffi.dlopen(str(path))
        self.path = path

    def kernels(self, family: str):
        """The family's kernel table (a cdata struct pointer), or None if not built."""
        table = self.lib.lila_kernel_table(family.encode())
        return None if table == self.ffi.NULL else table


@lru_cache(maxsize=1)
def _load() -> tuple[Native | None, str]:
    path, cdef = PACKAGE_DIR / LIBRARY, PACKAGE_DIR / CDEF
    if not path.exists() or not cdef.exists():
        return None, "native kernels not built (run `make setup` or `python -m lila.native.build`)"
    try:
        return Native(path, cdef.read_text()), ""
    except Exception as e:   # cffi reports a bad cdef or library with several types
        return None, f"native library did not load: {e}"


def library() -> Native | None:
    return _load()[0]


def unavailable_reason() -> str:
    return _load()[1]
