"""Hyperparameters read from GGUF metadata, each checked before anything is sized by it."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from lila.errors import ModelFormatError, UnsupportedError

# Bounds far beyond any real model, tight enough that nothing is ever allocated from a
# nonsense value (a billion layers, a context of 2**60 tokens).
MAX_LAYERS = 1024
MAX_HEADS = 4096
MAX_DIM = 1 << 17
MAX_CONTEXT = 1 << 24
MAX_EXPERTS = 1 << 12


class Metadata:
    """Typed, bounded access to the `{arch}.*` keys of a GGUF file."""

    def __init__(self, metadata: dict[str, Any], arch: str):
        self.raw = metadata
        self.arch = arch

    def _get(self, key: str, default: Any) -> Any:
        full = key if key.startswith(("general.", "tokenizer.")) else f"{self.arch}.{key}"
        if full in self.raw:
            return full, self.raw[full]
        if default is REQUIRED:
            raise ModelFormatError(f"missing metadata key {full!r}")
        return full, default

    def int(self, key: str, default: Any = None, *, lo: int = 0, hi: int = 1 << 62) -> int:
        full, value = self._get(key, default)
        if value is None:
            return value
        if isinstance(value, bool) or not isinstance(value, (int,)) and not _is_np_int(value):
            raise ModelFormatError(f"metadata {full!r} should be an integer, got {value!r:.60}")
        value = int(value)
        if not lo <= value <= hi:
            raise ModelFormatError(f"metadata {full!r} = {value} is out of range [{lo}, {hi}]")
        return value

    def float(self, key: str, default: Any = None, *, lo: float = -math.inf,
              hi: float = math.inf) -> float:
        full, value = self._get(key, default)
        if value is None:
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)) and not _is_np_number(value):
            raise ModelFormatError(f"metadata {full!r} should be a number, got {value!r:.60}")
        value = float(value)
        if not (math.isfinite(value) and lo <= value <= hi):
            raise ModelFormatError(f"metadata {full!r} = {value} is out of range [{lo}, {hi}]")
        return value

    def has(self, key: str) -> bool:
        return self._get(key, None)[1] is not None

    def str(self, key: str, default: Any = None) -> str:
        full, value = self._get(key, default)
        if value is not None and not isinstance(value, str):
            raise ModelFormatError(f"metadata {full!r} should be a string, got {value!r:.60}")
        return value


REQUIRED = object()


def _is_np_int(value: Any) -> bool:
    return hasattr(value, "dtype") and value.shape == () and value.dtype.kind in "iu"


def _is_np_number(value: Any) -> bool:
    return hasattr(value, "dtype") and value.shape == () and value.dtype.kind in "iuf"


@dataclass(frozen=True)
class MoEConfig:
    """A mixture-of-experts FFN: a router picks `used` of `experts` per token."""

    experts: int
    used: int
    ffn_dim: int                # each expert's hidden width
    shared_ffn_dim: int | None  # the shared expert's, where every token also goes through one

    @classmethod
    def from_metadata(cls, meta: Metadata, ffn_default: Any, *, shared: bool = False) -> "MoEConfig":
        experts = meta.int("expert_count", REQUIRED, lo=1, hi=MAX_EXPERTS)
        used = meta.int("expert_used_count", REQUIRED, lo=1, hi=MAX_EXPERTS)
        if used > experts:
            raise ModelFormatError(f"metadata says each token uses {used} experts of only {experts}")
        ffn = meta.int("expert_feed_forward_length", ffn_default, lo=1, hi=MAX_DIM * 8)
        shared_ffn = (meta.int("expert_shared_feed_forward_length", REQUIRED, lo=1, hi=MAX_DIM * 8)
                      if shared else None)
        return cls(experts, used, ffn, shared_ffn)


@dataclass(frozen=True)
class ModelConfig:
    arch: str
    name: str
    vocab_size: int
    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    ffn_dim: int
    context_length: int
    norm_eps: float
    rope_base: float
    rope_dim: int
    rope_scale: float           # positions are multiplied by this (1 / linear scaling factor)
    sliding_window: int | None
    moe: MoEConfig | None = None    # the FFNs' experts, if they are mixtures

    @classmethod
    def from_metadata(cls, meta: Metadata, vocab_size: int) -> "ModelConfig":
        req = REQUIRED
        dim = meta.int("embedding_length", req, lo=1, hi=MAX_DIM)
        n_heads = meta.int("attention.head_count", req, lo=1, hi=MAX_HEADS)
        n_kv_heads = meta.int("attention.head_count_kv", n_heads, lo=1, hi=n_heads)
        if n_heads % n_kv_heads:
            raise ModelFormatError(
                f"{n_heads} attention heads cannot be shared by {n_kv_heads} KV heads")
        default_head_dim = dim // n_heads if dim % n_heads == 0 else req
        head_dim = meta.int("attention.key_length", default_head_dim, lo=1, hi=MAX_DIM)
        value_dim = meta.int("attention.value_length", head_dim, lo=1, hi=MAX_DIM)
        if value_dim != head_dim:
            raise ModelFormatError(f"key length {head_dim} != value length {value_dim}")
        rope_dim = meta.int("rope.dimension_count", head_dim, lo=2, hi=head_dim)
        if rope_dim % 2:
            raise ModelFormatError(f"rope dimension count {rope_dim} is odd")
        scaling = meta.str("rope.scaling.type", "none")
        factor = meta.float("rope.scaling.factor", 1.0, lo=1e-3, hi=1e6)
        if scaling not in ("none", "linear") and factor != 1.0:
            raise UnsupportedError(f"rope scaling {scaling!r} is not supported (only linear)")
        return cls(
            arch=meta.arch,
            name=meta.str("general.name", meta.arch),
            vocab_size=vocab_size,
            dim=dim,
            n_layers=meta.int("block_count", req, lo=1, hi=MAX_LAYERS),
            n_heads=n_heads,
            n_kv_heads=n_kv_heads,
            head_dim=head_dim,
            ffn_dim=meta.int("feed_forward_length", req, lo=1, hi=MAX_DIM * 8),
            context_length=meta.int("context_length", 2048, lo=1, hi=MAX_CONTEXT),
            norm_eps=meta.float("attention.layer_norm_rms_epsilon", 1e-5, lo=0.0, hi=1.0),
            rope_base=meta.float("rope.freq_base", 10000.0, lo=1.0),
            rope_dim=rope_dim,
            rope_scale=1.0 / factor if scaling == "linear" else 1.0,
            sliding_window=meta.int("attention.sliding_window", None, lo=1, hi=MAX_CONTEXT),
        )
