"""One sequence's KV cache, owned by whoever runs that sequence.

A backend's compiled plan and activation buffers serve one forward pass at a time, for
any sequence; the keys and values a sequence has produced live here, so that any number
of sequences (two generators, a thread each, a server's slots) share one backend without
sharing state.
"""
from __future__ import annotations

from typing import Any

import numpy as np


class KVCache:
    """Per attention layer, a K and a V array of n_ctx rows in the layout of the backend
    that made it, and `tokens`: the tokens whose keys and values rows 0..len-1 hold.
    The arrays are allocated zeroed and untouched, so the OS gives them memory only as
    positions are written."""

    def __init__(self, k: list[np.ndarray], v: list[np.ndarray], n_ctx: int,
                 handle: Any = None):
        self.k, self.v, self.n_ctx = k, v, n_ctx
        self.handle = handle     # what the backend passes its kernels (native: a lila_kv)
        self.tokens: list[int] = []

    def reset(self) -> None:
        """Forget what the cache holds (its rows are overwritten as positions are run)."""
        self.tokens = []
