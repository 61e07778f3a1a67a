"""The reference backend: every op in plain numpy, fp32, written to be obviously right.

It is the oracle native kernels are tested against, not a fast path. It dequantizes the
weights the plan multiplies by into fp32 arrays once, at start (the GGUF map itself is
never copied); embedding rows are dequantized from the map as tokens need them.

The memory fabric's adapters are applied as their formula reads, in fp32 from the
adapter file's values: y = W x + sum over namespaces n of g_n s_n B_n (A_n x), with
g_n = sigmoid(w_n . x̂ + b_n) for a gated namespace (0 below 1/1024), else 1.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from lila.executor.kv import KVCache, SingleSequence
from lila.executor.linear import Linear, linear
from lila.executor.memory import MAPPED
from lila.executor.plan import Op, Plan
from lila.fabric.packing import gate, sigmoid
from lila.formats.gguf import GGUFFile
from lila.formats.quants import dequantize


class ReferenceBackend(SingleSequence):
    name = "reference"

    def __init__(self, plan: Plan, gguf: GGUFFile, *, n_ctx: int, max_batch: int):
        self.plan, self.gguf = plan, gguf
        self.n_ctx, self.max_batch = n_ctx, max_batch
        self.weights = {name: gguf.tensor(name) for name in sorted(_dense_weights(plan))}
        self.buffers = {name: np.zeros((max_batch, width), np.float32)
                        for name, width in plan.widths.items()}
        self.linears = {id(op): linear(plan, op, gguf) for op in plan.ops if op.kind == "linear"}
        self._adapters: list = []   # lila.fabric.packing.Active, with the adapters as read
        self._gates: dict[int, dict[int, np.ndarray]] = {}   # layer -> namespace -> (tokens,)

    @staticmethod
    def memory_estimate(plan: Plan, weights: dict, *, n_ctx: int, max_batch: int) -> dict[str, int]:
        return {
            MAPPED: sum(info.nbytes for info in weights.values()),
            "weights (fp32 copy)": sum(4 * math.prod(weights[w].shape) for w in _dense_weights(plan)),
            "KV cache": sum(2 * 4 * n_ctx * kv.n_kv_heads * kv.head_dim for kv in plan.kv),
            "activations": sum(4 * max_batch * width for width in plan.widths.values()),
        }

    def new_kv(self) -> KVCache:
        """An empty KV cache for one sequence: fp32 (n_ctx, kv_heads, head_dim) per layer."""
        return KVCache.zeroed([(self.n_ctx, kv.n_kv_heads, kv.head_dim) for kv in self.plan.kv],
                              np.float32, self.n_ctx)

    def forward(self, tokens: np.ndarray, pos0: int, kv: KVCache | None = None, *,
                all_logits: bool = False) -> np.ndarray:
        """Run the plan for tokens at positions pos0.. of the sequence whose cache is kv
        (default: the backend's own), which holds positions < pos0. Returns logits of
        every token (all_logits) or of the last one, shape (rows, vocab)."""
        n = len(tokens)
        if not 0 < n <= self.max_batch or pos0 < 0 or pos0 + n > self.n_ctx:
            raise ValueError(f"batch of {n} at position {pos0} does not fit "
                             f"(max batch {self.max_batch}, context {self.n_ctx})")
        self.tokens = np.asarray(tokens, dtype=np.int64)
        self.positions = pos0 + np.arange(n)
        self.all_logits = all_logits
        self.cache = kv or self.kv
        for op in self.plan.ops:
            getattr(self, "_" + op.kind)(op, n)
        logits = self.buffers[self.plan.logits]
        return logits[:n].copy() if all_logits else logits[n - 1:n].copy()

    def _in(self, op: Op, n: int, i: int = 0) -> np.ndarray:
        return self.buffers[op.ins[i]][:n]

    def _embed(self, op: Op, n: int) -> None:
        info = self.gguf.tensors[op.weights[0]]
        rows = self.gguf.tensor_bytes(op.weights[0]).reshape(info.shape[0], -1)[self.tokens]
        table = dequantize(rows.reshape(-1), info.ggml_type, (n, info.shape[1]))
        self.buffers[op.out][:n] = table * np.float32(op.attrs["scale"])

    def _rmsnorm(self, op: Op, n: int) -> None:
        heads = op.attrs["heads"]
        x = self._in(op, n).reshape(n, heads, -1)
        rms = np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + np.float32(op.attrs["eps"]))
        out = x / rms * self.weights[op.weights[0]]
        self.buffers[op.out][:n] = out.reshape(n, -1)

    def _linear(self, op: Op, n: int) -> None:
        lin: Linear = self.linears[id(op)]
        rows = slice(n - 1, n) if lin.last_row_only and not self.all_logits else slice(0, n)
        x = self._in(op, n)[rows]
        out = x @ self.weights[lin.weight].T
        if lin.bias:
            out += self.weights[lin.bias]
        if lin.computes_gates:
            self._gates[lin.layer] = {a.namespace: gate(x @ a.gate.weight[lin.layer] + a.gate.bias[lin.layer])
                                      for a in self._adapters if a.gate is not None}
        for a in self._adapters:
            lora = a.packed.lora.get(lin.target)
            if lora is not None:
                g = self._gates[lin.layer][a.namespace][:, None] if a.gate is not None else 1
                out += g * np.float32(lora.scale * a.scale) * ((x @ lora.a.T) @ lora.b.T)
        self.buffers[op.out][rows] = out

    # -- the memory fabric: the adapters as read, in fp32 --------------------------------

    def pack_adapter(self, adapter) -> "_Fp32Adapter":
        lora = dict(adapter.lora)
        return _Fp32Adapter(lora, sum(x.a.nbytes + x.b.nbytes for x in lora.values()))

    def prepare_adapters(self, active: list) -> list:
        return list(active)

    def use_adapters(self, prepared: list) -> None:
        self._adapters = prepared

    def adapter_bytes(self, prepared: list) -> int:
        return 0

    def _rope(self, op: Op, n: int) -> None:
        a = op.attrs
        half = a["rot_dim"] // 2
        inv_freq = a["base"] ** (-np.arange(half, dtype=np.float64) * 2 / a["rot_dim"])
        if op.weights:
            inv_freq = inv_freq / self.weights[op.weights[0]]
        angles = (self.positions * a["scale"])[:, None] * inv_freq[None, :]
        cos = np.cos(angles).astype(np.float32)[:, None, :]
        sin = np.sin(angles).astype(np.float32)[:, None, :]
        x = self.buffers[op.out][:n].reshape(n, a["heads"], a["head_dim"])
        if a["neox"]:
            x1, x2 = x[..., :half].copy(), x[..., half:2 * half].copy()
            x[..., :half], x[..., half:2 * half] = x1 * cos - x2 * sin, x2 * cos + x1 * sin
        else:
            x1, x2 = x[..., 0:2 * half:2].copy(), x[..., 1:2 * half:2].copy()
            x[..., 0:2 * half:2], x[..., 1:2 * half:2] = x1 * cos - x2 * sin, x2 * cos + x1 * sin

    def _attention(self, op: Op, n: int) -> None:
        a = op.attrs
        layer, hd, kvh = a["layer"], a["head_dim"], a["kv_heads"]
        group = a["heads"] // kvh
        pos0, end = int(self.positions[0]), int(self.positions[-1]) + 1
        k_cache, v_cache = self.cache.k[layer], self.cache.v[layer]
        k_cache[pos0:end] = self._in(op, n, 1).reshape(n, kvh, hd)
        v_cache[pos0:end] = self._in(op, n, 2).reshape(n, kvh, hd)
        keys, values = k_cache[:end], v_cache[:end]
        q = self._in(op, n, 0).reshape(n, kvh, group, hd)
        scores = np.einsum("nkgd,tkd->kgnt", q, keys) * np.float32(a["scale"])
        key_pos = np.arange(end)
        masked = key_pos[None, :] > self.positions[:, None]
        if a["window"] is not None:
            masked |= self.positions[:, None] - key_pos[None, :] >= a["window"]
        probs = _softmax(np.where(masked, -np.inf, scores))
        out = np.einsum("kgnt,tkd->nkgd", probs, values)
        self.buffers[op.out][:n] = out.reshape(n, -1)

    def _glu(self, op: Op, n: int) -> None:
        gate, up = self._in(op, n, 0), self._in(op, n, 1)
        self.buffers[op.out][:n] = _activation(op.attrs["activation"], gate) * up

    def _moe(self, op: Op, n: int) -> None:
        x = self._in(op, n)
        router, gate, up, down = (self.weights[w] for w in op.weights[:4])
        probs = _softmax(x @ router.T)
        picked = np.argsort(-probs, axis=1, kind="stable")[:, :op.attrs["used"]]
        weights = np.take_along_axis(probs, picked, axis=1)
        if op.attrs["norm_topk"]:
            weights /= weights.sum(axis=1, keepdims=True)
        act = op.attrs["activation"]
        out = np.zeros((n, down.shape[1]), np.float32)
        for t in range(n):
            for e, w in zip(picked[t], weights[t]):
                out[t] += w * (down[e] @ (_activation(act, gate[e] @ x[t]) * (up[e] @ x[t])))
        if len(op.weights) > 4:
            s_gate, s_up, s_down, s_w = (self.weights[w] for w in op.weights[4:])
            shared = (_activation(act, x @ s_gate.T) * (x @ s_up.T)) @ s_down.T
            out += shared * sigmoid(x @ s_w)[:, None]
        self.buffers[op.out][:n] = out

    def _add(self, op: Op, n: int) -> None:
        self.buffers[op.out][:n] = self._in(op, n, 0) + self._in(op, n, 1)


def _softmax(x: np.ndarray) -> np.ndarray:
    """Along the last axis."""
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _activation(name: str, x: np.ndarray) -> np.ndarray:
    """silu or tanh-approximated gelu."""
    if name == "silu":
        return x * sigmoid(x)
    c = np.float32(math.sqrt(2 / math.pi))
    return 0.5 * x * (1 + np.tanh(c * (x + np.float32(0.044715) * x ** 3)))


@dataclass(frozen=True)
class _Fp32Adapter:
    lora: dict          # target -> lila.fabric.adapter.LoRA
    nbytes: int


def _dense_weights(plan: Plan) -> set[str]:
    """The weights this backend multiplies by, and so keeps dequantized in fp32."""
    return {w for op in plan.ops if op.kind != "embed" for w in op.weights}
