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


# Best first: with no override, the first backend whose family the CPU supports is used.
BACKENDS = (
    Backend("reference", "generic", "numpy, fp32"),
)


@dataclass(frozen=True)
class BackendChoice:
    name: str
    reason: str
    kernel_family: str           # the best family the CPU supports, built or not


def supported_families(cpu: CpuInfo) -> list[KernelFamily]:
    """Every family the CPU can run, best first."""
    return [f for f in KERNEL_FAMILIES
            if f.arch in (None, cpu.arch) and f.requires <= cpu.features]


def choose_backend(cpu: CpuInfo, override: str | None = None) -> BackendChoice:
    """The backend to run on cpu: override (a backend name, or "auto"), else the
    LILA_BACKEND environment variable, else the best one the CPU supports."""
    best = supported_families(cpu)[0].name
    supported = {f.name for f in supported_families(cpu)}
    source = "--backend" if override else "LILA_BACKEND"
    requested = override or os.environ.get("LILA_BACKEND") or "auto"
    if requested != "auto":
        backend = next((b for b in BACKENDS if b.name == requested), None)
        if backend is None:
            names = ", ".join(b.name for b in BACKENDS)
            raise LilaError(f"unknown backend {requested!r} (from {source}); "
                            f"available: {names}, auto")
        if backend.family not in supported:
            raise LilaError(f"backend {requested} needs {backend.family} kernels, which this "
                            f"CPU cannot run (its best: {best})")
        return BackendChoice(backend.name, f"{backend.summary}; chosen by {source}", best)
    backend = next(b for b in BACKENDS if b.family in supported)
    if backend.family == best:
        reason = backend.summary
    else:
        reason = f"{backend.summary}; this CPU supports {best} kernels, not built yet"
    return BackendChoice(backend.name, reason, best)
