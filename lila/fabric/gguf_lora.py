"""GGUF LoRA adapters, as llama.cpp's `convert_lora_to_gguf.py` writes them:
`general.type` "adapter", `adapter.type` "lora", `adapter.lora.alpha`, and the factors
of each projection as `blk.N.<proj>.weight.lora_a` (rank, in) and `.lora_b` (out, rank),
their rows already in the GGUF's order."""
from __future__ import annotations

import math
import re
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Iterator

import numpy as np

from lila.errors import AdapterError, LilaError, one_line
from lila.fabric.files import LAYER, PROJECTIONS, AdapterFile, Stored, fail, quoted
from lila.formats.gguf import GGMLType, GGUFFile

TYPES = (GGMLType.F32, GGMLType.F16, GGMLType.BF16, GGMLType.Q8_0)

_FACTOR = re.compile(rf"blk\.({LAYER})\.({PROJECTIONS})\.weight\.lora_([ab])")


def is_gguf_adapter(gguf: GGUFFile) -> bool:
    return gguf.metadata.get("general.type") == "adapter"


@contextmanager
def open_gguf_lora(path: Path) -> Iterator[AdapterFile]:
    try:
        gguf = GGUFFile.open(path)
    except LilaError as e:   # already one line, naming the file
        raise _as_adapter_error(e) from None
    with gguf:
        yield _describe(gguf)


def _describe(gguf: GGUFFile) -> AdapterFile:
    meta, path = gguf.metadata, gguf.path
    kind = meta.get("general.type", "model")
    if kind != "adapter":
        raise fail(path, f"is a {quoted(str(kind))} file (general.type), not an adapter")
    if meta.get("adapter.type") != "lora":
        raise fail(path, f"adapter type {quoted(str(meta.get('adapter.type')))} is not supported "
                         f"(Lila reads lora)")
    if "adapter.alora.invocation_tokens" in meta:
        raise fail(path, "is an activated LoRA (adapter.alora.invocation_tokens), "
                         "which Lila does not support")
    architecture = meta.get("general.architecture")
    if not isinstance(architecture, str):
        raise fail(path, "has no general.architecture")
    # As llama.cpp: a missing alpha reads as 0, and alpha 0 means a scale of 1.
    alpha = meta.get("adapter.lora.alpha", 0.0)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha):
        raise fail(path, f"adapter.lora.alpha should be a finite number, got {alpha!r:.40}")
    file = AdapterFile(path=path, format="gguf", architecture=architecture,
                       declared=lambda module: (None, float(alpha)), scale=_scale, rslora=False,
                       rows_in_gguf_order=True, size=gguf.file_size)
    for name, info in gguf.tensors.items():
        if info.ggml_type not in TYPES:
            raise fail(path, f"tensor {quoted(name)} has type {info.ggml_type.name} "
                             f"(supported: {', '.join(t.name for t in TYPES)})")
        tensor = Stored(name, info.shape, info.ggml_type.name, partial(_read, gguf, name))
        if not file.add(tensor, _factor(name)):
            raise fail(path, _unexpected(name))
    return file


def _factor(name: str) -> tuple[str, str, str] | None:
    factor = _FACTOR.fullmatch(name)
    if factor is None:
        return None
    layer, projection, which = factor.groups()
    key = f"blk.{int(layer)}.{projection}"   # one spelling of the index ("blk.03" is blk.3)
    return key, key, which


def _read(gguf: GGUFFile, name: str) -> np.ndarray:
    try:
        return gguf.tensor(name)
    except LilaError as e:
        raise _as_adapter_error(e) from None


def _as_adapter_error(e: LilaError) -> AdapterError:
    return AdapterError(one_line(str(e), limit=1000))   # GGUFFile's errors name the file


def _scale(alpha: float, rank: int) -> float:
    return alpha / rank if alpha else 1.0


def _unexpected(name: str) -> str:
    if name.startswith(("token_embd.", "output.")):
        return f"adapts {quoted(name.split('.')[0])}: Lila adapts only the seven projections"
    return f"unexpected tensor {quoted(name)}: not a lora_a or lora_b of {PROJECTIONS.replace('|', ', ')}"
