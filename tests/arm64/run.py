"""The ARM64 kernels, proven without an ARM board: `make test-arm64`.

    python tests/arm64/run.py [--cpu cortex-a72] [--cpu cortex-a76] [-- pytest args]

Builds the native library for aarch64 as `pip install` does on a board (lila.native.build
run by an ARM64 Python under qemu-user, with Debian's cross compiler as its CC), then runs
the Python kernel and model tests with that Python: the same tests, through the same cffi
loading path, as on x86-64. Once per emulated CPU:

  cortex-a72   the Raspberry Pi 4: NEON without the dot-product extension -> neon
  cortex-a76   the Raspberry Pi 5: NEON with sdot                          -> neon-dotprod

Before the tests, each run prints what the emulated CPU reports (its hwcaps) and the
kernel family Lila picks on it, and fails if that is not the family the CPU should get.
After them, `lila run` answers a question with the default model on that CPU.

What it needs, installed on first use (as root, with apt-get) and kept under build/arm64:
Debian's cross compiler with the aarch64 C library headers (gcc-aarch64-linux-gnu,
libc6-dev-arm64-cross: checked by building a probe library, not by the compiler's name)
and qemu-user; an ARM64 Python from
Debian's arm64 packages (unpacked, not installed); and the ARM64 wheels of Lila's runtime
dependencies and pytest, from PyPI.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
WORK = ROOT / "build" / "arm64"
SYSROOT = WORK / "sysroot"          # Debian's arm64 Python, unpacked
SITE = WORK / "site"                # arm64 wheels
# lila/, with the aarch64 library built into it: one per run, so runs can overlap
SOURCE = WORK / f"src-{os.getpid()}"
PYTHON = SYSROOT / "usr" / "bin" / "python3.11"

CPUS = {   # qemu name: (board, the family Lila must pick)
    "cortex-a72": ("Raspberry Pi 4", "neon"),
    "cortex-a76": ("Raspberry Pi 5", "neon-dotprod"),
}
TESTS = ["tests/test_kernels_matmul.py", "tests/test_kernels_rows.py",
         "tests/test_kernels_attention.py", "tests/test_kernels_lora.py",
         "tests/test_native_models.py", "tests/test_hardware.py"]
# numba is not installed under emulation (see WHEELS)
DESELECT = ["tests/test_hardware.py::test_every_backend_has_an_executor"]
QUESTION, ANSWER = "Name the capital of France.", "Paris"

CROSS_CC = "aarch64-linux-gnu-gcc"
# The cross compiler alone has no C library headers: libc6-dev-arm64-cross brings them
# (and crt files, libm, libpthread to link against). A machine may have the first
# without the second, so what is checked is a build, not a program's name.
CROSS_PACKAGES = ["gcc-aarch64-linux-gnu", "libc6-dev-arm64-cross"]
QEMU_PACKAGE = "qemu-user"
# Every system header the native sources include, linked as the build links the library.
CROSS_PROBE = """#include <dlfcn.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
double lila_probe(double x) { return sqrt(x) + (double)sched_yield(); }
"""
# Python 3.11 and the shared libraries it and the wheels load (Debian 12, arm64).
PYTHON_PACKAGES = ["python3.11-minimal", "libpython3.11-minimal", "libpython3.11-stdlib",
                   "libc6", "libgcc-s1", "libstdc++6", "zlib1g", "libexpat1", "libffi8",
                   "libbz2-1.0", "liblzma5", "libssl3", "libcrypt1", "libuuid1",
                   "libsqlite3-0", "libncursesw6", "libtinfo6"]
# Lila's runtime dependencies, pycparser for the build's cffi, gguf (with its own) for the
# test models, and pytest; numba is left out (these tests run the native kernels, and it
# would compile for minutes under qemu).
WHEELS = ["numpy", "cffi", "pycparser", "psutil", "jinja2<3.2", "markupsafe", "tokenizers",
          "safetensors", "pytest", "pluggy", "iniconfig", "packaging", "pygments",
          "gguf", "pyyaml", "tqdm"]


class SetupError(Exception):
    pass


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        raise SetupError(f"{' '.join(cmd)} failed:\n{(result.stderr or result.stdout).strip()}")
    return result


def apt_get(*args: str) -> None:
    if os.geteuid() != 0:
        raise SetupError(f"apt-get {' '.join(args)} needs root; install these yourself")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    run(["apt-get", *args], env=env)


def cross_build_problem() -> str | None:
    """Why the cross compiler cannot build the library here, or None if it can: a small
    shared library using every system header the native sources include."""
    if shutil.which(CROSS_CC) is None:
        return f"{CROSS_CC} is not installed"
    WORK.mkdir(parents=True, exist_ok=True)
    probe = WORK / "probe.c"
    probe.write_text(CROSS_PROBE)
    result = subprocess.run([CROSS_CC, "-std=c11", "-D_GNU_SOURCE", "-pthread", "-shared",
                             "-fPIC", "-o", str(WORK / "probe.so"), str(probe), "-lm"],
                            capture_output=True, text=True)
    if result.returncode == 0:
        return None
    lines = result.stderr.strip().splitlines() or ["it printed nothing"]
    return next((line for line in lines if "error" in line), lines[0])


def ensure_host_tools() -> None:
    problem = cross_build_problem()
    missing = list(CROSS_PACKAGES) if problem else []
    if shutil.which("qemu-aarch64") is None:
        missing.append(QEMU_PACKAGE)
    if missing:
        if problem:
            print(f"the aarch64 cross build cannot run ({problem})", flush=True)
        print(f"installing {' '.join(missing)} (apt-get)", flush=True)
        apt_get("update", "-q")
        apt_get("install", "-y", "-q", "--no-install-recommends", *missing)
    if problem := cross_build_problem():
        raise SetupError(f"{CROSS_CC} cannot build a shared library even with "
                         f"{' and '.join(CROSS_PACKAGES)} installed: {problem}")


def ensure_sysroot() -> None:
    stamp = SYSROOT / ".packages"
    if stamp.exists() and stamp.read_text() == " ".join(PYTHON_PACKAGES):
        return
    print("unpacking Debian's arm64 Python into build/arm64/sysroot", flush=True)
    if "arm64" not in run(["dpkg", "--print-foreign-architectures"]).stdout.split():
        run(["dpkg", "--add-architecture", "arm64"])
        apt_get("update", "-q")
    debs = WORK / "debs"
    shutil.rmtree(debs, ignore_errors=True)
    debs.mkdir(parents=True)
    names = [f"{p}:arm64" for p in PYTHON_PACKAGES]
    try:
        run(["apt-get", "download", "-q", *names], cwd=debs)
    except SetupError:   # the arm64 package lists are not there yet
        apt_get("update", "-q")
        run(["apt-get", "download", "-q", *names], cwd=debs)
    shutil.rmtree(SYSROOT, ignore_errors=True)
    for deb in sorted(debs.glob("*.deb")):
        run(["dpkg-deb", "-x", str(deb), str(SYSROOT)])
    stamp.write_text(" ".join(PYTHON_PACKAGES))


def ensure_wheels() -> None:
    stamp = SITE / ".wheels"
    if stamp.exists() and stamp.read_text() == " ".join(WHEELS):
        return
    print("installing arm64 wheels into build/arm64/site", flush=True)
    shutil.rmtree(SITE, ignore_errors=True)
    platforms = [arg for tag in ("manylinux_2_17_aarch64", "manylinux2014_aarch64",
                                 "manylinux_2_28_aarch64") for arg in ("--platform", tag)]
    run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--only-binary=:all:",
         *platforms, "--implementation", "cp", "--python-version", "3.11", "--abi", "cp311",
         "--target", str(SITE), *WHEELS])
    stamp.write_text(" ".join(WHEELS))


def link_default_model() -> None:
    """The default model's package, shared with this machine's install (make setup puts
    it there): the model tests take its vocabulary, `lila run` the model."""
    from lila.store import DEFAULT_MODULE, default_model_path
    path = default_model_path()
    if path is None:
        raise SetupError("the default model is not installed (run `make setup` first)")
    link = SITE / DEFAULT_MODULE
    if not link.exists():
        link.symlink_to(path.parent, target_is_directory=True)


def build_library() -> None:
    """lila/ as it is in the work tree, with the aarch64 library built into it the way
    `pip install` builds it on a board: lila.native.build run by the ARM64 Python, which
    finds itself on aarch64 and builds native/arm64 (with the cross compiler as its CC)."""
    shutil.rmtree(SOURCE, ignore_errors=True)
    shutil.copytree(ROOT / "lila", SOURCE / "lila", ignore=shutil.ignore_patterns(
        "__pycache__", "liblila.so", "_ffi.py"))
    (SOURCE / "native").symlink_to(ROOT / "native", target_is_directory=True)
    result = subprocess.run(emulated("cortex-a72", "-m", "lila.native.build", "--strict"),
                            env=dict(environment(), CC=CROSS_CC), capture_output=True,
                            text=True, cwd=ROOT)
    print((result.stdout + result.stderr).strip(), flush=True)
    if result.returncode != 0:
        raise SetupError("the aarch64 build failed")


def emulated(cpu: str, *args: str) -> list[str]:
    # -P: the work tree's own lila/ (x86-64 library) must not shadow the one built here
    return ["qemu-aarch64", "-cpu", cpu, "-L", str(SYSROOT), str(PYTHON), "-P", *args]


def environment() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=f"{SOURCE}{os.pathsep}{SITE}",
                PYTHONPYCACHEPREFIX=str(WORK / "pycache"), LILA_BACKEND="")


def check_cpu(cpu: str) -> None:
    board, family = CPUS[cpu]
    print(f"=== arm64 under {qemu_version()} as {cpu} ({board}): expecting {family} ===",
          flush=True)
    result = subprocess.run(emulated(cpu, "-m", "lila", "detect"), env=environment(),
                            capture_output=True, text=True, cwd=ROOT)
    lines = result.stdout.splitlines()
    # the features (hwcaps), the backend, the family, and the kernel of one matmul
    shown = [l for l in lines if l.startswith(("features:", "backend:", "kernels ("))
             or "gemv[Q4_0]" in l]
    print("\n".join(["lila detect:", *shown]) if shown else result.stderr.strip(), flush=True)
    if result.returncode != 0 or f"kernels ({family}):" not in lines:
        raise SetupError(f"{cpu} should run the {family} kernels")


def answer(cpu: str) -> bool:
    """`lila run` on the default model, greedy: the whole program on the emulated CPU."""
    result = subprocess.run(emulated(cpu, "-m", "lila", "run", "default", QUESTION, "--greedy",
                                     "-n", "16", "-v"),
                            env=environment(), capture_output=True, text=True, cwd=ROOT)
    speed = [l for l in result.stderr.splitlines() if "tok/s" in l]
    print(f"lila run default {QUESTION!r} -> {result.stdout.strip()!r}"
          + (f"  [{speed[-1].strip()}, emulated]" if speed else ""), flush=True)
    if result.returncode != 0:
        print(result.stderr.strip(), file=sys.stderr)
    return result.returncode == 0 and ANSWER in result.stdout


def qemu_version() -> str:
    return run(["qemu-aarch64", "--version"]).stdout.splitlines()[0].split(" (")[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cpu", action="append", choices=sorted(CPUS),
                        help="emulated CPU (repeatable; default: all)")
    parser.add_argument("pytest_args", nargs="*", help="after --: pytest arguments")
    args = parser.parse_args(argv)
    start = time.monotonic()
    try:
        WORK.mkdir(parents=True, exist_ok=True)
        ensure_host_tools()
        ensure_sysroot()
        ensure_wheels()
        link_default_model()
        build_library()
        failed = []
        for cpu in args.cpu or list(CPUS):
            check_cpu(cpu)
            tests = subprocess.run(
                emulated(cpu, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                         *(f"--deselect={test}" for test in DESELECT),
                         *(args.pytest_args or TESTS)),
                env=environment(), cwd=ROOT)
            if tests.returncode != 0 or not answer(cpu):
                failed.append(cpu)
    except SetupError as e:
        print(f"test-arm64: {e}", file=sys.stderr)
        return 2
    finally:
        shutil.rmtree(SOURCE, ignore_errors=True)
    print(f"arm64: {time.monotonic() - start:.0f} s; "
          + (f"FAILED on {', '.join(failed)}" if failed else "passed on every CPU"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
