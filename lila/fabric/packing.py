"""Adapters in the form the quantized backends (native, numba) multiply them in.

Each adapter is packed once, when it is loaded: its A matrices as Q8_0 rows, and its B
matrices in fp16 as read. Each time the set of adapters changes, `layout` puts together
what every backend op needs, so that both of an adapter's products run on the Q8_0 matmul
kernels the base model already has:

  - the A rows of every adapter on any part of the op, stacked into one matrix: one
    product over the op's input, u = A x; and, for the op whose input is x̂, the gate
    vectors of the layer, stacked likewise (row n: namespace n);
  - per part, B of its adapters side by side along the rank (r = rank_1 + rank_2 + ...),
    in Q8_0, multiplied by each token's coefficients (u scaled and gated) by the thread
    that computes the part's rows, in one of two forms by r (lila_executor.h, lila_lora):
    above TRANSPOSED_RANK, rows of r values (zero-padded to whole blocks), one per output
    row, which the matmul kernels multiply by the coefficients quantized like any
    activation; up to it, transposed: r rows along the output, stored block-major, which
    lila_lora_up scales by the fp32 coefficients and sums. Rows of a few blocks pay a
    reduction per output row that a small rank cannot pay off, and a rank of 16 or less
    would fill half a block with zeros; transposed, a tile of rows is a few fused
    multiply-adds per rank, but per rank, which a large r makes costlier than the rows.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from lila.executor.weights import Q8_0_BLOCK_BYTES as BLOCK_BYTES, quantize_q8_0
from lila.native.abi import GATE_FLOOR, Q8_VALUES, TRANSPOSED_RANK

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
    b: dict[str, np.ndarray]        # target -> (out, rank) float16
    scale: dict[str, float]         # target -> the adapter's own alpha / r

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.a.values()) + sum(b.nbytes for b in self.b.values())


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
        b={t: lora.b.astype(np.float16) for t, lora in adapter.lora.items()},
        scale={t: lora.scale for t, lora in adapter.lora.items()})


def blocks(width: int) -> int:
    """Blocks of 32 that hold `width` values."""
    return -(-width // Q8_VALUES)


def padded(rows: np.ndarray) -> np.ndarray:
    """rows with zeros appended to whole blocks of 32."""
    out = np.zeros((rows.shape[0], blocks(rows.shape[1]) * Q8_VALUES), np.float32)
    out[:, :rows.shape[1]] = rows
    return out


def _b_form(b: np.ndarray) -> np.ndarray:
    """B (out, r) as the kernels take it: Q8_0 rows of r, or transposed and block-major
    (every rank's block 0, then every rank's block 1, ...: a tile of output rows is then
    one run of memory, where rank by rank it would be as many short runs as the rank,
    more streams than the prefetchers follow)."""
    if b.shape[1] > TRANSPOSED_RANK:
        return quantize_q8_0(padded(b))
    rank = b.shape[1]
    bt = quantize_q8_0(padded(b.T))
    return np.ascontiguousarray(bt.reshape(rank, -1, BLOCK_BYTES).transpose(1, 0, 2)).reshape(-1, rank * BLOCK_BYTES)


@dataclass
class Down:
    """One product of an op's input: the stacked A rows (u), or the layer's gate vectors
    (row n: namespace n's gate)."""

    rows: np.ndarray                # Q8_0 rows
    gate_bias: np.ndarray | None    # gates: (rows,) fp32, one per row


@dataclass
class GroupLayout:
    down: list[Down]                # the stacked A rows, then the gate rows; either may be absent
    u_width: int                    # columns of u: each part's ranks, one part after another
    col_scale: np.ndarray           # (u_width,) fp32: alpha / r times the user's scale
    col_gate: np.ndarray            # (u_width,) int32: the namespace whose gate scales it
    col_slot: np.ndarray            # (u_width,) int32: its place in the coefficient row
    up: list[np.ndarray | None]     # per part: its adapters' B side by side (_b_form); or None
    up_block: list[int]             # per part: its first block of the coefficient row
    up_rank: list[int]              # per part: its stacked ranks
    layer: int | None
    stacked_bytes: int

    @property
    def coef_blocks(self) -> int:
        """Blocks of the coefficient row: each part's ranks, one part after another."""
        return sum(blocks(rank) for rank in self.up_rank)


def layout(group: Group, active: Sequence[Active]) -> GroupLayout | None:
    """What the op needs for the adapters in `active`; None if it takes no part."""
    a_rows: list[np.ndarray] = []
    scales: list[float] = []
    gates: list[int] = []
    slots: list[int] = []
    up: list[np.ndarray | None] = []
    up_block: list[int] = []
    up_rank: list[int] = []
    for target in group.targets:
        on = [a for a in active if target is not None and target in a.packed.a]
        up_block.append(sum(blocks(rank) for rank in up_rank))
        up_rank.append(sum(a.packed.a[target].shape[0] for a in on))
        up.append(_b_form(np.concatenate([a.packed.b[target] for a in on], axis=1)) if on else None)
        first = up_block[-1] * Q8_VALUES
        for a in on:
            rank = a.packed.a[target].shape[0]
            slots += range(first, first + rank)
            first += rank
            a_rows.append(a.packed.a[target])
            scales += [a.packed.scale[target] * a.scale] * rank
            gates += [a.namespace if a.gate is not None else NO_GATE] * rank
    down = [Down(np.concatenate(a_rows), None)] if a_rows else []
    gated = [a for a in active if a.gate is not None] if group.computes_gates else []
    if gated:
        namespaces = max(a.namespace for a in gated) + 1
        weight = np.zeros((namespaces, gated[0].gate.weight.shape[1]), np.float32)
        bias = np.zeros(namespaces, np.float32)
        for a in gated:
            weight[a.namespace] = a.gate.weight[group.layer]
            bias[a.namespace] = a.gate.bias[group.layer]
        down.append(Down(quantize_q8_0(weight), bias))
    if not down:
        return None
    stacked = sum(d.rows.nbytes for d in down) + sum(u.nbytes for u in up if u is not None)
    return GroupLayout(down, len(scales), np.array(scales, np.float32), np.array(gates, np.int32),
                       np.array(slots, np.int32), up, up_block, up_rank, group.layer, stacked)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)) in fp32, overflow-free."""
    return (0.5 + 0.5 * np.tanh(0.5 * np.asarray(x, np.float32))).astype(np.float32)


def gate(logit: np.ndarray) -> np.ndarray:
    """A namespace's gate, sigmoid(logit), shut (0) below GATE_FLOOR: a shut adapter then
    leaves the outputs bit for bit as they are."""
    g = sigmoid(logit)
    return np.where(g < GATE_FLOOR, np.float32(0), g)


def needs_gates(lay: GroupLayout) -> bool:
    return bool((lay.col_gate >= 0).any()) or any(d.gate_bias is not None for d in lay.down)
