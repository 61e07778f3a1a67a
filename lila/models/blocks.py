"""Pieces every architecture shares: its tensor table and the transformer block parts.

Weights are referred to by their GGUF names; shapes are in numpy order (out, in).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from lila.models.config import Metadata, MoEConfig, ModelConfig
from lila.executor.plan import Plan


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    required: bool = True


def embedding_tensors(cfg: ModelConfig) -> list[TensorSpec]:
    return [
        TensorSpec("token_embd.weight", (cfg.vocab_size, cfg.dim)),
        TensorSpec("output_norm.weight", (cfg.dim,)),
        # Absent when the LM head is tied to the embedding table.
        TensorSpec("output.weight", (cfg.vocab_size, cfg.dim), required=False),
    ]


def attention_tensors(cfg: ModelConfig, i: int, *, bias: bool = False,
                      qk_norm: str = "") -> list[TensorSpec]:
    """qk_norm: RMSNorm on the queries and keys, "head" by head or "full" over all heads."""
    p, d = f"blk.{i}.", cfg.dim
    q_dim, kv_dim = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
    specs = [
        TensorSpec(p + "attn_norm.weight", (d,)),
        TensorSpec(p + "attn_q.weight", (q_dim, d)),
        TensorSpec(p + "attn_k.weight", (kv_dim, d)),
        TensorSpec(p + "attn_v.weight", (kv_dim, d)),
        TensorSpec(p + "attn_output.weight", (d, q_dim)),
    ]
    if bias:
        specs += [TensorSpec(p + "attn_q.bias", (q_dim,)), TensorSpec(p + "attn_k.bias", (kv_dim,)),
                  TensorSpec(p + "attn_v.bias", (kv_dim,))]
    if qk_norm:
        full = qk_norm == "full"
        specs += [TensorSpec(p + "attn_q_norm.weight", (q_dim if full else cfg.head_dim,)),
                  TensorSpec(p + "attn_k_norm.weight", (kv_dim if full else cfg.head_dim,))]
    return specs


def ffn_tensors(cfg: ModelConfig, i: int) -> list[TensorSpec]:
    p, d, f = f"blk.{i}.", cfg.dim, cfg.ffn_dim
    return [
        TensorSpec(p + "ffn_norm.weight", (d,)),
        TensorSpec(p + "ffn_gate.weight", (f, d)),
        TensorSpec(p + "ffn_up.weight", (f, d)),
        TensorSpec(p + "ffn_down.weight", (d, f)),
    ]


def moe_tensors(cfg: ModelConfig, i: int) -> list[TensorSpec]:
    """The router and the experts, each kind stacked into one 3-D tensor (expert first)."""
    p, d, m = f"blk.{i}.", cfg.dim, cfg.moe
    return [
        TensorSpec(p + "ffn_norm.weight", (d,)),
        TensorSpec(p + "ffn_gate_inp.weight", (m.experts, d)),
        TensorSpec(p + "ffn_gate_exps.weight", (m.experts, m.ffn_dim, d)),
        TensorSpec(p + "ffn_up_exps.weight", (m.experts, m.ffn_dim, d)),
        TensorSpec(p + "ffn_down_exps.weight", (m.experts, d, m.ffn_dim)),
    ] + ([] if m.shared_ffn_dim is None else [
        TensorSpec(p + "ffn_gate_shexp.weight", (m.shared_ffn_dim, d)),
        TensorSpec(p + "ffn_up_shexp.weight", (m.shared_ffn_dim, d)),
        TensorSpec(p + "ffn_down_shexp.weight", (d, m.shared_ffn_dim)),
        TensorSpec(p + "ffn_gate_inp_shexp.weight", (d,)),
    ])


def rope_freqs_tensor(cfg: ModelConfig) -> TensorSpec:
    # Llama 3.1+ files carry per-frequency divisors for their long-context RoPE scaling.
    return TensorSpec("rope_freqs.weight", (cfg.rope_dim // 2,), required=False)


def lm_head(present: set[str]) -> str:
    return "output.weight" if "output.weight" in present else "token_embd.weight"


def attention(plan: Plan, cfg: ModelConfig, i: int, x: str, out: str, present: set[str], *,
              neox: bool,
              bias: bool = False, qk_norm: str = "", scale: float | None = None,
              rope_base: float | None = None, rope_scale: float | None = None,
              window: int | None = None) -> str:
    """Self-attention of the (already normalised) rows of x, written to out."""
    p, hd = f"blk.{i}.", cfg.head_dim
    q_dim, kv_dim = cfg.n_heads * hd, cfg.n_kv_heads * hd
    q = plan.linear("q", x, p + "attn_q.weight", q_dim, bias=p + "attn_q.bias" if bias else None)
    k = plan.linear("k", x, p + "attn_k.weight", kv_dim, bias=p + "attn_k.bias" if bias else None)
    v = plan.linear("v", x, p + "attn_v.weight", kv_dim, bias=p + "attn_v.bias" if bias else None)
    if qk_norm:
        full = qk_norm == "full"
        q = plan.rmsnorm(q, q, p + "attn_q_norm.weight", eps=cfg.norm_eps,
                         heads=1 if full else cfg.n_heads)
        k = plan.rmsnorm(k, k, p + "attn_k_norm.weight", eps=cfg.norm_eps,
                         heads=1 if full else cfg.n_kv_heads)
    rope = dict(head_dim=hd, rot_dim=cfg.rope_dim, neox=neox,
                base=cfg.rope_base if rope_base is None else rope_base,
                scale=cfg.rope_scale if rope_scale is None else rope_scale,
                freq_factors="rope_freqs.weight" if "rope_freqs.weight" in present else None)
    plan.rope(q, heads=cfg.n_heads, **rope)
    plan.rope(k, heads=cfg.n_kv_heads, **rope)
    att = plan.attention("att", q, k, v, layer=i, heads=cfg.n_heads, kv_heads=cfg.n_kv_heads,
                         head_dim=hd, scale=hd ** -0.5 if scale is None else scale, window=window)
    return plan.linear(out, att, p + "attn_output.weight", cfg.dim)


def gated_ffn(plan: Plan, cfg: ModelConfig, i: int, x: str, out: str, *, activation: str) -> str:
    """down(activation(gate(x)) * up(x))"""
    p = f"blk.{i}."
    gate = plan.linear("gate", x, p + "ffn_gate.weight", cfg.ffn_dim)
    up = plan.linear("up", x, p + "ffn_up.weight", cfg.ffn_dim)
    hidden = plan.glu("hidden", gate, up, activation=activation)
    return plan.linear(out, hidden, p + "ffn_down.weight", cfg.dim)


def moe_ffn(plan: Plan, cfg: ModelConfig, i: int, x: str, out: str, *, norm_topk: bool) -> str:
    """sum over the experts the router picks of weight * down_e(silu(gate_e(x)) * up_e(x))"""
    p, m = f"blk.{i}.", cfg.moe
    shared = None if m.shared_ffn_dim is None else tuple(
        p + f"ffn_{kind}.weight" for kind in ("gate_shexp", "up_shexp", "down_shexp", "gate_inp_shexp"))
    return plan.moe(out, x, p + "ffn_gate_inp.weight", p + "ffn_gate_exps.weight",
                    p + "ffn_up_exps.weight", p + "ffn_down_exps.weight", experts=m.experts,
                    used=m.used, norm_topk=norm_topk, activation="silu", out_width=cfg.dim,
                    shared=shared)


@dataclass(frozen=True)
class PreNormDecoder:
    """The llama-family decoder: x += attn(norm(x)); x += ffn(norm(x)); logits = head(norm(x)).

    Its members differ only in the RoPE layout, Q/K/V biases and QK-norm, and in
    whether the FFN is a mixture of experts: `experts` "none", "required", or "optional"
    (decided by the file's expert_count, as llama files hold Mixtral); with
    `shared_expert`, every token also goes through a gated shared one; `norm_topk`: the
    picked experts' probabilities are renormalised to sum 1.
    """

    neox: bool
    bias: bool = False
    qk_norm: str = ""           # see attention_tensors
    experts: str = "none"
    shared_expert: bool = False
    norm_topk: bool = True

    def config(self, meta: Metadata, vocab_size: int) -> ModelConfig:
        cfg = ModelConfig.from_metadata(meta, vocab_size)
        if self.experts == "required" or (self.experts == "optional" and meta.has("expert_count")):
            moe = MoEConfig.from_metadata(meta, cfg.ffn_dim, shared=self.shared_expert)
            cfg = replace(cfg, moe=moe)
        return cfg

    def tensors(self, cfg: ModelConfig) -> list[TensorSpec]:
        specs = embedding_tensors(cfg) + [rope_freqs_tensor(cfg)]
        for i in range(cfg.n_layers):
            specs += attention_tensors(cfg, i, bias=self.bias, qk_norm=self.qk_norm)
            specs += moe_tensors(cfg, i) if cfg.moe else ffn_tensors(cfg, i)
        return specs

    def build(self, cfg: ModelConfig, present: set[str]) -> Plan:
        plan = Plan(cfg.vocab_size)
        plan.embed("x", "token_embd.weight", cfg.dim)
        for i in range(cfg.n_layers):
            p = f"blk.{i}."
            h = plan.rmsnorm("h", "x", p + "attn_norm.weight", eps=cfg.norm_eps)
            a = attention(plan, cfg, i, h, "a", present, neox=self.neox, bias=self.bias,
                          qk_norm=self.qk_norm)
            plan.add("x", "x", a)
            h = plan.rmsnorm("h", "x", p + "ffn_norm.weight", eps=cfg.norm_eps)
            f = (moe_ffn(plan, cfg, i, h, "f", norm_topk=self.norm_topk) if cfg.moe
                 else gated_ffn(plan, cfg, i, h, "f", activation="silu"))
            plan.add("x", "x", f)
        h = plan.rmsnorm("h", "x", "output_norm.weight", eps=cfg.norm_eps)
        plan.output(h, lm_head(present))
        return plan
