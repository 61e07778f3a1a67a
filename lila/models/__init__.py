"""Architectures Lila runs, one module each, looked up by GGUF `general.architecture`.

`describe(gguf)` reads the hyperparameters, checks the file's tensor table against the
architecture's (every mismatch reported at once) and builds the forward plan.
"""
from __future__ import annotations

import importlib
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lila.errors import ModelFormatError, UnsupportedError
from lila.executor.plan import Plan
from lila.formats.quants import SUPPORTED_TYPES
from lila.models.config import MAX_LAYERS, REQUIRED, Metadata, ModelConfig

if TYPE_CHECKING:
    from lila.formats.gguf import GGUFFile, TensorInfo

ARCHITECTURES = {
    "llama": "lila.models.llama",
    "qwen2": "lila.models.qwen2",
    "qwen2moe": "lila.models.qwen2moe",
    "qwen3": "lila.models.qwen3",
    "qwen3moe": "lila.models.qwen3moe",
    "gemma3": "lila.models.gemma3",
    "olmoe": "lila.models.olmoe",
}

_MAX_LISTED = 6


@dataclass(frozen=True)
class ModelSpec:
    config: ModelConfig
    plan: Plan
    weights: dict[str, "TensorInfo"]   # the tensors the plan reads, by GGUF name


def describe(gguf: "GGUFFile") -> ModelSpec:
    arch = Metadata(gguf.metadata, "").str("general.architecture", REQUIRED)
    if arch not in ARCHITECTURES:
        raise UnsupportedError(f"architecture {arch!r} is not supported "
                               f"(supported: {', '.join(ARCHITECTURES)})")
    architecture = importlib.import_module(ARCHITECTURES[arch]).architecture
    meta = Metadata(gguf.metadata, arch)
    # Bound the layer count by the file before sizing anything by it.
    layers = meta.int("block_count", None, lo=1, hi=MAX_LAYERS)
    if layers is not None and layers > len(gguf.tensors):
        raise ModelFormatError(f"metadata says {layers} layers but the file holds only "
                               f"{len(gguf.tensors)} tensors")
    cfg = architecture.config(meta, _vocab_size(gguf, meta))
    if cfg.moe is None and any(name.endswith("ffn_gate_inp.weight") for name in gguf.tensors):
        raise ModelFormatError(f"the file holds mixture-of-experts routers (ffn_gate_inp) but no "
                               f"{arch}.expert_count")
    weights = _check_tensors(gguf, architecture.tensors(cfg))
    return ModelSpec(cfg, architecture.build(cfg, set(weights)), weights)


def _vocab_size(gguf: "GGUFFile", meta: Metadata) -> int:
    tokens = gguf.metadata.get("tokenizer.ggml.tokens")
    if isinstance(tokens, list) and tokens:
        return len(tokens)
    embd = gguf.tensors.get("token_embd.weight")
    default = embd.shape[0] if embd is not None and len(embd.shape) == 2 else None
    vocab = meta.int("vocab_size", default, lo=1, hi=1 << 24)
    if vocab is None:
        raise ModelFormatError("cannot tell the vocabulary size: no tokenizer and no token_embd")
    return vocab


def _check_tensors(gguf: "GGUFFile", specs: list) -> dict[str, "TensorInfo"]:
    problems: list[str] = []
    expected = {s.name for s in specs}
    found: dict[str, TensorInfo] = {}
    for spec in specs:
        info = gguf.tensors.get(spec.name)
        if info is None:
            if spec.required:
                problems.append(f"missing {spec.name}")
        elif tuple(info.shape) != spec.shape:
            problems.append(f"{spec.name} has shape {tuple(info.shape)}, expected {spec.shape}")
        else:
            found[spec.name] = info
    problems += [f"unexpected tensor {name}" for name in gguf.tensors if name not in expected]
    if problems:
        shown = "; ".join(problems[:_MAX_LISTED])
        more = f" (and {len(problems) - _MAX_LISTED} more)" if len(problems) > _MAX_LISTED else ""
        raise ModelFormatError(f"tensors do not match the {gguf.metadata['general.architecture']} "
                               f"architecture: {shown}{more}")
    unsupported = Counter(info.ggml_type.name for info in found.values()
                          if info.ggml_type not in SUPPORTED_TYPES)
    if unsupported:
        first = next(n for n, i in found.items() if i.ggml_type not in SUPPORTED_TYPES)
        kinds = ", ".join(f"{t} ({n} tensors)" for t, n in unsupported.items())
        raise UnsupportedError(f"unsupported tensor type {kinds}, e.g. {first!r}")
    return found
