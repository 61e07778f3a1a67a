"""Lila: a portable, CPU-first engine that runs large language models locally.

    import lila
    model = lila.load()                     # the default model, or lila.load("model.gguf")
    for piece in model.chat([{"role": "user", "content": "Hello!"}]):
        print(piece, end="", flush=True)
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from lila.errors import LilaError

if TYPE_CHECKING:
    from lila.api import Model, load

__all__ = ["load", "Model", "LilaError"]
__version__ = "0.1.0"


def __getattr__(name: str):
    # The API is imported on first use: `python -m lila.native.build` imports this package
    # first, and must run before the declarations it writes (which the executor reads at
    # import) exist or match the headers.
    if name in ("load", "Model"):
        from lila import api
        return getattr(api, name)
    raise AttributeError(f"module 'lila' has no attribute {name!r}")
