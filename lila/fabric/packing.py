"""Adapters in the form the quantized backends (native, numba) multiply them in.

Each adapter is packed once, when it is loaded: its A matrices as Q8_0 rows, which the
existing Q8_0 kernels multiply by a layer's quantized input, and its B matrices in fp16.
Each time the set of adapters changes, `layout` stacks what every backend op needs:

  - the A rows of every adapter on any part of the op, one product over the op's input
    (with the gate vectors, for the op whose input is x̂);
  - per part, the B matrices of its adapters side by side along the rank, padded to
    whole blocks of 32 and quantized to Q8_0 together, so that B's contribution is one
    more Q8_0 product of the part's rows, by the thread that computes those rows.

Only the stacked B is rebuilt on a change, from the fp16 kept per adapter; A and gate
rows are used where they are.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from lila.executor.weights import quantize_q8_0
from lila.native.abi import Q8_VALUES

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
    b: dict[str, np.ndarray]        # target -> (out, rank) fp16
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
    u_width: int                    # columns of u: each part's ranks, padded to 32
    col_scale: np.ndarray           # (u_width,) fp32: alpha / r times the user's scale
    col_gate: np.ndarray            # (u_width,) int32: the namespace whose gate scales it
    up: list[np.ndarray | None]     # per part: stacked B as Q8_0 rows, or None
    up_col: list[int]
    up_width: list[int]
    layer: int | None
    stacked_bytes: int = field(default=0)


def layout(group: Group, active: Sequence[Active]) -> GroupLayout | None:
    """What the op needs for the adapters in `active`; None if it takes no part."""
    down: list[Down] = []
    scales: list[float] = []
    gates: list[int] = []
    up: list[np.ndarray | None] = []
    up_col: list[int] = []
    up_width: list[int] = []
    for target in group.targets:
        on = [a for a in active if target is not None and target in a.packed.a]
        start = len(scales)
        up_col.append(start)
        if not on:
            up.append(None)
            up_width.append(0)
            continue
        for a in on:
            rank = a.packed.a[target].shape[0]
            down.append(Down(a.packed.a[target], len(scales), None))
            scales += [a.packed.scale[target] * a.scale] * rank
            gates += [a.namespace if a.gate is not None else NO_GATE] * rank
        width = -(-(len(scales) - start) // Q8_VALUES) * Q8_VALUES
        stacked = np.zeros((on[0].packed.b[target].shape[0], width), np.float32)
        stacked[:, :len(scales) - start] = np.concatenate([a.packed.b[target] for a in on], axis=1)
        scales += [0.0] * (start + width - len(scales))
        gates += [NO_GATE] * (start + width - len(gates))
        up.append(quantize_q8_0(stacked))
        up_width.append(width)
    if group.computes_gates:
        for a in active:
            if a.gate is not None:
                weight = a.gate.weight[group.layer:group.layer + 1]
                down.append(Down(quantize_q8_0(weight), a.namespace,
                                 a.gate.bias[group.layer:group.layer + 1].astype(np.float32)))
    if not down:
        return None
    return GroupLayout(down, len(scales), np.array(scales, np.float32), np.array(gates, np.int32),
                       up, up_col, up_width, group.layer,
                       sum(u.nbytes for u in up if u is not None))


def needs_gates(lay: GroupLayout) -> bool:
    return bool((lay.col_gate >= 0).any()) or any(d.gate_bias is not None for d in lay.down)
