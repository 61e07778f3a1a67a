"""Assemble and compile native/ into the shared library the native backends load.

    python -m lila.native.build [--out DIR] [--arch aarch64]

Sources: native/common/*.c, then native/<arch>/*.c and *.S for this machine's
architecture. The assembly is hand-written for every kernel family the folder has, so
no -march flag is used: the library runs on any CPU of the architecture, and the
executor picks the family at run time. Besides the library, the build writes the cffi
declarations taken from native/include, so the loader always matches what was built.

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


def cdef_text() -> str:
    """The declarations between the cdef markers of every header, for cffi."""
    parts = []
    for header in HEADERS:
        text = (NATIVE / "include" / header).read_text()
        begin, end = text.index("/* cdef begin */"), text.index("/* cdef end */")
        parts.append(text[begin:end])
    return "\n".join(parts)


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
        objects = []
        for src in sources(arch_dir):
            obj = Path(tmp) / (src.parent.name + "_" + src.name + ".o")
            flags = CFLAGS if src.suffix == ".c" else ["-fPIC"]
            _run([cc, *flags, "-I", str(NATIVE / "include"), "-c", str(src), "-o", str(obj)],
                 f"{src.relative_to(ROOT)} did not compile", verbose)
            objects.append(str(obj))
        library = out_dir / LIBRARY
        staged = Path(tmp) / LIBRARY
        _run([cc, "-shared", "-pthread", "-o", str(staged), *objects, "-lm"], "linking failed",
             verbose)
        # Replace, never overwrite in place: a running process may have the old one mapped.
        os.replace(staged, library)
    write_ffi_module(out_dir)
    return library


def write_ffi_module(out_dir: Path) -> None:
    """cffi's "out-of-line ABI mode": the header is parsed now, at build time, into a
    small module, so loading the library costs no C parsing (about 100 ms)."""
    import cffi
    builder = cffi.FFI()
    builder.cdef(cdef_text())
    builder.set_source(f"lila.native.{FFI_MODULE}", None)
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
        library = build(args.out, arch=args.arch, verbose=args.verbose)
    except BuildError as e:
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
