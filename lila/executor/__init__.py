"""Backends that execute a model's plan, and what running one costs in memory.

Only the numpy reference backend exists so far; native backends register here.
"""
from __future__ import annotations

from lila.executor.reference import ReferenceBackend

BACKENDS = {ReferenceBackend.name: ReferenceBackend}


def backend_class(name: str | None) -> type:
    """The backend to run on this CPU: name, else LILA_BACKEND, else the best available."""
    from lila.hardware import choose_backend, detect
    return BACKENDS[choose_backend(detect(), name).name]


def memory_estimate(spec, *, n_ctx: int, max_batch: int = 128, backend: str | None = None
                    ) -> dict[str, int]:
    """Bytes by purpose for running spec's plan on the backend that would be chosen."""
    return backend_class(backend).memory_estimate(spec.plan, spec.weights, n_ctx=n_ctx,
                                                  max_batch=max_batch)
