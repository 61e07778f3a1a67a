"""Adapters in the form the quantized backends (native, numba) multiply them in.

Each adapter is packed once, when it is loaded, in Q8_0: its A matrices as rows, which
the existing Q8_0 kernels multiply by a layer's quantized input, and its B matrices
transposed, rank rows running along the output (zero-padded to whole blocks), which
lila_lora_up scales by each token's coefficients and sums into a tile of output rows.
Each time the set of adapters changes, `layout` puts together what every backend op needs:

  - the A rows of every adapter on any part of the op: one product over the op's input
    (with the gate vectors, for the op whose input is x̂);
  - per part, the transposed B of its adapters stacked along the rank (their rows one
    after the other), so that B's contribution is one pass over the part's rows, by the
    thread that computes those rows.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from lila.executor.weights import Q8_0_BLOCK_BYTES as BLOCK_BYTES, quantize_q8_0
from lila.native.abi import GATE_FLOOR, Q8_VALUES

NO_GATE = -1


@dataclass(frozen=True)
class Group:
    """A backend op adapters can attach to: the fabric target of each of its parts (None
    for a part that takes none), its layer, and whether its input is the layer's x̂."""

    targets: tuple[str | None, ...]
    layer: int | None
    computes_gates: bool


@dataclass
class QuantizedAdapter:
    a: dict[str, np.ndarray]        # target -> Q8_0 rows, (rank, in / 32 * 34) uint8
    bt: dict[str, np.ndarray]       # target -> Q8_0 rows of B transposed, (rank, ceil(out / 32) * 34)
    scale: dict[str, float]         # target -> the adapter's own alpha / r

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.a.values()) + sum(b.nbytes for b in self.bt.values())


@dataclass(frozen=True)
class Active:
    """One namespace's adapter, as it takes part in forward passes."""

    namespace: int
    packed: object                  # the backend's form of the adapter
    scale: float                    # the user's
    gate: object | None             # lila.fabric.adapter.Gate: None for a constant scale


def pack(adapter) -> QuantizedAdapter:
    return QuantizedAdapter(
        a={t: quantize_q8_0(lora.a) for t, lora in adapter.lora.items()},
        bt={t: quantize_q8_0(_padded(lora.b.T)) for t, lora in adapter.lora.items()},
        scale={t: lora.scale for t, lora in adapter.lora.items()})


def _block_major(bt: np.ndarray) -> np.ndarray:
    """Stacked rows of blocks, (rank, blocks * 34), reordered block by block: every rank's
    block 0, then every rank's block 1, ... A tile of output rows then reads one run of
    memory, where row by row it would read as many short runs as the stacked rank, more
    streams than the prefetchers follow."""
    rank = bt.shape[0]
    return np.ascontiguousarray(bt.reshape(rank, -1, BLOCK_BYTES).transpose(1, 0, 2)).reshape(-1, rank * BLOCK_BYTES)


def _padded(rows: np.ndarray) -> np.ndarray:
    """rows with zeros appended to whole blocks of 32."""
    width = -(-rows.shape[1] // Q8_VALUES) * Q8_VALUES
    out = np.zeros((rows.shape[0], width), np.float32)
    out[:, :rows.shape[1]] = rows
    return out


@dataclass
class Down:
    """One product of an op's input: A rows of an adapter (written to u from column
    `column`), or one namespace's gate vector for the op's layer (column = namespace)."""

    rows: np.ndarray                # Q8_0 rows
    column: int
    gate_bias: np.ndarray | None    # gates: (1,) fp32


@dataclass
class GroupLayout:
    down: list[Down]
    u_width: int                    # columns of u: each part's ranks, one part after another
    col_scale: np.ndarray           # (u_width,) fp32: alpha / r times the user's scale
    col_gate: np.ndarray            # (u_width,) int32: the namespace whose gate scales it
    up: list[np.ndarray | None]     # per part: its adapters' transposed B, stacked, block-major; or None
    up_col: list[int]               # per part: its first column of u
    up_rank: list[int]              # per part: its columns (the stacked ranks)
    layer: int | None
    stacked_bytes: int


def layout(group: Group, active: Sequence[Active]) -> GroupLayout | None:
    """What the op needs for the adapters in `active`; None if it takes no part."""
    down: list[Down] = []
    scales: list[float] = []
    gates: list[int] = []
    up: list[np.ndarray | None] = []
    up_col: list[int] = []
    up_rank: list[int] = []
    for target in group.targets:
        on = [a for a in active if target is not None and target in a.packed.a]
        up_col.append(len(scales))
        up_rank.append(sum(a.packed.a[target].shape[0] for a in on))
        up.append(_block_major(np.concatenate([a.packed.bt[target] for a in on])) if on else None)
        for a in on:
            rank = a.packed.a[target].shape[0]
            down.append(Down(a.packed.a[target], len(scales), None))
            scales += [a.packed.scale[target] * a.scale] * rank
            gates += [a.namespace if a.gate is not None else NO_GATE] * rank
    if group.computes_gates:
        for a in active:
            if a.gate is not None:
                weight = a.gate.weight[group.layer:group.layer + 1]
                down.append(Down(quantize_q8_0(weight), a.namespace,
                                 a.gate.bias[group.layer:group.layer + 1].astype(np.float32)))
    if not down:
        return None
    return GroupLayout(down, len(scales), np.array(scales, np.float32), np.array(gates, np.int32),
                       up, up_col, up_rank, group.layer,
                       sum(u.nbytes for u in up if u is not None))


def gate(logit: np.ndarray) -> np.ndarray:
    """A namespace's gate, sigmoid(logit) in fp32, shut (0) below GATE_FLOOR: a shut
    adapter then leaves the outputs bit for bit as they are."""
    g = (0.5 + 0.5 * np.tanh(0.5 * np.asarray(logit, np.float32))).astype(np.float32)   # overflow-free
    return np.where(g < GATE_FLOOR, np.float32(0), g)


def needs_gates(lay: GroupLayout) -> bool:
    return bool((lay.col_gate >= 0).any()) or any(d.gate_bias is not None for d in lay.down)
