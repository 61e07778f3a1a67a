"""Gemma 3 (text, dense).

Differences from llama: embeddings scaled by sqrt(dim); norms both before and after the
attention and the FFN; GeGLU (tanh-approximated GELU); QK-norm; five sliding-window layers
for each global one, the local ones with their own RoPE base and no RoPE scaling.
GGUF converters store the norm weights already as (1 + w).
"""
from __future__ import annotations

import math
from dataclasses import replace

from lila.models.blocks import (TensorSpec, attention, attention_tensors, embedding_tensors,
                                ffn_tensors, gated_ffn, lm_head)
from lila.models.config import Metadata, ModelConfig
from lila.executor.plan import Plan

LOCAL_ROPE_BASE = 10000.0
SLIDING_WINDOW_PATTERN = 6   # every sixth layer attends globally


class Gemma3:
    def config(self, meta: Metadata, vocab_size: int) -> ModelConfig:
        cfg = ModelConfig.from_metadata(meta, vocab_size)
        return replace(cfg, norm_eps=meta.float("attention.layer_norm_rms_epsilon", 1e-6, lo=0, hi=1),
                       rope_base=meta.float("rope.freq_base", 1e6, lo=1.0))

    def tensors(self, cfg: ModelConfig) -> list[TensorSpec]:
        specs = embedding_tensors(cfg)
        for i in range(cfg.n_layers):
            p = f"blk.{i}."
            specs += attention_tensors(cfg, i, qk_norm="head") + ffn_tensors(cfg, i)
            specs += [TensorSpec(p + "post_attention_norm.weight", (cfg.dim,)),
                      TensorSpec(p + "post_ffw_norm.weight", (cfg.dim,))]
        return specs

    def build(self, cfg: ModelConfig, present: set[str]) -> Plan:
        # As llama.cpp: the 27B model scales queries by its width per head, the others by
        # the head size (transformers' query_pre_attn_scalar).
        scale = (cfg.dim / cfg.n_heads if cfg.n_layers == 62 else cfg.head_dim) ** -0.5
        eps = cfg.norm_eps
        plan = Plan(cfg.vocab_size)
        plan.embed("x", "token_embd.weight", cfg.dim, scale=math.sqrt(cfg.dim))
        for i in range(cfg.n_layers):
            p = f"blk.{i}."
            is_local = (i + 1) % SLIDING_WINDOW_PATTERN != 0 and cfg.sliding_window is not None
            local = dict(rope_base=LOCAL_ROPE_BASE, rope_scale=1.0, window=cfg.sliding_window)
            h = plan.rmsnorm("h", "x", p + "attn_norm.weight", eps=eps)
            a = attention(plan, cfg, i, h, "a", present, neox=True, qk_norm="head", scale=scale,
                          **(local if is_local else {}))
            a = plan.rmsnorm(a, a, p + "post_attention_norm.weight", eps=eps)
            plan.add("x", "x", a)
            h = plan.rmsnorm("h", "x", p + "ffn_norm.weight", eps=eps)
            f = gated_ffn(plan, cfg, i, h, "f", activation="gelu_tanh")
            f = plan.rmsnorm(f, f, p + "post_ffw_norm.weight", eps=eps)
            plan.add("x", "x", f)
        h = plan.rmsnorm("h", "x", "output_norm.weight", eps=eps)
        plan.output(h, lm_head(present))
        return plan


architecture = Gemma3()
