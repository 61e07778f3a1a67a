"""The memory fabric of a loaded model: named namespaces, each holding at most one LoRA
adapter, mixed into every adapted projection as

    y = W x + sum_n g_n * s_n * B_n (A_n x)

where s_n is the adapter's alpha / r (alpha / sqrt(r) with rsLoRA) times the scale the user
sets, and g_n, per token and layer, is sigmoid(w_n . x̂ + b_n) for a namespace with a gate
(x̂: the layer's RMS-normalised attention input), or 1. A gate below 1/1024 is shut: 0, so
that an adapter gated off leaves the outputs exactly as without it.

Changes are live: an adapter is read, checked against the base model and packed for the
backend outside any forward pass; then the backend switches to it between two passes,
under the engine's lock. A generation running meanwhile in another thread goes on with
the new adapters from its next token; the base model is never touched.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass, replace
from typing import Any, Sequence

import numpy as np

from lila.arguments import check_real, check_type, shown
from lila.errors import LilaError
from lila.fabric.adapter import Adapter, Base, Gate, read_adapter
from lila.fabric.packing import Active
from lila.native.abi import NAMESPACES

# What each namespace is for, by default: who the assistant is, what it can do, what it
# knows, who it talks to, and what it learnt in this conversation.
DEFAULT_NAMESPACES = ("persona", "skill", "domain", "user", "session")


@dataclass(frozen=True)
class Namespace:
    """One namespace as `Fabric.namespaces` reports it."""

    name: str
    path: str | None = None         # the adapter's file, None when empty
    format: str | None = None       # "peft" or "gguf"
    ranks: tuple[int, ...] = ()
    modules: tuple[str, ...] = ()   # GGUF projection names: attn_q, ..., ffn_down
    scale: float = 1.0              # the user's, on top of the adapter's alpha / r
    gate: str | None = None         # None (a constant scale), "file" or "set"
    memory: int = 0                 # bytes of the adapter as the backend keeps it

    @property
    def loaded(self) -> bool:
        return self.path is not None


@dataclass(frozen=True)
class _Slot:
    info: Namespace
    packed: Any
    gate: Gate | None


class Fabric:
    def __init__(self, engine, base: Base, names: Sequence[str] = DEFAULT_NAMESPACES):
        self.engine, self.base = engine, base
        self.names = _check_names(names)
        self._slots: list[_Slot | None] = [None] * len(self.names)
        self._stacked = 0
        self._lock = threading.Lock()   # one change at a time

    @property
    def namespaces(self) -> list[Namespace]:
        return [slot.info if slot else Namespace(name) for name, slot in zip(self.names, self._slots)]

    @property
    def memory(self) -> int:
        """Bytes the loaded adapters take: each adapter's own, and what stacking them
        for the kernels adds."""
        return sum(slot.info.memory for slot in self._slots if slot) + self._stacked

    def load(self, namespace: str, path: str | os.PathLike, *, scale: float = 1.0) -> Namespace:
        """Read the adapter at path (PEFT directory or GGUF LoRA), check it against the
        model and put it in namespace, replacing what was there. A gate in the file is
        used; otherwise the adapter's scale is constant."""
        index = self._index(namespace)
        _check_scale(scale)
        check_type("path", path, (str, os.PathLike), "a file or directory path")
        adapter: Adapter = read_adapter(path, self.base)
        backend = self.engine.backend
        packed = backend.pack_adapter(adapter)
        info = Namespace(self.names[index], str(adapter.path), adapter.format,
                         tuple(sorted(adapter.ranks)), tuple(sorted(adapter.modules)), float(scale),
                         "file" if adapter.gate else None, packed.nbytes)
        with self._lock:
            self._apply(index, _Slot(info, packed, adapter.gate))
        return info

    def unload(self, namespace: str) -> None:
        """Empty the namespace; with every namespace empty, the model's outputs are those
        of the base, bit for bit."""
        index = self._index(namespace)
        with self._lock:
            if self._slots[index] is not None:
                self._apply(index, None)

    def set_scale(self, namespace: str, scale: float) -> None:
        """The user's scale of the namespace's adapter (0 turns it off; negative ones
        subtract it)."""
        index = self._index(namespace)
        _check_scale(scale)
        with self._lock:
            slot = self._loaded(index)
            self._apply(index, replace(slot, info=replace(slot.info, scale=float(scale))))

    def set_gate(self, namespace: str, weight: Any, bias: Any = 0.0) -> None:
        """Gate the namespace's adapter per token: g = sigmoid(weight . x̂ + bias), weight
        of shape (dim,) for every layer or (layers, dim), bias a number or one per layer.
        weight None removes the gate (a constant scale)."""
        index = self._index(namespace)
        gate = None if weight is None else _gate(weight, bias, self.base)
        with self._lock:
            slot = self._loaded(index)
            origin = None if gate is None else "set"
            self._apply(index, replace(slot, gate=gate, info=replace(slot.info, gate=origin)))

    def _apply(self, index: int, slot: _Slot | None) -> None:
        """Make slots[index] = slot the backend's adapters (under self._lock)."""
        slots = list(self._slots)
        slots[index] = slot
        active = [Active(i, s.packed, s.info.scale, s.gate) for i, s in enumerate(slots) if s]
        backend = self.engine.backend
        prepared = backend.prepare_adapters(active)     # the heavy part, between passes
        self.engine.reconfigure(lambda: backend.use_adapters(prepared))
        self._slots, self._stacked = slots, backend.adapter_bytes(prepared)

    def _index(self, namespace: Any) -> int:
        if namespace not in self.names:
            raise LilaError(f"no namespace {shown(namespace)}; the namespaces are "
                            f"{', '.join(self.names)}")
        return self.names.index(namespace)

    def _loaded(self, index: int) -> _Slot:
        slot = self._slots[index]
        if slot is None:
            raise LilaError(f"namespace {self.names[index]!r} holds no adapter")
        return slot


def _check_names(names: Any) -> tuple[str, ...]:
    if isinstance(names, str) or not isinstance(names, Sequence):
        raise LilaError(f"namespaces must be a list of names, not {shown(names)}")
    names = tuple(names)
    if not 1 <= len(names) <= NAMESPACES:
        raise LilaError(f"the fabric has 1 to {NAMESPACES} namespaces, not {len(names)}")
    for name in names:
        if not isinstance(name, str) or not name.isidentifier():
            raise LilaError(f"a namespace name is a word of letters, digits and _, not {shown(name)}")
    if len(set(names)) != len(names):
        raise LilaError(f"namespace names must differ: {', '.join(names)}")
    return names


def _check_scale(scale: Any) -> None:
    check_real("scale", scale, lambda s: abs(s) <= 1e4, "between -10000 and 10000")


def _gate(weight: Any, bias: Any, base: Base) -> Gate:
    layers, dim = base.n_layers, base.dim
    try:
        w = np.array(weight, np.float32)
        b = np.array(bias, np.float32)
    except (TypeError, ValueError) as e:
        raise LilaError(f"gate weight and bias must be arrays of numbers: {e}") from None
    if w.shape not in ((dim,), (layers, dim)):
        raise LilaError(f"gate weight must have shape ({dim},) or ({layers}, {dim}), not {w.shape}")
    if b.shape not in ((), (1,), (layers,)):
        raise LilaError(f"gate bias must be a number or have shape ({layers},), not {b.shape}")
    if not (np.isfinite(w).all() and np.isfinite(b).all()):
        raise LilaError("gate weight and bias must be finite")
    return Gate.per_layer(w, b, layers)
