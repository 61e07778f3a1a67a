"""The native backend: the plan compiled to an op array that native/common/executor.c
runs on a pool of threads with one kernel family's assembly kernels.

Compiling fuses what would otherwise be extra passes over memory or extra barriers:
  - an RMSNorm whose output only feeds matmuls is normalised and quantized in one pass;
  - matmuls reading the same input (Q, K, V) become one op, so threads share its rows;
  - gate and up matmuls followed by their GLU become one op writing the GLU output;
  - a matmul whose output is only added to the residual stream accumulates into it.
Weights stay in the GGUF map; only types without kernels are converted (to Q8_0) at load,
into anonymous memory or, in low-memory mode, a spill file (lila.executor.weights).
The program holds no KV cache: each forward pass is given the sequence's (KVCache).

The memory fabric's adapters attach to the matmul ops of the projections they adapt
(lila_op.lora, see lila.fabric.packing), swapped between forward passes. With
fuse_adapters=False each such matmul is instead followed by an op of its own that adds
them, and keeps its GLU and residual add apart: the unfused design, for measuring.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from lila.errors import LilaError, ModelChangedError
from lila.executor.kv import KVCache, SingleSequence
from lila.executor.linear import LinearWeights, linear
from lila.executor.plan import Op, Plan
from lila.executor.memory import CONVERTED, MAPPED
from lila.executor.weights import Q8_0_BLOCK_BYTES, Q8_0_BLOCK_VALUES, SpillFile
from lila.fabric import packing
from lila.formats.gguf import GGUFFile
from lila.native import library
from lila.native.abi import MATMUL_TYPES, NAMESPACES, Q8_DTYPE, Q8_VALUES, WEIGHT_TYPES


class NativeBackend(SingleSequence):
    """Runs a plan with the kernels of one family ("avx2", "avx512-vnni", "neon", ...)."""

    def __init__(self, plan: Plan, gguf: GGUFFile, *, n_ctx: int, max_batch: int,
                 family: str, threads: int, spill: SpillFile | None = None,
                 fuse_adapters: bool = True):
        native = library()
        if native is None:
            raise LilaError("the native library is not built; run `make setup`")
        kernels = native.kernels(family)
        if kernels is None:
            raise LilaError(f"the native library has no {family} kernels")
        self.native, self.family, self.threads = native, family, threads
        self.plan, self.n_ctx, self.max_batch = plan, n_ctx, min(max_batch, n_ctx)
        self.name = family
        program = _Compiler(plan, gguf, native, n_ctx=n_ctx, max_batch=self.max_batch,
                            spill=spill, fuse_adapters=fuse_adapters).compile()
        self._program = program
        self._kernels = kernels
        # each layer's gates, max_batch x NAMESPACES: written by the op reading its x̂
        self._gates = np.zeros((max(len(plan.kv), 1), self.max_batch, NAMESPACES), np.float32)
        self._adapters: _Prepared | None = None   # what the ops' lila_lora point into
        # the kernels each op calls, as the executor itself chooses them
        self._used: dict[str, str | None] = {}
        for i in range(program.struct.n_ops):
            op = program.struct.ops[i]
            slots = native.op_kernels(program.struct.ops + i)
            if slots is None:
                kind = native.ffi.typeof("enum lila_op_kind").elements.get(op.kind, op.kind)
                raise LilaError(f"the native executor cannot run op {i} of the plan ({kind})")
            for slot in slots:
                self._used[native.entry_name(slot)] = native.symbol(native.kernel_at(kernels, slot))
        missing = sorted(entry for entry, symbol in self._used.items() if symbol is None)
        if missing:
            raise LilaError(f"the {family} kernels lack {', '.join(missing)}; rebuild with "
                            f"`python -m lila.native.build`")
        program.struct.kernels = kernels
        ctx = native.lib.lila_create(program.struct, threads)
        if ctx == native.ffi.NULL:
            raise LilaError(f"could not start {threads} threads for the native backend")
        self._ctx = native.ffi.gc(ctx, native.lib.lila_destroy)
        self._tokens = np.zeros(self.max_batch, np.int32)
        self._tokens_ptr = native.ffi.cast("int32_t *", native.ffi.from_buffer(self._tokens))
        self.logits_buffer = program.buffers[plan.logits]
        self.converted = program.converted
        self.path = gguf.path

    # -- the memory fabric ------------------------------------------------------------

    def pack_adapter(self, adapter) -> packing.QuantizedAdapter:
        return packing.pack(adapter)

    def prepare_adapters(self, active: list[packing.Active]) -> "_Prepared":
        """The lila_lora of every op for the adapters in `active` (heavy: outside any
        forward pass), and what they point into."""
        layouts = [(index, packing.layout(group, active)) for index, group in self._program.groups]
        widest = max((lay.u_width for _, lay in layouts if lay), default=0)
        blocks = max((lay.coef_blocks for _, lay in layouts if lay), default=0)
        # Ops run one after another: they share u and each thread's coefficients.
        keep = _Keep()
        shared = (keep(np.zeros(self.max_batch * widest, np.float32)),
                  keep(np.zeros(self.threads * self.max_batch * blocks * Q8_VALUES, np.float32)),
                  keep(np.zeros(self.threads * self.max_batch * blocks, Q8_DTYPE)))
        ops = [(index, self._lora(lay, shared, keep) if lay else self.native.ffi.NULL)
               for index, lay in layouts]
        for index, lora in ops:
            if lora != self.native.ffi.NULL:
                self._check_kernels(index, lora)
        return _Prepared(ops, keep)

    def _check_kernels(self, index: int, lora) -> None:
        """The kernels op `index` calls with `lora` attached, as the executor reports them,
        are in the table (and are named by kernel_names from now on)."""
        op = self.native.ffi.new("lila_op *", self._program.struct.ops[index])
        op.lora = lora
        for slot in self.native.op_kernels(op) or ():
            symbol = self.native.symbol(self.native.kernel_at(self._kernels, slot))
            if symbol is None:
                raise LilaError(f"the {self.family} kernels lack {self.native.entry_name(slot)}, "
                                f"which adapters need")
            self._used[self.native.entry_name(slot)] = symbol

    def use_adapters(self, prepared: "_Prepared") -> None:
        """Point the ops at `prepared`: only between forward passes."""
        struct_ops = self._program.struct.ops
        for index, lora in prepared.ops:
            struct_ops[index].lora = lora
        self._adapters = prepared

    def adapter_bytes(self, prepared: "_Prepared") -> int:
        """Memory the stacked adapters and their scratch take, beyond each adapter's own."""
        return prepared.keep.nbytes

    def _lora(self, lay: packing.GroupLayout, shared: tuple, keep: "_Keep"):
        ffi = self.native.ffi
        u, coef, coef_q8 = (ffi.from_buffer(a) for a in shared)
        gates = self._gates[lay.layer] if packing.needs_gates(lay) else None
        down = keep.struct(ffi.new("lila_lora_down[]", len(lay.down)))
        for d, item in zip(down, lay.down):
            d.rows = keep.ptr(ffi, item.rows, "void *")
            d.n = item.rows.shape[0]
            if item.gate_bias is None:
                d.out, d.out_stride = ffi.cast("float *", u), lay.u_width
            else:
                d.out, d.out_stride = ffi.cast("float *", ffi.from_buffer(gates)), NAMESPACES
                d.gate_bias = keep.ptr(ffi, item.gate_bias, "float *")
        lora = keep.struct(ffi.new("lila_lora *"))
        lora.down, lora.n_down = down, len(lay.down)
        lora.u, lora.u_width = ffi.cast("float *", u), lay.u_width
        lora.col_scale = keep.ptr(ffi, lay.col_scale, "float *")
        lora.col_gate = keep.ptr(ffi, lay.col_gate, "int32_t *")
        lora.col_slot = keep.ptr(ffi, lay.col_slot, "int32_t *")
        lora.gates = ffi.cast("float *", ffi.from_buffer(gates)) if gates is not None else ffi.NULL
        for i, stacked in enumerate(lay.up):
            lora.up[i] = keep.ptr(ffi, stacked, "void *") if stacked is not None else ffi.NULL
            lora.up_block[i], lora.up_rank[i] = lay.up_block[i], lay.up_rank[i]
        lora.coef_blocks = lay.coef_blocks
        lora.coef, lora.coef_q8 = ffi.cast("float *", coef), ffi.cast("lila_q8 *", coef_q8)
        return lora

    def kernel_names(self) -> dict[str, str]:
        """Each kernel this model runs ("gemv[Q4_1]") and the symbol that implements it
        ("lila_gemv_q4_1_avx2"), as the executor and the library report them."""
        return dict(sorted(self._used.items()))

    @staticmethod
    def memory_estimate(plan: Plan, weights: dict, *, n_ctx: int, max_batch: int) -> dict[str, int]:
        max_batch = min(max_batch, n_ctx)
        matmul_weights = {w for op in plan.ops if op.kind in ("linear", "embed") for w in op.weights[:1]}
        converted = sum(_q8_0_bytes(weights[w].shape) for w in matmul_weights
                        if weights[w].ggml_type not in MATMUL_TYPES
                        and not _embed_only(plan, w, weights))
        return {
            MAPPED: sum(info.nbytes for info in weights.values()),
            CONVERTED: converted,
            "KV cache (fp16)": sum(2 * 2 * n_ctx * kv.n_kv_heads * kv.head_dim for kv in plan.kv),
            # fp32 rows, and their quantized copies (one lila_q8 per Q8_VALUES values)
            "activations": sum(max_batch * width * 4
                               + max_batch * width // Q8_VALUES * Q8_DTYPE.itemsize
                               for width in plan.widths.values()),
        }

    def new_kv(self) -> KVCache:
        """An empty KV cache for one sequence: fp16 rows (as uint16) of kv_heads * head_dim."""
        ffi = self.native.ffi

        def handle(k: list[np.ndarray], v: list[np.ndarray]):
            pointers = [ffi.new("uint16_t *[]", [ffi.cast("uint16_t *", ffi.from_buffer(a))
                                                 for a in arrays] or [ffi.NULL]) for arrays in (k, v)]
            kv = ffi.new("lila_kv *", {"k": pointers[0], "v": pointers[1], "n_layers": len(k),
                                       "n_ctx": self.n_ctx})
            return kv, pointers   # the pointer arrays live as long as the struct
        return KVCache.zeroed([(self.n_ctx, kv.n_kv_heads * kv.head_dim) for kv in self.plan.kv],
                              np.uint16, self.n_ctx, handle)

    def forward(self, tokens: np.ndarray, pos0: int, kv: KVCache | None = None, *,
                all_logits: bool = False) -> np.ndarray:
        """As ReferenceBackend.forward."""
        n = len(tokens)
        if not 0 < n <= self.max_batch or pos0 < 0 or pos0 + n > self.n_ctx:
            raise ValueError(f"batch of {n} at position {pos0} does not fit "
                             f"(max batch {self.max_batch}, context {self.n_ctx})")
        tokens = np.asarray(tokens, np.int64)
        if tokens.min() < 0 or tokens.max() >= 1 << 31:   # would wrap in the int32 copy
            raise ValueError("token id outside the vocabulary")
        self._tokens[:n] = tokens
        lib = self.native.lib
        result = lib.lila_forward(self._ctx, (kv or self.kv).handle[0], self._tokens_ptr, n, pos0,
                                  int(all_logits))
        if result == lib.LILA_FAULT:
            raise ModelChangedError(f"{self.path}: the model file changed on disk while in use "
                                    f"(reading its weights failed); load it again")
        if result != 0:
            raise ValueError("token id outside the vocabulary")
        logits = self.logits_buffer
        return logits[:n].copy() if all_logits else logits[n - 1:n].copy()


class _Prepared(NamedTuple):
    ops: list            # (op index, its lila_lora or NULL)
    keep: "_Keep"        # what they point into


class _Keep:
    """The arrays a lila_lora points into, alive as long as it is; nbytes counts them (all
    made for it: the stacks and the scratch), not the cffi structs."""

    def __init__(self):
        self.arrays: list = []
        self.nbytes = 0

    def struct(self, value):
        self.arrays.append(value)
        return value

    def __call__(self, array: np.ndarray) -> np.ndarray:
        self.arrays.append(array)
        self.nbytes += array.nbytes
        return array

    def ptr(self, ffi, array: np.ndarray, ctype: str):
        self.arrays.append(array)
        self.nbytes += array.nbytes
        return ffi.cast(ctype, ffi.from_buffer(array))


def _q8_0_bytes(shape: tuple[int, ...]) -> int:
    return math.prod(shape) // Q8_0_BLOCK_VALUES * Q8_0_BLOCK_BYTES


def _embed_only(plan: Plan, name: str, weights: dict) -> bool:
    """An embedding table no matmul uses and whose type can be looked up as it is."""
    used_by_linear = any(op.kind == "linear" and op.weights[0] == name for op in plan.ops)
    return not used_by_linear and weights[name].ggml_type in WEIGHT_TYPES


@dataclass
class _Program:
    struct: object               # lila_program *
    buffers: dict[str, np.ndarray]
    converted: dict[str, str]    # weight name -> what it was converted from
    groups: list[tuple[int, packing.Group]]   # ops adapters can attach to, by op index
    keepalive: list


class _Compiler:
    def __init__(self, plan: Plan, gguf: GGUFFile, native, *, n_ctx: int, max_batch: int,
                 spill: SpillFile | None, fuse_adapters: bool):
        self.plan, self.gguf, self.ffi = plan, gguf, native.ffi
        self.n_ctx, self.max_batch, self.fuse_adapters = n_ctx, max_batch, fuse_adapters
        self.weights = LinearWeights(gguf, spill)
        self.keep: list = []
        self.buffers = {name: np.zeros((max_batch, width), np.float32)
                        for name, width in plan.widths.items()}
        self.q8: dict[str, np.ndarray] = {}
        self.groups: list[tuple[int, packing.Group]] = []
        self.ropes: list[tuple] = []

    # -- pointers -------------------------------------------------------------------

    def ptr(self, array: np.ndarray, ctype: str):
        self.keep.append(array)
        return self.ffi.cast(ctype, self.ffi.from_buffer(array))

    def fp32(self, buffer: str):
        return self.ptr(self.buffers[buffer], "float *")

    def q8_of(self, buffer: str):
        width = self.plan.widths[buffer]
        if width % Q8_VALUES:
            raise LilaError(f"the native backend needs matmul inputs in multiples of {Q8_VALUES} "
                            f"values; this model has {width}")
        if buffer not in self.q8:
            self.q8[buffer] = np.zeros((self.max_batch, width // Q8_VALUES), Q8_DTYPE)
        return self.ptr(self.q8[buffer], "lila_q8 *")

    def matrix(self, name: str) -> tuple[int, np.ndarray]:
        return self.weights.matrix(name)

    def vector(self, name: str):
        return self.ptr(self.weights.vector(name), "float *")

    # -- fusion analysis --------------------------------------------------------------

    def readers(self, i: int, buffer: str) -> list[Op]:
        """Ops after i that read buffer's current contents (until it is written again)."""
        found = []
        for op in self.plan.ops[i + 1:]:
            if buffer in op.ins:
                found.append(op)
            if op.out == buffer:
                break
        return found

    # -- compilation -------------------------------------------------------------------

    def compile(self) -> _Program:
        ops = self.plan.ops
        emitted = []
        quantized: set[str] = set()   # buffers whose q8 copy is current
        i = 0
        while i < len(ops):
            op = ops[i]
            if op.kind == "linear":
                group = self.linear_group(i)
                x = op.ins[0]
                if x not in quantized:
                    emitted.append(self.op("QUANTIZE", in_=self.fp32(x), in_stride=self.plan.widths[x],
                                           width=self.plan.widths[x], q8=self.q8_of(x),
                                           q8_stride=self.plan.widths[x] // Q8_VALUES))
                    quantized.add(x)
                consumed = self.matmul(i, group, emitted)
                quantized -= {o.out for o in ops[i:i + consumed]}
                i += consumed
                continue
            if op.kind == "rmsnorm" and op.attrs["heads"] == 1 and self.feeds_only_matmuls(i):
                emitted.append(self.op("RMSNORM_Q8", in_=self.fp32(op.ins[0]),
                                       in_stride=self.plan.widths[op.ins[0]],
                                       width=self.plan.widths[op.out], q8=self.q8_of(op.out),
                                       q8_stride=self.plan.widths[op.out] // Q8_VALUES,
                                       table=self.vector(op.weights[0]), eps=op.attrs["eps"]))
                quantized.add(op.out)
            else:
                emitted.append(self.single(op))
                quantized.discard(op.out)
            i += 1
        return self.finish(emitted)

    def linear_group(self, i: int) -> list[Op]:
        """The linear op at i and up to two more right after it reading the same input
        (Q, K, V; gate, up), none of which overwrites that input."""
        ops, first = self.plan.ops, self.plan.ops[i]
        group = [first]
        for op in ops[i + 1:i + 3]:
            if op.kind != "linear" or op.ins != first.ins or op.attrs != first.attrs:
                break
            group.append(op)
        while any(g.out == first.ins[0] for g in group[:-1]):
            group.pop()
        return group

    def feeds_only_matmuls(self, i: int) -> bool:
        readers = self.readers(i, self.plan.ops[i].out)
        return bool(readers) and all(r.kind == "linear" for r in readers)

    def matmul(self, i: int, group: list[Op], emitted: list) -> int:
        """Emits the group's matmul op (fused with a following GLU or residual add, and
        with the adapters on it, unless they have an op of their own); returns how many
        plan ops it consumed."""
        ops, widths = self.plan.ops, self.plan.widths
        x = group[0].ins[0]
        linears = [linear(self.plan, g, self.gguf) for g in group]
        parts = [self.part(g, lin) for g, lin in zip(group, linears)]
        adapted = any(lin.target for lin in linears)
        separate = adapted and not self.fuse_adapters
        flags, consumed = 0, len(group)
        nxt = ops[i + consumed] if i + consumed < len(ops) and not separate else None
        if (len(group) == 2 and nxt is not None and nxt.kind == "glu"
                and nxt.ins == (group[0].out, group[1].out)
                and self.types_of(group)[0] == self.types_of(group)[1]
                and not self.readers(i + consumed, group[0].out)
                and not self.readers(i + consumed, group[1].out)):
            flags |= self.glu_flag(nxt)
            parts[0]["out"], parts[0]["out_stride"] = self.fp32(nxt.out), widths[nxt.out]
            consumed += 1
        elif (len(group) == 1 and nxt is not None and nxt.kind == "add"
              and group[0].out in nxt.ins and nxt.out in nxt.ins and nxt.out != group[0].out
              and not self.readers(i + consumed, group[0].out)):
            flags |= self.lib_const("ACCUMULATE")
            parts[0]["out"], parts[0]["out_stride"] = self.fp32(nxt.out), widths[nxt.out]
            consumed += 1
        if group[0].attrs["last_row_only"]:
            flags |= self.lib_const("LAST_ROW_ONLY")
        inputs = dict(q8=self.q8_of(x), q8_stride=widths[x] // Q8_VALUES, nb=widths[x] // Q8_VALUES)
        emitted.append(self.op("MATMUL", flags=flags, parts=parts, n_parts=len(parts), **inputs))
        if separate:
            emitted.append(self.op("LORA", flags=flags & self.lib_const("LAST_ROW_ONLY"),
                                   parts=[dict(p) for p in parts], n_parts=len(parts), **inputs))
        if adapted:
            self.groups.append((len(emitted) - 1, packing.Group(
                tuple(lin.target for lin in linears), linears[0].layer,
                any(lin.computes_gates for lin in linears))))
        return consumed

    def types_of(self, group: list[Op]) -> list[int]:
        return [self.matrix(g.weights[0])[0] for g in group]

    def part(self, op: Op, lin) -> dict:
        ggml_type, rows = self.matrix(lin.weight)
        return {"w": self.ptr(rows, "void *"), "row_bytes": rows.shape[1], "rows": rows.shape[0],
                "wtype": ggml_type,
                "bias": self.vector(lin.bias) if lin.bias else self.ffi.NULL,
                "out": self.fp32(op.out), "out_stride": self.plan.widths[op.out]}

    def single(self, op: Op):
        w = self.plan.widths
        if op.kind == "embed":
            name = op.weights[0]
            info = self.gguf.tensors[name]
            if info.ggml_type in WEIGHT_TYPES:
                ggml_type, table = int(info.ggml_type), self.gguf.tensor_bytes(name).reshape(info.shape[0], -1)
            else:
                ggml_type, table = self.matrix(name)
            return self.op("EMBED", out=self.fp32(op.out), out_stride=w[op.out], width=w[op.out],
                           table=self.ptr(table, "void *"), table_rows=table.shape[0],
                           table_row_bytes=table.shape[1], wtype=ggml_type, scale=op.attrs["scale"])
        if op.kind == "rmsnorm":
            return self.op("RMSNORM", in_=self.fp32(op.ins[0]), in_stride=w[op.ins[0]],
                           out=self.fp32(op.out), out_stride=w[op.out], width=w[op.out],
                           table=self.vector(op.weights[0]), eps=op.attrs["eps"],
                           heads=op.attrs["heads"])
        if op.kind == "rope":
            a = op.attrs
            spec = (a["rot_dim"], a["base"], a["scale"], op.weights[0] if op.weights else None)
            if spec not in self.ropes:
                self.ropes.append(spec)
            return self.op("ROPE", in_=self.fp32(op.out), in_stride=w[op.out],
                           flags=self.lib_const("NEOX") if a["neox"] else 0,
                           rope_table=self.ropes.index(spec), heads=a["heads"],
                           head_dim=a["head_dim"], rot_dim=a["rot_dim"])
        if op.kind == "attention":
            a = op.attrs
            q, k, v = op.ins
            return self.op("ATTENTION", in_=self.fp32(q), in_stride=w[q], k_in=self.fp32(k),
                           v_in=self.fp32(v), kv_in_stride=w[k], out=self.fp32(op.out),
                           out_stride=w[op.out], heads=a["heads"], kv_heads=a["kv_heads"],
                           head_dim=a["head_dim"], scale=a["scale"], window=a["window"] or 0,
                           kv_layer=a["layer"])
        if op.kind in ("glu", "add"):
            return self.op(op.kind.upper(), flags=self.glu_flag(op) if op.kind == "glu" else 0, in_=self.fp32(op.ins[0]),
                           in_stride=w[op.ins[0]], in2=self.fp32(op.ins[1]), in2_stride=w[op.ins[1]],
                           out=self.fp32(op.out), out_stride=w[op.out], width=w[op.out])
        raise LilaError(f"the native backend cannot run op {op.kind!r}")

    def glu_flag(self, glu: Op) -> int:
        return self.lib_const({"silu": "GLU_SILU", "gelu_tanh": "GLU_GELU"}[glu.attrs["activation"]])

    def lib_const(self, name: str) -> int:
        return getattr(library().lib, "LILA_" + name)

    def op(self, kind: str, *, parts: list[dict] = (), **fields) -> dict:
        fields["kind"] = self.lib_const("OP_" + kind)
        if "in_" in fields:
            fields["in"] = fields.pop("in_")
        fields["parts"] = parts
        return fields

    def finish(self, emitted: list[dict]):
        ffi = self.ffi
        ops = ffi.new("lila_op[]", len(emitted))
        for i, fields in enumerate(emitted):
            parts = fields.pop("parts")
            for key, value in fields.items():
                setattr(ops[i], key, value)
            for j, part in enumerate(parts):
                for key, value in part.items():
                    setattr(ops[i].parts[j], key, value)
        ropes = ffi.new("lila_rope_spec[]", max(len(self.ropes), 1))
        for i, (rot_dim, base, scale, factors) in enumerate(self.ropes):
            ropes[i].rot_dim, ropes[i].base, ropes[i].scale = rot_dim, base, scale
            ropes[i].freq_factors = self.vector(factors) if factors else ffi.NULL
        program = ffi.new("lila_program *")
        program.ops, program.n_ops = ops, len(emitted)
        program.ropes, program.n_ropes = ropes, len(self.ropes)
        program.max_batch, program.n_ctx = self.max_batch, self.n_ctx
        program.n_kv_layers = len(self.plan.kv)
        self.keep += [ops, ropes]
        return _Program(program, self.buffers, self.weights.converted, self.groups, self.keep)
