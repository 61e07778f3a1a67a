"""What an adapter file holds, as its header tells it, before any tensor data is read.

Each format's reader (`peft_files.py`, `gguf_lora.py`) describes its file as an
`AdapterFile`; `adapter.py` checks that against the base model and only then reads data.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable, Literal

import numpy as np

from lila.errors import AdapterError, one_line

# PEFT module name -> the GGUF projection it adapts: the seven Lila adapts.
MODULES: dict[str, str] = {
    "q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v", "o_proj": "attn_output",
    "gate_proj": "ffn_gate", "up_proj": "ffn_up", "down_proj": "ffn_down",
}
PROJECTIONS = "|".join(MODULES.values())

# Lila's gate tensors, named alike in both formats.
GATE_WEIGHT = "lila_gate.weight"
GATE_BIAS = "lila_gate.bias"

# A layer index of at most 9 digits: anything longer is refused before int() sees it.
LAYER = r"\d{1,9}"


def fail(path: str | os.PathLike, problem: str) -> AdapterError:
    """The one-line error for a problem with the adapter at `path` (text from the file is
    escaped, so it cannot forge a line)."""
    return AdapterError(one_line(f"{os.fsdecode(path)}: {problem}", limit=1000))


def quoted(text: str) -> str:
    """A name from the file, quoted for a message."""
    return repr(text if len(text) <= 80 else text[:77] + "...")


@dataclass(frozen=True)
class Stored:
    """One tensor, known from the file's header; `read()` gives its values as float32."""

    name: str                  # as the file names it, for messages
    shape: tuple[int, ...]
    dtype: str                 # the file's name for its type: F32, BF16, Q8_0, ...
    read: Callable[[], np.ndarray]

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


@dataclass
class Projection:
    """The two factors of one adapted projection, as the file holds them."""

    module: str                # the file's name for the module (PEFT patterns match it)
    a: Stored | None = None
    b: Stored | None = None


@dataclass
class AdapterFile:
    path: str                  # as shown in messages
    format: Literal["peft", "gguf"]
    architecture: str | None   # as the file declares it
    declared: Callable[[str], tuple[int | None, float]]   # module -> (rank if declared, alpha)
    scale: Callable[[float, int], float]   # (alpha, rank) -> the adapter's own factor
    rslora: bool
    rows_in_gguf_order: bool   # False: B's Q/K rows are in HF order (llama permutes them)
    size: int                  # bytes on disk
    projections: dict[str, Projection] = field(default_factory=dict)   # "blk.3.attn_q" -> ...
    gate: dict[str, Stored] = field(default_factory=dict)              # GATE_WEIGHT, GATE_BIAS
    trained_on: str | None = None   # the base model the file names, if it names one
    skipped: int = 0                # tensors of parts Lila does not run (a vision tower)

    def add(self, tensor: Stored, factor: tuple[str, str, Literal["a", "b"]] | None) -> bool:
        """Hold `tensor` as a gate tensor, or as the factor (key, module, "a" or "b") of a
        projection; False if it is neither."""
        if tensor.name in (GATE_WEIGHT, GATE_BIAS):
            self.gate[tensor.name] = tensor
            return True
        if factor is None:
            return False
        key, module, which = factor
        projection = self.projections.setdefault(key, Projection(module))
        held = getattr(projection, which)
        if held is not None:
            raise fail(self.path, f"two tensors for the same factor: {quoted(held.name)} "
                                  f"and {quoted(tensor.name)}")
        setattr(projection, which, tensor)
        return True
