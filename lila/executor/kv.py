"""One sequence's KV cache, owned by whoever runs that sequence.

A backend's compiled plan and activation buffers serve one forward pass at a time, for
any sequence; the keys and values a sequence has produced live here, so that any number
of sequences (two generators, a thread each, a server's slots) share one backend without
sharing state.
"""
from __future__ import annotations

import mmap
from typing import Any, Callable

import numpy as np


class KVCache:
    """Per attention layer, a K and a V array of n_ctx rows in the layout of the backend
    that made it, and `tokens`: the tokens whose keys and values rows 0..len-1 hold."""

    def __init__(self, k: list[np.ndarray], v: list[np.ndarray], n_ctx: int,
                 handle: Any = None):
        self.k, self.v, self.n_ctx = k, v, n_ctx
        self.handle = handle     # what the backend passes its kernels (native: a lila_kv)
        self.tokens: list[int] = []
        # the model configuration (its adapters) all of `tokens` were evaluated under
        self.configuration = 0

    @classmethod
    def zeroed(cls, shapes: list[tuple[int, ...]], dtype, n_ctx: int,
               handle_of: Callable[[list[np.ndarray], list[np.ndarray]], Any] | None = None
               ) -> "KVCache":
        """A K and a V array of each shape, in one anonymous map: the OS gives it memory
        page by page as positions are written (calloc might zero it all at once, from a
        heap reused), and takes it back whole when the cache is dropped."""
        dtype = np.dtype(dtype)
        counts = [int(np.prod(shape)) for shape in shapes]
        memory = mmap.mmap(-1, max(2 * sum(counts) * dtype.itemsize, 1))
        arrays, offset = [], 0
        for shape, count in zip(shapes * 2, counts * 2):     # every K, then every V
            arrays.append(np.frombuffer(memory, dtype, count, offset).reshape(shape))
            offset += count * dtype.itemsize
        k, v = arrays[:len(shapes)], arrays[len(shapes):]
        return cls(k, v, n_ctx, handle_of(k, v) if handle_of else None)


class SingleSequence:
    """For a backend's callers that run one sequence and pass no cache: one made on first
    use (a model's generations never use it, having caches of their own)."""

    _own_kv: KVCache | None = None

    def new_kv(self) -> KVCache:
        raise NotImplementedError

    @property
    def kv(self) -> KVCache:
        if self._own_kv is None:
            self._own_kv = self.new_kv()
        return self._own_kv
