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
        implements it ("lila_gemv_q4_1_avx2"), None where the entry is empty. Type-indexed
        entries are listed only where filled."""
        table, pointer, symbols = self.kernels(family), self.ffi.sizeof("void *"), {}
        for field, info in self.ffi.typeof("lila_kernels").fields:
            if field == "name":
                continue
            count = info.type.length if info.type.kind == "array" else 1
            for i in range(count):
                fn = self.kernel_at(table, info.offset + i * pointer)
                if fn != self.ffi.NULL or count == 1:
                    symbols[self.entry_name(info.offset + i * pointer)] = self.symbol(fn)
        return symbols

    def entry_name(self, offset: int) -> str:
        """The table entry at a byte offset in lila_kernels: "gemv[Q4_1]", "rmsnorm"."""
        from lila.formats.quants import GGMLType
        pointer = self.ffi.sizeof("void *")
        for field, info in self.ffi.typeof("lila_kernels").fields:
            if info.type.kind == "array" and 0 <= offset - info.offset < info.type.length * pointer:
                index = (offset - info.offset) // pointer
                type_name = GGMLType(index).name if index in GGMLType._value2member_map_ else index
                return f"{field}[{type_name}]"
            if offset == info.offset:
                return field
        raise ValueError(f"no kernel table entry at offset {offset}")

    def kernel_at(self, table, offset: int):
        """The function pointer at a byte offset in a kernel table (NULL if empty)."""
        return self.ffi.cast("void **", self.ffi.cast("char *", table) + offset)[0]

    def op_kernels(self, op) -> list[int] | None:
        """The table entries (byte offsets) a compiled op calls, as the executor chooses
        them; None for an op it cannot run."""
        slots = self.ffi.new("size_t[]", self.lib.LILA_MAX_OP_KERNELS)
        n = self.lib.lila_op_kernels(op, slots, len(slots))
        return None if n < 0 else list(slots[0:n])

    def symbol(self, fn) -> str | None:
        """The symbol of a kernel (a function pointer), None for NULL."""
        if fn == self.ffi.NULL:
            return None
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
