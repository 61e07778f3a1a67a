"""LoRA adapters read from a file and checked against the loaded base model.

`read_adapter(path, base)` gives each adapted projection's factors as float32 arrays in
the base GGUF's conventions: B's rows in the GGUF's order (for llama, Q and K permuted as
convert_hf_to_gguf permutes the weights) and the adapter's own scale, so that the
projection computes W x + scale * B (A x). Everything the file claims is checked against
the base before any tensor data is read. formats/README.md describes the formats.
"""
from __future__ import annotations

import os
import re
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lila.fabric.files import (GATE_BIAS, GATE_WEIGHT, MODULES, PROJECTIONS, AdapterFile, Stored,
                               fail, quoted)
from lila.fabric.gguf_lora import open_gguf_lora
from lila.fabric.peft_files import CONFIG, is_peft, open_peft

if TYPE_CHECKING:
    from lila.models import ModelSpec

__all__ = ["MODULES", "Adapter", "Base", "Gate", "LoRA", "describe_adapter", "read_adapter"]

# Architectures whose GGUF conversion permutes the rows of attn_q and attn_k.
_PERMUTED = {"llama"}
_BASE_PROJECTION = re.compile(rf"(blk\.\d+\.(?:{PROJECTIONS}))\.weight")
MB = 1 << 20


@dataclass(frozen=True)
class Base:
    """What an adapter is checked against: the loaded model."""

    architecture: str            # GGUF general.architecture
    n_layers: int
    dim: int                     # hidden size
    n_heads: int
    n_kv_heads: int
    shapes: dict[str, tuple[int, int]]   # "blk.3.attn_q" -> (out_features, in_features)

    @classmethod
    def of(cls, spec: ModelSpec) -> Base:
        cfg = spec.config
        shapes = {m.group(1): tuple(info.shape) for name, info in spec.weights.items()
                  if (m := _BASE_PROJECTION.fullmatch(name))}
        return cls(cfg.arch, cfg.n_layers, cfg.dim, cfg.n_heads, cfg.n_kv_heads, shapes)


@dataclass(frozen=True)
class LoRA:
    a: np.ndarray     # (rank, in) float32, C-contiguous
    b: np.ndarray     # (out, rank) float32, C-contiguous, rows in the base GGUF's order
    scale: float      # alpha / rank, or alpha / sqrt(rank) with rsLoRA


@dataclass(frozen=True)
class Gate:
    """g = sigmoid(weight[layer] · x̂ + bias[layer]), x̂ the layer's normed attention input."""

    weight: np.ndarray   # (n_layers, dim) float32; a shared vector repeated per layer
    bias: np.ndarray     # (n_layers,) float32
    shared: bool         # one vector was given for all layers

    @classmethod
    def per_layer(cls, weight: np.ndarray, bias: np.ndarray, layers: int) -> Gate:
        """From a weight of shape (dim,) or (layers, dim) and a bias of shape (), (1,) or
        (layers,), already checked: one row of each per layer."""
        return cls(np.ascontiguousarray(np.broadcast_to(weight, (layers, weight.shape[-1]))),
                   np.ascontiguousarray(np.broadcast_to(bias.reshape(-1), (layers,))),
                   shared=weight.ndim == 1)


@dataclass(frozen=True)
class Adapter:
    path: Path
    format: str                      # "peft" or "gguf"
    architecture: str | None         # as the file declares it (GGUF), None for PEFT
    lora: dict[str, LoRA]            # "blk.3.attn_q" -> LoRA, only the projections adapted
    gate: Gate | None

    @property
    def ranks(self) -> tuple[int, ...]:
        return tuple(sorted({lora.a.shape[0] for lora in self.lora.values()}))

    @property
    def modules(self) -> tuple[str, ...]:
        """The GGUF projections adapted in some layer, e.g. ("attn_q", "ffn_down")."""
        return tuple(sorted({key.split(".")[2] for key in self.lora}))

    @property
    def parameters(self) -> int:
        """The elements of the LoRA factors (the gate is described apart)."""
        return sum(lora.a.size + lora.b.size for lora in self.lora.values())


def read_adapter(path: str | os.PathLike, base: Base) -> Adapter:
    """Read the adapter at `path` (a PEFT directory or one of its files, or a GGUF LoRA)
    and check it against `base`. Raises AdapterError, one line naming the file."""
    with _open(path) as file:
        ranks = _ranks(file)
        _check_against(file, ranks, base)
        alphas = _alphas(file, ranks)
        lora = {key: _lora(file, key, file.scale(alphas[key], ranks[key]), base)
                for key in sorted(file.projections, key=_order)}
        gate = _gate(file, base) if file.gate else None
    return Adapter(Path(os.fsdecode(path)), file.format, file.architecture, lora, gate)


def describe_adapter(path: str | os.PathLike) -> list[tuple[str, str]]:
    """Rows for `lila info ADAPTER`: what the file holds, checked as far as it can be
    without a base model."""
    with _open(path) as file:
        ranks = _ranks(file)
        alphas = _alphas(file, ranks)
    projections = file.projections
    dtypes = sorted({t.dtype for p in projections.values() for t in (p.a, p.b)})
    layers = sorted({int(key.split(".")[1]) for key in projections})
    scales = sorted({(alphas[key], ranks[key]) for key in projections}, key=lambda s: s[1])
    architecture = file.architecture or "not declared"
    if file.trained_on:
        architecture += f" (trained on {file.trained_on})"
    rows = [
        ("file", file.path),
        ("format", f"PEFT LoRA (safetensors, {', '.join(dtypes)})" if file.format == "peft"
         else f"GGUF LoRA ({', '.join(dtypes)})"),
        ("architecture", architecture),
        ("target modules", ", ".join(m for m in MODULES.values()
                                     if any(key.endswith(f".{m}") for key in projections))),
        ("ranks", ", ".join(str(r) for r in sorted(set(ranks.values())))),
        ("alpha / scale", "; ".join(f"alpha {alpha:g}, rank {rank}: scale {file.scale(alpha, rank):g}"
                                    for alpha, rank in scales)),
        ("rsLoRA", "yes" if file.rslora else "no"),
        ("layers", f"{len(layers)} ({_ranges(layers)})"),
        ("parameters", f"{sum(p.a.size + p.b.size for p in projections.values()):,}"),
        ("gate", _describe_gate(file.gate)),
        ("size", f"{file.size / MB:.2f} MB"),
    ]
    if file.skipped:
        rows.append(("skipped", f"{file.skipped} tensors of a vision tower (Lila runs the text model)"))
    return rows


def _open(path: str | os.PathLike) -> AbstractContextManager[AdapterFile]:
    shown = os.fsdecode(path)
    try:
        where = Path(shown)
        if not where.exists():
            raise fail(shown, "no such file or directory")
        if is_peft(where):
            return open_peft(where)
        if where.is_dir():
            raise fail(shown, f"is a directory without {CONFIG}: not a PEFT adapter")
    except OSError as e:   # a name too long, a folder on the way that cannot be read
        raise fail(shown, f"cannot read ({e.strerror or e})") from None
    except ValueError:     # an embedded NUL byte
        raise fail(repr(shown), "is not a valid path") from None
    return open_gguf_lora(where)


def _order(key: str) -> tuple[int, int]:
    _, layer, projection = key.split(".")
    return int(layer), list(MODULES.values()).index(projection)


def _ranks(file: AdapterFile) -> dict[str, int]:
    """Each projection's rank, once its two factors are known to agree (no base needed)."""
    if not file.projections:
        raise fail(file.path, "holds no LoRA factors")
    ranks = {}
    for key, p in file.projections.items():
        if p.a is None or p.b is None:
            held, missing = (p.a, "B") if p.b is None else (p.b, "A")
            raise fail(file.path, f"{quoted(held.name)} has no matching {missing} factor")
        if len(p.a.shape) != 2 or len(p.b.shape) != 2 or p.a.shape[0] != p.b.shape[1]:
            raise fail(file.path, f"{key}: factors of shapes {p.a.shape} and {p.b.shape} "
                                  f"should be (rank, in) and (out, rank)")
        rank = p.a.shape[0]
        if rank == 0:
            raise fail(file.path, f"{key}: rank 0")
        ranks[key] = rank
    weight, bias = file.gate.get(GATE_WEIGHT), file.gate.get(GATE_BIAS)
    if bias is not None and weight is None:
        raise fail(file.path, f"has {GATE_BIAS} but no {GATE_WEIGHT}")
    return ranks


def _alphas(file: AdapterFile, ranks: dict[str, int]) -> dict[str, float]:
    """Each projection's alpha, once its rank is the one the file declares for it. (After the
    checks against a base, which bound how many there are: PEFT's patterns are regular
    expressions matched against each module's name.)"""
    alphas = {}
    for key, p in file.projections.items():
        rank, alphas[key] = file.declared(p.module)
        if rank is not None and rank != ranks[key]:
            raise fail(file.path, f"{key}: rank {ranks[key]}, but the config gives {quoted(p.module)} "
                                  f"rank {rank}")
    return alphas


def _check_against(file: AdapterFile, ranks: dict[str, int], base: Base) -> None:
    """Every shape against the base model's, before any data is read."""
    if file.architecture is not None and file.architecture != base.architecture:
        raise fail(file.path, f"is an adapter for {quoted(file.architecture)}, "
                              f"but the model is {quoted(base.architecture)}")
    for key, p in file.projections.items():
        layer = int(key.split(".")[1])
        if layer >= base.n_layers:
            raise fail(file.path, f"{key}: layer {layer}, but the model has {base.n_layers} layers")
        if key not in base.shapes:
            raise fail(file.path, f"{key}: the model has no such projection")
        out, inputs = base.shapes[key]
        if p.a.shape[1] != inputs or p.b.shape[0] != out:
            raise fail(file.path, f"{key}: adapts a {p.b.shape[0]} x {p.a.shape[1]} projection, "
                                  f"but the model's is {out} x {inputs}")
        if ranks[key] > min(out, inputs):
            raise fail(file.path, f"{key}: rank {ranks[key]} is larger than the projection's "
                                  f"{out} x {inputs} allows")
    weight, bias = file.gate.get(GATE_WEIGHT), file.gate.get(GATE_BIAS)
    n, dim = base.n_layers, base.dim
    if weight is not None and weight.shape not in ((dim,), (n, dim)):
        raise fail(file.path, f"{GATE_WEIGHT} has shape {weight.shape}, expected ({dim},) "
                              f"or ({n}, {dim})")
    if bias is not None and bias.shape not in ((), (1,), (n,)):
        raise fail(file.path, f"{GATE_BIAS} has shape {bias.shape}, expected (), (1,) or ({n},)")


def _values(file: AdapterFile, tensor: Stored) -> np.ndarray:
    """The tensor as a float32 C-contiguous array of its own (not a view of the file)."""
    values = np.array(tensor.read(), dtype=np.float32, order="C")
    if not np.isfinite(values).all():
        raise fail(file.path, f"tensor {quoted(tensor.name)} holds NaN or infinite values")
    return values


F16_MAX = float(np.finfo(np.float16).max)


def _lora(file: AdapterFile, key: str, scale: float, base: Base) -> LoRA:
    p = file.projections[key]
    b = _values(file, p.b)
    if np.abs(b).max(initial=0) > F16_MAX:   # B is kept in fp16 (lila.fabric.packing)
        raise fail(file.path, f"tensor {quoted(p.b.name)} holds values beyond fp16's range "
                              f"(±{F16_MAX:.0f})")
    projection = key.split(".")[2]
    if base.architecture in _PERMUTED and not file.rows_in_gguf_order and projection in (
            "attn_q", "attn_k"):
        b = np.ascontiguousarray(_permute(b, base.n_heads if projection == "attn_q" else base.n_kv_heads))
    return LoRA(_values(file, p.a), b, scale)


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    # convert_hf_to_gguf's LlamaModel.permute: HF rotates halves of each head (NeoX), GGUF
    # llama rotates adjacent pairs, so each head's rows are interleaved.
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _gate(file: AdapterFile, base: Base) -> Gate:
    bias = file.gate.get(GATE_BIAS)
    return Gate.per_layer(_values(file, file.gate[GATE_WEIGHT]),
                          np.zeros(1, np.float32) if bias is None else _values(file, bias),
                          base.n_layers)


def _describe_gate(gate: dict[str, Stored]) -> str:
    weight = gate.get(GATE_WEIGHT)
    if weight is None:
        return "none"
    kind = f"shared ({weight.shape[0]})" if len(weight.shape) == 1 else \
        f"per layer ({' x '.join(map(str, weight.shape))})"
    return kind + (", with bias" if GATE_BIAS in gate else ", no bias")


def _ranges(numbers: list[int]) -> str:
    """[0, 1, 2, 5] -> "0-2, 5"."""
    spans: list[list[int]] = []
    for n in numbers:
        if spans and n == spans[-1][1] + 1:
            spans[-1][1] = n
        else:
            spans.append([n, n])
    return ", ".join(f"{a}-{b}" if a != b else str(a) for a, b in spans)
