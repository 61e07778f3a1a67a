"""Lila: a portable, CPU-first engine that runs large language models locally.

    import lila
    model = lila.load()                     # the default model, or lila.load("model.gguf")
    for piece in model.chat([{"role": "user", "content": "Hello!"}]):
        print(piece, end="", flush=True)
"""
from lila.api import Model, load
from lila.errors import LilaError

__all__ = ["load", "Model", "LilaError"]
__version__ = "0.1.0"
