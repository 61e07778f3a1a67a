"""Building the native library: warnings are errors, and a machine without a compiler
gets one line and no library (Lila then runs on numba), never a failed install."""
from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from lila.hardware import KERNEL_FAMILIES, detect
from lila.native import Native, build


def run_build(tmp_path, *args, **env):
    import os
    return subprocess.run([sys.executable, "-m", "lila.native.build", "--out", str(tmp_path), *args],
                          capture_output=True, text=True, env={**os.environ, **env}, timeout=300)


def test_without_a_compiler_the_build_says_so_in_one_line(tmp_path):
    r = run_build(tmp_path, CC="no-such-compiler")
    assert r.returncode == 0
    assert r.stderr.strip().splitlines() == [
        "lila: native kernels not built (no C compiler (no-such-compiler) found); "
        "numba kernels will be used"]
    assert not (tmp_path / build.LIBRARY).exists()


def test_an_architecture_without_kernels_says_so_in_one_line(tmp_path):
    r = run_build(tmp_path, "--arch", "riscv64")
    assert r.returncode == 0
    assert r.stderr.strip().splitlines() == [
        "lila: native kernels not built (no native kernels for riscv64 yet); "
        "numba kernels will be used"]
    assert not (tmp_path / build.LIBRARY).exists()


@pytest.mark.skipif(build.ARCH_DIRS.get(__import__("platform").machine().lower()) is None,
                    reason="no kernels for this architecture")
def test_the_build_is_warning_free_and_loads(tmp_path, monkeypatch):
    r = run_build(tmp_path)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert (tmp_path / build.LIBRARY).exists() and (tmp_path / f"{build.FFI_MODULE}.py").exists()
    # The library and declarations just written, not the installed pair: Native imports
    # its declarations as lila.native._ffi, so that name is pointed at the new module.
    spec = importlib.util.spec_from_file_location(f"lila.native.{build.FFI_MODULE}",
                                                  tmp_path / f"{build.FFI_MODULE}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setitem(sys.modules, f"lila.native.{build.FFI_MODULE}", module)
    built = Native(tmp_path / build.LIBRARY)
    assert built.ffi is module.ffi
    arch = detect().arch
    families = [f.name for f in KERNEL_FAMILIES if f.arch == arch]
    assert families, f"no kernel family for {arch} in lila.hardware"
    for family in families:
        assert built.kernels(family) is not None, f"no {family} kernels in the library built"
        empty = [e for e, symbol in built.kernel_symbols(family).items() if symbol is None]
        assert not empty, f"{family}: {empty}"
