"""Which kernels a CPU can run, and which backend Lila uses on it.

A kernel family is a set of kernels written for one instruction-set level. A backend
runs a model with one family (or with portable code). Adding a backend is one entry in
BACKENDS; the choice below then prefers it wherever the CPU has its features.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from lila.errors import LilaError
from lila.hardware.cpu import CpuInfo


@dataclass(frozen=True)
class KernelFamily:
    name: str
    arch: str | None             # None: any architecture
    requires: frozenset[str]     # feature names, as in CpuInfo.features


def _family(name: str, arch: str | None, *requires: str) -> KernelFamily:
    return KernelFamily(name, arch, frozenset(requires))


# Best first: a CPU's best family is the first whose features it has.
KERNEL_FAMILIES = (
    _family("avx512-vnni", "x86_64", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "fma",
            "f16c"),
    _family("avx512", "x86_64", "avx512f", "avx512bw", "avx512vl", "fma", "f16c"),
    _family("avx2", "x86_64", "avx2", "fma", "f16c"),
    _family("neon-dotprod", "aarch64", "asimd", "asimddp"),
    _family("neon", "aarch64", "asimd"),
    _family("generic", None),
)


@dataclass(frozen=True)
class Backend:
    name: str
    family: str                  # the kernel family it needs ("generic": runs anywhere)
    summary: str
    executor: str                # "module:Class" that runs a plan (imported when used)


# Best first: with no override, the first backend the CPU supports and this installation
# has is used. The native backends name the family they need at least; avx512 and neon
# run the dot-product variant of their kernels where the CPU has it.
BACKENDS = (
    Backend("avx512", "avx512", "hand-written AVX-512 kernels", "lila.executor.native:NativeBackend"),
    Backend("avx2", "avx2", "hand-written AVX2 kernels", "lila.executor.native:NativeBackend"),
    Backend("neon", "neon", "hand-written NEON kernels", "lila.executor.native:NativeBackend"),
    Backend("numba", "generic", "numba kernels", "lila.executor.numba_backend:NumbaBackend"),
    Backend("reference", "generic", "numpy, fp32", "lila.executor.reference:ReferenceBackend"),
)
NATIVE = {"avx512", "avx2", "neon"}
# A native backend's better kernel table where the CPU has what it needs: the same
# kernels, with the integer dot products done by one instruction.
DOT_PRODUCT_TABLES = {"avx512": "avx512-vnni", "neon": "neon-dotprod"}


@dataclass(frozen=True)
class BackendChoice:
    name: str
    reason: str
    kernel_family: str           # the best family the CPU supports, built or not
    kernels: str | None = None   # the kernel table a native backend runs ("avx512-vnni")
    executor: str = ""


def supported_families(cpu: CpuInfo) -> list[KernelFamily]:
    """Every family the CPU can run, best first."""
    return [f for f in KERNEL_FAMILIES
            if f.arch in (None, cpu.arch) and f.requires <= cpu.features]


def kernel_table(backend: Backend, supported: set[str]) -> str | None:
    if backend.name not in NATIVE:
        return None
    better = DOT_PRODUCT_TABLES.get(backend.name)
    return better if better in supported else backend.family


def unavailable(backend: Backend) -> str | None:
    """Why this installation cannot run backend (None: it can)."""
    if backend.name in NATIVE:
        from lila.native import library, unavailable_reason
        native = library()
        if native is None:
            return unavailable_reason()
        if native.kernels(backend.family) is None:
            return f"the native library has no {backend.family} kernels"
    if backend.name == "numba":
        try:
            import numba  # noqa: F401
        except ImportError:
            return "numba is not installed"
    return None


def choose_backend(cpu: CpuInfo, override: str | None = None) -> BackendChoice:
    """The backend to run on cpu: override (a backend name, or "auto"), else the
    LILA_BACKEND environment variable, else the best one the CPU supports and this
    installation has."""
    families = supported_families(cpu)
    best, supported = families[0].name, {f.name for f in families}
    source = "--backend" if override else "LILA_BACKEND"
    requested = override or os.environ.get("LILA_BACKEND") or "auto"

    def choice(backend: Backend, reason: str) -> BackendChoice:
        return BackendChoice(backend.name, reason, best, kernel_table(backend, supported),
                             backend.executor)

    if requested != "auto":
        backend = next((b for b in BACKENDS if b.name == requested), None)
        if backend is None:
            names = ", ".join(b.name for b in BACKENDS)
            raise LilaError(f"unknown backend {requested!r} (from {source}); "
                            f"available: {names}, auto")
        if backend.family not in supported:
            raise LilaError(f"backend {requested} needs {backend.family} kernels, which this "
                            f"CPU cannot run (its best: {best})")
        why_not = unavailable(backend)
        if why_not:
            raise LilaError(f"backend {requested} cannot run here: {why_not}")
        return choice(backend, f"{backend.summary}; chosen by {source}")
    skipped = []
    for backend in BACKENDS:
        if backend.family not in supported:
            continue
        why_not = unavailable(backend)
        if why_not:
            skipped.append(f"{backend.name}: {why_not}")
            continue
        reason = backend.summary + (f" ({'; '.join(skipped)})" if skipped else "")
        return choice(backend, reason)
    raise LilaError("no backend can run here: " + "; ".join(skipped))
