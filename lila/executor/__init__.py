"""Backends that execute a model's plan, and what running one costs in memory.

The list of backends and the choice among them live in lila.hardware.backends; this
module makes the chosen one.
"""
from __future__ import annotations

import importlib

from lila.errors import UnsupportedError
from lila.executor.weights import SpillFile
from lila.hardware import BackendChoice, choose_backend, detect


def backend_class(choice: BackendChoice) -> type:
    module, _, cls = choice.executor.partition(":")
    return getattr(importlib.import_module(module), cls)


def choose(name: str | None = None) -> BackendChoice:
    """The backend to run on this CPU: name, else LILA_BACKEND, else the best available."""
    return choose_backend(detect(), name)


def create(choice: BackendChoice, plan, gguf, *, n_ctx: int, max_batch: int,
           threads: int | None = None, spill: SpillFile | None = None,
           fuse_adapters: bool = True):
    """The chosen backend, ready to run plan. threads: None for the CPU's default. spill:
    where weights converted at load go (None: anonymous memory); the reference backend
    keeps its fp32 copy of every weight whatever spill says. fuse_adapters: see
    lila.executor.native (the other backends have no fused form)."""
    if choice.name != "reference" and any(op.kind == "moe" for op in plan.ops):
        raise UnsupportedError(f"mixture-of-experts layers run only on the reference backend so far, "
                               f"not on {choice.name} (lila.load(..., backend=\"reference\") or "
                               f"LILA_BACKEND=reference)")
    cls = backend_class(choice)
    if choice.kernels is not None:
        return cls(plan, gguf, n_ctx=n_ctx, max_batch=max_batch, family=choice.kernels,
                   threads=threads or detect().default_threads, spill=spill,
                   fuse_adapters=fuse_adapters)
    if choice.name == "numba":
        return cls(plan, gguf, n_ctx=n_ctx, max_batch=max_batch, threads=threads, spill=spill)
    return cls(plan, gguf, n_ctx=n_ctx, max_batch=max_batch)


def memory_estimate(spec, *, n_ctx: int, max_batch: int = 128, backend: str | None = None
                    ) -> dict[str, int]:
    """Bytes by purpose for running spec's plan on the backend that would be chosen."""
    return backend_class(choose(backend)).memory_estimate(spec.plan, spec.weights, n_ctx=n_ctx,
                                                          max_batch=max_batch)
