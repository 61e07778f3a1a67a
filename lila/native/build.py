"""Assemble and compile native/ into the shared library the native backends load.

    python -m lila.native.build [--out DIR] [--arch aarch64]

Sources: native/common/*.c, then native/<arch>/*.c and *.S for this machine's
architecture. The assembly is hand-written for every kernel family the folder has, so
no -march flag is used: the library runs on any CPU of the architecture, and the
executor picks the family at run time.

native/include/lila_kernels.h states the ABI's facts once (the weight types with kernels,
the lila_q8 layout); the build hands them on. It writes the cffi declarations of the
headers (lila/native/_ffi.py: Python's view of the ABI, written even where nothing can be
compiled, for the numba backend reads it too), and, for the assembly, lila_abi.inc with
the offsets and sizes it needs, in the build's temporary folder.

A machine without a C compiler gets a one-line notice and no library; Lila then runs on
its numba kernels. `--arch` cross-compiles (with <arch>-linux-gnu-gcc unless CC says
otherwise): a quick check that another architecture's kernels assemble. (`make test-arm64`
runs this build with an ARM64 Python under qemu instead, as a board's `pip install` would.)
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# Self-contained (no lila imports): setup.py runs this file before lila's dependencies
# are installed.
PACKAGE_DIR = Path(__file__).resolve().parent
LIBRARY = "liblila.so"
FFI_MODULE = "_ffi"       # cffi's pre-parsed declarations the library was built with
ROOT = PACKAGE_DIR.parents[1]
NATIVE = ROOT / "native"
HEADERS = ("lila_kernels.h", "lila_executor.h", "lila_cpu.h")   # in dependency order
ARCH_DIRS = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}
CFLAGS = ["-O2", "-fPIC", "-std=c11", "-D_GNU_SOURCE", "-Wall", "-Wextra", "-Werror",
          "-Wshadow", "-Wconversion", "-Wno-sign-conversion", "-pthread"]


class BuildError(Exception):
    pass


def sources(arch_dir: str) -> list[Path]:
    found = sorted((NATIVE / "common").glob("*.c"))
    for pattern in ("*.c", "*.S"):
        found += sorted((NATIVE / arch_dir).glob(pattern))
    return found


# One row of LILA_WEIGHT_TYPES in lila_kernels.h.
_WEIGHT_TYPE_ROW = re.compile(r"^\s*ROW\((\w+),\s*(\w+),\s*(\d+),\s*(\d+),\s*(\d+),\s*(MATMUL|EMBED),"
                              r"\s*__VA_ARGS__\)", re.MULTILINE)


def weight_types() -> list[tuple[str, int, int, int, str]]:
    """The rows of LILA_WEIGHT_TYPES: (NAME, type id, values per block, bytes per block,
    MATMUL or EMBED)."""
    text = (NATIVE / "include" / "lila_kernels.h").read_text()
    rows = [(name, int(id), int(values), int(size), kernels)
            for name, _, id, values, size, kernels in _WEIGHT_TYPE_ROW.findall(text)]
    if not rows:
        raise BuildError("lila_kernels.h has no LILA_WEIGHT_TYPES rows the build can read")
    return rows


def weight_type_cdef() -> str:
    """LILA_WEIGHT_TYPES as cffi can read it: enums of the type ids (the C side's enum
    lila_weight_type), of each type's block values and bytes, and of the ids of the
    MATMUL types. (Enums rather than constants: every kind of cffi FFI lists them.)"""
    rows = weight_types()

    def enum(tag: str, members: list[str]) -> str:
        return f"enum {tag} {{ {', '.join(members)} }};"
    return "\n".join([
        enum("lila_weight_type", [f"LILA_{name} = {id}" for name, id, *_ in rows]),
        enum("lila_block_values", [f"LILA_{name}_BLOCK_VALUES = {values}" for name, _, values, _, _ in rows]),
        enum("lila_block_bytes", [f"LILA_{name}_BLOCK_BYTES = {size}" for name, _, _, size, _ in rows]),
        enum("lila_matmul_type", [f"LILA_MATMUL_{name} = {id}" for name, id, _, _, kernels in rows
                                  if kernels == "MATMUL"]),
    ]) + "\n"


def cdef_text() -> str:
    """The declarations for cffi: the weight types, then what lies between the cdef
    markers of every header."""
    parts = [weight_type_cdef()]
    for header in HEADERS:
        text = (NATIVE / "include" / header).read_text()
        begin, end = text.index("/* cdef begin */"), text.index("/* cdef end */")
        parts.append(text[begin:end])
    return "\n".join(parts)


def declarations():
    """The headers' declarations, parsed by cffi (no library needed)."""
    import cffi
    ffi = cffi.FFI()
    ffi.cdef(cdef_text())
    return ffi


def abi_include(ffi) -> str:
    """lila_abi.inc: the offsets and sizes the assembly reads, as the C compiler sees
    them (native/common/abi_check.c asserts it at build time)."""
    lines = ["/* Written by lila/native/build.py from native/include/lila_kernels.h. */",
             "#ifndef LILA_ABI_INC", "#define LILA_ABI_INC"]
    for field in ("d", "s", "qs"):
        lines.append(f"#define LILA_Q8_{field.upper()} {ffi.offsetof('lila_q8', field)}")
    lines.append(f"#define LILA_Q8_BYTES {ffi.sizeof('lila_q8')}")
    for name, _, values, size, _ in weight_types():
        lines += [f"#define LILA_{name}_BLOCK_VALUES {values}", f"#define LILA_{name}_BLOCK_BYTES {size}"]
    return "\n".join(lines + ["#endif"]) + "\n"


def build(out_dir: Path = PACKAGE_DIR, *, arch: str | None = None, cc: str | None = None,
          verbose: bool = False) -> Path:
    """Build the library for arch (default: this machine's) into out_dir; raises
    BuildError with the reason if it cannot."""
    host = platform.machine().lower()
    arch = (arch or host).lower()
    arch_dir = ARCH_DIRS.get(arch)
    if arch_dir is None or not any((NATIVE / arch_dir).glob("*.S")):
        raise BuildError(f"no native kernels for {arch} yet")
    cross = ARCH_DIRS.get(host) != arch_dir
    cc = cc or os.environ.get("CC") or (f"{arch}-linux-gnu-gcc" if cross else "cc")
    if shutil.which(cc) is None:
        raise BuildError(f"no C compiler ({cc}) found")
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "lila_abi.inc").write_text(abi_include(declarations()))
        includes = ["-I", str(NATIVE / "include"), "-I", tmp]
        objects = []
        for src in sources(arch_dir):
            obj = Path(tmp) / (src.parent.name + "_" + src.name + ".o")
            flags = CFLAGS if src.suffix == ".c" else ["-fPIC"]
            _run([cc, *flags, *includes, "-c", str(src), "-o", str(obj)],
                 f"{src.relative_to(ROOT)} did not compile", verbose)
            objects.append(str(obj))
        library = out_dir / LIBRARY
        staged = Path(tmp) / LIBRARY
        _run([cc, "-shared", "-pthread", "-o", str(staged), *objects, "-lm"], "linking failed",
             verbose)
        # Replace, never overwrite in place: a running process may have the old one mapped.
        os.replace(staged, library)
    return library


def write_ffi_module(out_dir: Path) -> None:
    """cffi's "out-of-line ABI mode": the header is parsed now, at build time, into a
    small module, so loading the library costs no C parsing (about 100 ms)."""
    builder = declarations()
    builder.set_source(f"lila.native.{FFI_MODULE}", None)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        generated = Path(tmp) / f"{FFI_MODULE}.py"
        builder.emit_python_code(str(generated))
        os.replace(generated, out_dir / f"{FFI_MODULE}.py")


def _run(cmd: list[str], failure: str, verbose: bool) -> None:
    if verbose:
        print(" ".join(cmd))
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise BuildError(f"{failure}\n{' '.join(cmd)}\n{result.stderr.strip()}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lila.native.build", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=PACKAGE_DIR)
    parser.add_argument("--arch", help="cross-compile for this architecture (aarch64, x86_64)")
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument("--strict", action="store_true", help="fail instead of falling back")
    args = parser.parse_args(argv)
    try:
        write_ffi_module(args.out)
        library = build(args.out, arch=args.arch, verbose=args.verbose)
    except BuildError as e:
        # a library left from an earlier build no longer matches the declarations
        (args.out / LIBRARY).unlink(missing_ok=True)
        first, _, detail = str(e).partition("\n")
        print(f"lila: native kernels not built ({first}); numba kernels will be used", file=sys.stderr)
        if args.strict:
            print(detail, file=sys.stderr)
            return 1
        return 0
    print(f"built {library}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
