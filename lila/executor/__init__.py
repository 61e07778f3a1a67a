"""Backends that execute a model's plan, and what running one costs in memory.

Only the numpy reference backend exists so far; native backends register here.
"""
from __future__ import annotations

from lila.executor.plan import Plan
from lila.executor.reference import ReferenceBackend

BACKENDS = {ReferenceBackend.name: ReferenceBackend}


def create_backend(name: str | None, plan: Plan, gguf, *, n_ctx: int, max_batch: int):
    from lila.hardware import choose_backend, detect
    choice = choose_backend(detect(), name)
    return BACKENDS[choice.name](plan, gguf, n_ctx=n_ctx, max_batch=max_batch)


def memory_estimate(spec, *, n_ctx: int, max_batch: int = 128, backend: str | None = None
                    ) -> dict[str, int]:
    """Bytes by purpose for running spec's plan on the backend that would be chosen."""
    from lila.hardware import choose_backend, detect
    cls = BACKENDS[choose_backend(detect(), backend).name]
    return cls.memory_estimate(spec.plan, spec.weights, n_ctx=n_ctx, max_batch=max_batch)
