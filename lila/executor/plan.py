"""The model as data: a plan of operations over named, preallocated buffers.

A model file describes its forward pass once, at load, by appending ops to a `Plan`.
A backend then executes the plan for each batch of tokens. Python never walks the
architecture per token: the reference backend interprets the op list, and native
backends can run the same list without returning to Python between ops.

Activation buffers hold one row per token of the current batch (width columns each).
The KV cache is declared per layer; the backend owns its storage.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Op:
    kind: str
    out: str
    ins: tuple[str, ...] = ()
    weights: tuple[str, ...] = ()
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class KVSpec:
    n_kv_heads: int
    head_dim: int


@dataclass
class Plan:
    """Ops in execution order, the activation buffers they use and the KV cache layout.

    The builder methods are the vocabulary model files are written in; each appends
    one op and declares its output buffer with the given width.
    """

    vocab_size: int
    ops: list[Op] = field(default_factory=list)
    widths: dict[str, int] = field(default_factory=dict)
    kv: list[KVSpec] = field(default_factory=list)
    logits: str = "logits"

    def _emit(self, kind: str, out: str, width: int, ins: tuple[str, ...] = (),
              weights: tuple[str, ...] = (), **attrs: Any) -> str:
        for name in ins:
            if name not in self.widths:
                raise ValueError(f"op {kind} reads buffer {name!r} before it is written")
        declared = self.widths.setdefault(out, width)
        if declared != width:
            raise ValueError(f"buffer {out!r} declared with width {declared}, op {kind} writes {width}")
        self.ops.append(Op(kind, out, ins, weights, attrs))
        return out

    def embed(self, out: str, table: str, width: int, *, scale: float = 1.0) -> str:
        """out[t] = table[token t] * scale"""
        return self._emit("embed", out, width, (), (table,), scale=scale)

    def rmsnorm(self, out: str, x: str, weight: str, *, eps: float, heads: int = 1) -> str:
        """RMS-normalise each row of x (or each of its `heads` equal slices), times weight."""
        return self._emit("rmsnorm", out, self.widths[x], (x,), (weight,), eps=eps, heads=heads)

    def linear(self, out: str, x: str, weight: str, out_width: int, *, bias: str | None = None,
               last_row_only: bool = False) -> str:
        """out = x @ weight.T (+ bias). last_row_only: only the last token's row is needed
        (the LM head during generation); the backend may skip the others."""
        weights = (weight,) if bias is None else (weight, bias)
        return self._emit("linear", out, out_width, (x,), weights, last_row_only=last_row_only)

    def rope(self, x: str, *, heads: int, head_dim: int, rot_dim: int, base: float,
             scale: float, neox: bool, freq_factors: str | None = None) -> str:
        """Rotate the first rot_dim dims of each head of x in place: pair j turns by angle
        position * scale * base**(-2j/rot_dim) / freq_factors[j].
        neox: pairs are (j, j + rot_dim/2); otherwise adjacent (2j, 2j + 1)."""
        weights = () if freq_factors is None else (freq_factors,)
        return self._emit("rope", x, self.widths[x], (x,), weights, heads=heads, head_dim=head_dim,
                          rot_dim=rot_dim, base=base, scale=scale, neox=neox)

    def attention(self, out: str, q: str, k: str, v: str, *, layer: int, heads: int,
                  kv_heads: int, head_dim: int, scale: float, window: int | None) -> str:
        """Store k, v at the batch's positions in layer's cache, then causal attention of q
        over the cache. window: attend only to the last `window` positions (sliding window)."""
        if len(self.kv) != layer:
            raise ValueError(f"attention layers must be emitted in order (got {layer})")
        self.kv.append(KVSpec(kv_heads, head_dim))
        return self._emit("attention", out, heads * head_dim, (q, k, v), (), layer=layer,
                          heads=heads, kv_heads=kv_heads, head_dim=head_dim, scale=scale,
                          window=window)

    def glu(self, out: str, gate: str, up: str, *, activation: str) -> str:
        """out = activation(gate) * up, activation in {"silu", "gelu_tanh"}."""
        return self._emit("glu", out, self.widths[gate], (gate, up), (), activation=activation)

    def moe(self, out: str, x: str, router: str, gate: str, up: str, down: str, *,
            experts: int, used: int, norm_topk: bool, activation: str, out_width: int,
            shared: tuple[str, str, str, str] | None = None) -> str:
        """A mixture of experts: for each row, p = softmax(router @ x) over the experts, the
        `used` largest picked (their p renormalised to sum 1 when norm_topk), and
        out = sum over picked e of p_e * down[e] @ (activation(gate[e] @ x) * (up[e] @ x)).
        gate, up and down are 3-D, the experts stacked on the first axis. shared: a shared
        expert every row also goes through, (gate, up, down, its gate vector w), adding
        sigmoid(w . x) * down @ (activation(gate @ x) * (up @ x))."""
        return self._emit("moe", out, out_width, (x,), (router, gate, up, down, *(shared or ())),
                          experts=experts, used=used, norm_topk=norm_topk, activation=activation)

    def add(self, out: str, a: str, b: str) -> str:
        return self._emit("add", out, self.widths[a], (a, b))

    def output(self, x: str, weight: str) -> str:
        """The LM head: the plan's result, one row of logits per token that asks for it."""
        return self.linear(self.logits, x, weight, self.vocab_size, last_row_only=True)
