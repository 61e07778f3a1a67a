"""A plan's linear layers as every backend binds them: one place where the weight, its
type and rows, the bias and the memory fabric's target of a projection are resolved.

The reference, numba and native backends each run `Linear`s their own way, but none of
them reads a linear op's weights, checks its shape or decides where adapters attach by
itself: they ask `linear()`, and the quantized backends take their weights from
`LinearWeights`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from lila.errors import LilaError
from lila.executor.plan import Op, Plan
from lila.executor.weights import SpillFile, matmul_weight
from lila.fabric.files import PROJECTIONS
from lila.formats.gguf import GGUFFile
from lila.native.abi import MATMUL_TYPES

# The projection whose input x̂, the layer's RMS-normalised attention input, the fabric's
# gates read; adapters attach to every projection of PROJECTIONS.
GATE_SOURCE = "attn_q"
_TARGET = re.compile(r"^blk\.(\d+)\.(" + PROJECTIONS + r")\.weight$")


@dataclass(frozen=True)
class Linear:
    """out = x @ W.T (+ bias) (+ the fabric's adapters on `target`)."""

    x: str
    out: str
    weight: str
    bias: str | None
    shape: tuple[int, int]        # (out, in)
    last_row_only: bool
    target: str | None            # "blk.3.attn_q": where adapters attach; None for the LM head
    layer: int | None

    @property
    def computes_gates(self) -> bool:
        """Its input is the layer's x̂, from which the fabric's gates are computed."""
        return self.target is not None and self.target.endswith("." + GATE_SOURCE)


def target_of(weight: str) -> tuple[str, int] | None:
    """The fabric target of a weight ("blk.3.attn_q", 3), or None if adapters never
    attach to it."""
    match = _TARGET.match(weight)
    return None if match is None else (f"blk.{match[1]}.{match[2]}", int(match[1]))


def linear(plan: Plan, op: Op, gguf: GGUFFile) -> Linear:
    """The op (kind "linear") bound to the file's tensors, its shape checked."""
    weight = op.weights[0]
    shape = (plan.widths[op.out], plan.widths[op.ins[0]])
    found = tuple(gguf.tensors[weight].shape)
    if found != shape:
        raise LilaError(f"weight {weight} of shape {found} does not match the plan {shape}")
    target = target_of(weight)
    return Linear(op.ins[0], op.out, weight, op.weights[1] if len(op.weights) > 1 else None,
                  shape, bool(op.attrs["last_row_only"]), target and target[0],
                  target and target[1])


class LinearWeights:
    """The weights of a quantized backend (native, numba): matrices as rows of the blocks
    its kernels take, converted to Q8_0 where they have none (into `spill` in low-memory
    mode), and 1-D weights (norms, biases, RoPE factors) as fp32 copies."""

    def __init__(self, gguf: GGUFFile, spill: SpillFile | None = None,
                 kept: frozenset[int] = MATMUL_TYPES):
        self.gguf, self.spill, self.kept = gguf, spill, kept
        self.converted: dict[str, str] = {}   # weight name -> the type it was converted from
        self._matrices: dict[str, tuple[int, np.ndarray]] = {}
        self._vectors: dict[str, np.ndarray] = {}

    def matrix(self, name: str) -> tuple[int, np.ndarray]:
        """(type id, uint8 rows of blocks)"""
        if name not in self._matrices:
            ggml_type, rows = matmul_weight(self.gguf, name, self.spill, self.kept)
            original = self.gguf.tensors[name].ggml_type
            if ggml_type != original:
                self.converted[name] = original.name
            self._matrices[name] = (int(ggml_type), rows)
        return self._matrices[name]

    def vector(self, name: str) -> np.ndarray:
        # A writable copy, never a view of the map: only the matmul and embedding kernels
        # read the file, under the native executor's SIGBUS guard; these are read outside
        # it too (RoPE factors, by the calling thread), and numba would otherwise compile
        # its kernels a second time for read-only arrays. They are small.
        if name not in self._vectors:
            self._vectors[name] = np.array(self.gguf.tensor(name), np.float32).reshape(-1)
        return self._vectors[name]
