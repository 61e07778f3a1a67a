"""The numba backend: the plan's ops, in order, each one call of a numba kernel.

It runs wherever numba does and no native kernels were built. At load, each op becomes
a step, a closure over the arrays it reads and writes (activation buffers, weights,
caches), so that a forward pass is a Python loop over steps and nothing else. The
arithmetic is that of the native kernels (see numba_kernels): linear inputs quantized
to 8 bits, integer dots on the weights' own blocks, an fp16 KV cache.

Weights stay in the GGUF map; types without a kernel are converted to Q8_0 at load
(lila.executor.weights: in anonymous memory, or a spill file in low-memory mode), and
1-D weights (norms, biases, rope factors) to fp32.

The memory fabric's adapters are computed as the native executor computes them (see
lila.fabric.packing): Q8_0 products of A, then of the stacked B (as rows with
the tokens' quantized coefficients, or transposed and summed in fp32 by lora_up), added
after the linear's own.
"""
from __future__ import annotations

import math
import os
from typing import Callable

# A decode step runs a few hundred parallel regions; OpenMP's threads spin between them by
# default, and when another process wants a core each region then waits out a scheduler
# time slice (measured: 50 -> 2 tok/s). Passive waiting costs 10-20% on an idle machine.
# Set before numba starts its threads; a user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numba  # noqa: E402
import numpy as np

from lila.errors import LilaError
from lila.executor import numba_kernels as kernels
from lila.executor.kv import KVCache, SingleSequence
from lila.executor.linear import Linear, LinearWeights, linear
from lila.executor.plan import Op, Plan
from lila.executor.memory import CONVERTED, MAPPED
from lila.executor.weights import Q8_0_BLOCK_BYTES, Q8_0_BLOCK_VALUES, SpillFile
from lila.fabric import packing
from lila.formats.gguf import GGUFFile
from lila.formats.quants import GGMLType
from lila.native.abi import NAMESPACES, Q8_DTYPE, Q8_VALUES, TRANSPOSED_RANK

# step(n, pos0, all_logits, kv): one op for a batch of n tokens at positions pos0.. of the
# sequence whose cache is kv
Step = Callable[[int, int, bool, KVCache], None]


class NumbaBackend(SingleSequence):
    name = "numba"

    def __init__(self, plan: Plan, gguf: GGUFFile, *, n_ctx: int, max_batch: int,
                 threads: int | None = None, spill: SpillFile | None = None):
        self.plan, self.gguf, self.n_ctx, self.spill = plan, gguf, n_ctx, spill
        self.max_batch = min(max_batch, n_ctx)
        self.threads = threads
        self.buffers = {name: np.zeros((self.max_batch, width), np.float32)
                        for name, width in plan.widths.items()}
        self._weights = LinearWeights(gguf, spill, kernels.MATMUL_TYPES)
        self.converted = self._weights.converted   # weight name -> the type it was converted from
        self._tokens = np.zeros(self.max_batch, np.int64)
        # the fabric: ops adapters attach to, what each has now, each layer's gates
        self._groups: dict[str, packing.Group] = {}
        self._adapters: dict[str, packing.GroupLayout] = {}
        self._gates = np.zeros((max(len(plan.kv), 1), self.max_batch, NAMESPACES), np.float32)
        self._q8: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._vocab_rows = min((gguf.tensors[op.weights[0]].shape[0] for op in plan.ops
                                if op.kind == "embed"), default=0)
        self._steps = self._compile()

    @staticmethod
    def memory_estimate(plan: Plan, weights: dict, *, n_ctx: int, max_batch: int) -> dict[str, int]:
        max_batch = min(max_batch, n_ctx)
        converted = set()
        for op in plan.ops:
            if op.kind in ("linear", "embed"):
                name = op.weights[0]
                # embedding tables of other types are converted to Q8_0 as well
                kept = kernels.MATMUL_TYPES if op.kind == "linear" else kernels.EMBED_TYPES
                if weights[name].ggml_type not in kept:
                    converted.add(name)
        vectors = {w for op in plan.ops for w in op.weights if len(weights[w].shape) == 1}
        quantized = {op.ins[0] for op in plan.ops if op.kind == "linear"}
        return {
            MAPPED: sum(info.nbytes for info in weights.values()),
            CONVERTED: sum(math.prod(weights[w].shape) // Q8_0_BLOCK_VALUES * Q8_0_BLOCK_BYTES
                           for w in converted),
            "weights (fp32 vectors)": sum(4 * math.prod(weights[w].shape) for w in vectors),
            "KV cache (fp16)": sum(2 * 2 * n_ctx * kv.n_kv_heads * kv.head_dim for kv in plan.kv),
            # fp32 rows, and the 8-bit copies of the rows linears read
            "activations": sum(4 * max_batch * width for width in plan.widths.values())
            # (the same bytes as lila_q8 blocks, kept as three arrays)
            + sum(max_batch * plan.widths[b] // Q8_VALUES * Q8_DTYPE.itemsize for b in quantized),
        }

    def new_kv(self) -> KVCache:
        """An empty KV cache for one sequence: fp16 rows (as uint16) of kv_heads * head_dim."""
        return KVCache.zeroed([(self.n_ctx, kv.n_kv_heads * kv.head_dim) for kv in self.plan.kv],
                              np.uint16, self.n_ctx)

    def forward(self, tokens: np.ndarray, pos0: int, kv: KVCache | None = None, *,
                all_logits: bool = False) -> np.ndarray:
        """As ReferenceBackend.forward."""
        n = len(tokens)
        if not 0 < n <= self.max_batch or pos0 < 0 or pos0 + n > self.n_ctx:
            raise ValueError(f"batch of {n} at position {pos0} does not fit "
                             f"(max batch {self.max_batch}, context {self.n_ctx})")
        self._tokens[:n] = tokens
        if self._tokens[:n].min() < 0 or self._tokens[:n].max() >= self._vocab_rows:
            raise ValueError("token id outside the vocabulary")
        # numba keeps the count per calling thread: set it where the kernels are called
        # from, every time (None: all numba started, its default)
        numba.set_num_threads(min(self.threads or numba.config.NUMBA_NUM_THREADS,
                                  numba.config.NUMBA_NUM_THREADS))
        kv = kv or self.kv
        for step in self._steps:
            step(n, pos0, all_logits, kv)
        logits = self.buffers[self.plan.logits]
        return logits[:n].copy() if all_logits else logits[n - 1:n].copy()

    # -- load: weights ---------------------------------------------------------------------

    def _matrix(self, name: str) -> tuple[int, np.ndarray]:
        return self._weights.matrix(name)

    def _vector(self, name: str) -> np.ndarray:
        return self._weights.vector(name)

    # -- the memory fabric -----------------------------------------------------------------

    def pack_adapter(self, adapter) -> packing.QuantizedAdapter:
        return packing.pack(adapter)

    def prepare_adapters(self, active: list[packing.Active]) -> dict[str, packing.GroupLayout]:
        layouts = {target: packing.layout(group, active) for target, group in self._groups.items()}
        return {target: lay for target, lay in layouts.items() if lay is not None}

    def use_adapters(self, prepared: dict[str, packing.GroupLayout]) -> None:
        self._adapters = prepared

    def adapter_bytes(self, prepared: dict[str, packing.GroupLayout]) -> int:
        return sum(lay.stacked_bytes for lay in prepared.values())

    def _add_adapters(self, lay: packing.GroupLayout, x_q8, first: int, count: int,
                      out: np.ndarray) -> None:
        """out[first:first + count] += the adapters of lay (one part: a linear op), for the
        tokens' quantized input x_q8; and the layer's gates, if lay computes them."""
        q8_0, no_bias = int(GGMLType.Q8_0), np.zeros(0, np.float32)
        rows = slice(first, first + count)
        u = np.zeros((self.max_batch, lay.u_width), np.float32)
        gates = self._gates[lay.layer] if packing.needs_gates(lay) else None
        for down in lay.down:
            product = np.zeros((self.max_batch, down.rows.shape[0]), np.float32)
            kernels.matmul(q8_0, down.rows, *x_q8, first, count, no_bias, product)
            if down.gate_bias is None:
                u[rows] = product[rows]
            else:
                gates[rows, :len(down.gate_bias)] = packing.gate(product[rows] + down.gate_bias)
        stacked, rank = lay.up[0], lay.up_rank[0]
        if stacked is None:
            return
        coef = u[rows] * lay.col_scale
        gated = lay.col_gate >= 0
        if gated.any():
            coef[:, gated] *= gates[rows][:, lay.col_gate[gated]]
        if rank <= TRANSPOSED_RANK:
            kernels.lora_up(stacked, coef, count, out[rows])
            return
        row = packing.padded(coef)       # one part: u's columns are its ranks in order
        blocks = (count, row.shape[1] // Q8_VALUES)
        d, s, qs = np.zeros(blocks, np.float32), np.zeros(blocks, np.float32), np.zeros(row.shape, np.int8)
        kernels.quantize_q8(row, count, d, s, qs)
        product = np.zeros((count, stacked.shape[0]), np.float32)
        kernels.matmul(q8_0, stacked, d, s, qs, 0, count, no_bias, product)
        out[rows] += product

    def _q8_of(self, buffer: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        width = self.plan.widths[buffer]
        if width % Q8_VALUES:
            raise LilaError(f"the numba backend needs matmul inputs in multiples of {Q8_VALUES} values; "
                            f"buffer {buffer!r} has {width}")
        if buffer not in self._q8:
            blocks = (self.max_batch, width // Q8_VALUES)
            self._q8[buffer] = (np.zeros(blocks, np.float32), np.zeros(blocks, np.float32),
                                np.zeros((self.max_batch, width), np.int8))
        return self._q8[buffer]

    # -- load: ops -> steps ----------------------------------------------------------------

    def _compile(self) -> list[Step]:
        steps: list[Step] = []
        quantized: set[str] = set()   # buffers whose 8-bit copy is current
        for op in self.plan.ops:
            if op.kind == "linear" and op.ins[0] not in quantized:
                steps.append(self._quantize_step(op.ins[0]))
                quantized.add(op.ins[0])
            build = getattr(self, "_" + op.kind, None)
            if build is None:
                raise LilaError(f"the numba backend cannot run op {op.kind!r}")
            steps.append(build(op))
            quantized.discard(op.out)
        return steps

    def _quantize_step(self, buffer: str) -> Step:
        x, (d, s, qs) = self.buffers[buffer], self._q8_of(buffer)
        return lambda n, pos0, all_logits, kv: kernels.quantize_q8(x, n, d, s, qs)

    def _embed(self, op: Op) -> Step:
        name = op.weights[0]
        info = self.gguf.tensors[name]
        if info.ggml_type in kernels.EMBED_TYPES:
            ggml_type = int(info.ggml_type)
            table = self.gguf.tensor_bytes(name).reshape(info.shape[0], -1)
        else:
            ggml_type, table = self._matrix(name)
        if info.shape[1] != self.plan.widths[op.out]:
            raise LilaError(f"embedding {name} does not match the plan")
        tokens, scale, out = self._tokens, float(op.attrs["scale"]), self.buffers[op.out]
        return lambda n, pos0, all_logits, kv: kernels.embed(ggml_type, table, tokens, n, scale, out)

    def _rmsnorm(self, op: Op) -> Step:
        x, weight, out = self.buffers[op.ins[0]], self._vector(op.weights[0]), self.buffers[op.out]
        eps, heads = float(op.attrs["eps"]), int(op.attrs["heads"])
        if weight.size * heads != out.shape[1]:
            raise LilaError(f"norm weight {op.weights[0]} does not match the plan")
        return lambda n, pos0, all_logits, kv: kernels.rmsnorm(x, n, weight, eps, heads, out)

    def _linear(self, op: Op) -> Step:
        lin: Linear = linear(self.plan, op, self.gguf)
        wtype, w = self._matrix(lin.weight)
        out, x_q8 = self.buffers[lin.out], self._q8_of(lin.x)
        bias = self._vector(lin.bias) if lin.bias else np.zeros(0, np.float32)
        if lin.target:
            self._groups[lin.target] = packing.Group((lin.target,), lin.layer, lin.computes_gates)

        def step(n: int, pos0: int, all_logits: bool, kv: KVCache) -> None:
            first, count = (n - 1, 1) if lin.last_row_only and not all_logits else (0, n)
            kernels.matmul(wtype, w, *x_q8, first, count, bias, out)
            lay = self._adapters.get(lin.target)
            if lay is not None:
                self._add_adapters(lay, x_q8, first, count, out)
        return step

    def _rope(self, op: Op) -> Step:
        a = op.attrs
        half = a["rot_dim"] // 2
        inv_freq = float(a["base"]) ** (-np.arange(half, dtype=np.float64) * 2 / a["rot_dim"])
        if op.weights:
            inv_freq = inv_freq / self._vector(op.weights[0])
        x, scale, neox = self.buffers[op.out], float(a["scale"]), bool(a["neox"])
        heads, head_dim, rot_dim = int(a["heads"]), int(a["head_dim"]), int(a["rot_dim"])
        return lambda n, pos0, all_logits, kv: kernels.rope(x, n, pos0, heads, head_dim, rot_dim,
                                                        inv_freq, scale, neox)

    def _attention(self, op: Op) -> Step:
        a = op.attrs
        q, k, v = (self.buffers[name] for name in op.ins)
        layer, heads, head_dim = a["layer"], int(a["heads"]), int(a["head_dim"])
        scale, window, out = float(a["scale"]), int(a["window"] or 0), self.buffers[op.out]
        kv = self.plan.kv[layer]
        if (heads % a["kv_heads"] or k.shape[1] != kv.n_kv_heads * kv.head_dim
                or q.shape[1] != heads * head_dim):
            raise LilaError(f"attention of layer {layer} does not match its buffers")
        return lambda n, pos0, all_logits, kv: kernels.attention(
            q, k, v, n, pos0, kv.k[layer], kv.v[layer], heads, head_dim, scale, window, out)

    def _glu(self, op: Op) -> Step:
        gate, up, out = self.buffers[op.ins[0]], self.buffers[op.ins[1]], self.buffers[op.out]
        kernel = {"silu": kernels.silu_mul, "gelu_tanh": kernels.gelu_mul}[op.attrs["activation"]]
        return lambda n, pos0, all_logits, kv: kernel(gate, up, n, out)

    def _add(self, op: Op) -> Step:
        a, b, out = self.buffers[op.ins[0]], self.buffers[op.ins[1]], self.buffers[op.out]
        return lambda n, pos0, all_logits, kv: kernels.add(a, b, n, out)
