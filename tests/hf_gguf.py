"""Tiny random transformers models of each architecture, written as GGUF.

The writer follows llama.cpp's convert_hf_to_gguf naming and conventions (Q/K row
permutation for llama, 1 + w for gemma norms) so that the files look like real ones,
while the transformers model (fp32) stays the reference for the logits.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
import torch
import transformers

from lila.tokenizer.bpe import BYTE_ALPHABET

# A byte-level vocabulary: the 256 GPT-2 byte symbols, a few merges, then control tokens.
MERGES = ["Ġ t", "h e", "Ġt he", "i n"]
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]
FIRST_SPECIAL = 256 + len(MERGES)
VOCAB = FIRST_SPECIAL + len(SPECIALS)


def tiny_config(arch: str, **overrides) -> transformers.PretrainedConfig:
    common = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                  rms_norm_eps=1e-5, bos_token_id=FIRST_SPECIAL, eos_token_id=FIRST_SPECIAL + 2,
                  pad_token_id=FIRST_SPECIAL + 3)
    if arch == "llama":
        cfg = transformers.LlamaConfig(**common, tie_word_embeddings=False)
    elif arch == "qwen2":
        cfg = transformers.Qwen2Config(**common, tie_word_embeddings=True)
    elif arch == "qwen3":
        cfg = transformers.Qwen3Config(**common, head_dim=24, tie_word_embeddings=True)
    elif arch == "qwen2moe":
        cfg = transformers.Qwen2MoeConfig(**common, num_experts=6, num_experts_per_tok=2,
                                          moe_intermediate_size=32, shared_expert_intermediate_size=48,
                                          tie_word_embeddings=True)
    elif arch == "qwen3moe":
        cfg = transformers.Qwen3MoeConfig(**common, head_dim=24, num_experts=6, num_experts_per_tok=2,
                                          moe_intermediate_size=32, norm_topk_prob=True,
                                          tie_word_embeddings=True)
    elif arch == "olmoe":
        cfg = transformers.OlmoeConfig(**common, num_experts=6, num_experts_per_tok=2,
                                       tie_word_embeddings=False)
    elif arch == "mixtral":
        cfg = transformers.MixtralConfig(**common, num_local_experts=5, num_experts_per_tok=2,
                                         tie_word_embeddings=False)
    elif arch == "gemma3":
        cfg = transformers.Gemma3TextConfig(
            **{**common, "num_hidden_layers": 7, "rms_norm_eps": 1e-6}, head_dim=16, query_pre_attn_scalar=16,
            sliding_window=5)
    else:
        raise ValueError(arch)
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


@dataclass
class TinyModel:
    arch: str
    path: Path
    model: torch.nn.Module

    def logits(self, ids: list[int]) -> np.ndarray:
        with torch.no_grad():
            return self.model(torch.tensor([ids])).logits[0].float().numpy()


def build(arch: str, directory: Path, *, seed: int = 0, dtype=gguf.GGMLQuantizationType.F32,
          **overrides) -> TinyModel:
    torch.manual_seed(seed)
    config = tiny_config(arch, **overrides)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    # Random init leaves norms at exactly 1 (or 0 for gemma); perturb them so they matter.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
            elif p.ndim == 2:
                p.mul_(2.0)
    path = directory / f"tiny-{arch}.gguf"
    write_gguf(model, config, arch, path, dtype)
    return TinyModel(arch, path, model)


# transformers architectures written under another GGUF one, as convert_hf_to_gguf does
GGUF_ARCH = {"mixtral": "llama"}


def gguf_name(arch: str, hf: str) -> str | None:
    top = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
           "lm_head.weight": "output.weight"}
    if hf in top:
        return top[hf]
    parts = hf.split(".")
    i, rest = parts[2], ".".join(parts[3:])
    post_attn = "post_attention_norm" if arch == "gemma3" else "ffn_norm"
    names = {
        "input_layernorm.weight": "attn_norm.weight",
        "post_attention_layernorm.weight": f"{post_attn}.weight",
        "pre_feedforward_layernorm.weight": "ffn_norm.weight",
        "post_feedforward_layernorm.weight": "post_ffw_norm.weight",
        "self_attn.q_proj.weight": "attn_q.weight", "self_attn.k_proj.weight": "attn_k.weight",
        "self_attn.v_proj.weight": "attn_v.weight", "self_attn.o_proj.weight": "attn_output.weight",
        "self_attn.q_proj.bias": "attn_q.bias", "self_attn.k_proj.bias": "attn_k.bias",
        "self_attn.v_proj.bias": "attn_v.bias",
        "self_attn.q_norm.weight": "attn_q_norm.weight", "self_attn.k_norm.weight": "attn_k_norm.weight",
        "mlp.gate_proj.weight": "ffn_gate.weight", "mlp.up_proj.weight": "ffn_up.weight",
        "mlp.down_proj.weight": "ffn_down.weight",
        "mlp.gate.weight": "ffn_gate_inp.weight",
        "mlp.experts.down_proj": "ffn_down_exps.weight",
        "mlp.shared_expert.gate_proj.weight": "ffn_gate_shexp.weight",
        "mlp.shared_expert.up_proj.weight": "ffn_up_shexp.weight",
        "mlp.shared_expert.down_proj.weight": "ffn_down_shexp.weight",
        "mlp.shared_expert_gate.weight": "ffn_gate_inp_shexp.weight",
    }
    return f"blk.{i}.{names[rest]}"


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    # convert_hf_to_gguf: HF rotates halves (NeoX); GGUF llama rotates adjacent pairs.
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def to_gguf(arch: str, config, hf_name: str, data: np.ndarray) -> tuple[str, np.ndarray]:
    """A transformers tensor as convert_hf_to_gguf writes it: its GGUF name and values
    (llama's Q/K rows permuted, gemma's norms as 1 + w). Only rows are moved, so a LoRA B
    given under its weight's name comes out as convert_lora_to_gguf writes it."""
    name = gguf_name(arch, hf_name)
    data = data.copy()
    arch = GGUF_ARCH.get(arch, arch)
    if arch == "llama" and name.endswith(("attn_q.weight", "attn_q.bias")):
        data = _permute(data, config.num_attention_heads)
    if arch == "llama" and name.endswith(("attn_k.weight", "attn_k.bias")):
        data = _permute(data, config.num_key_value_heads)
    if arch == "gemma3" and "norm" in name:
        data = data + 1
    if name.endswith("ffn_gate_inp_shexp.weight"):   # one row: stored as a vector
        data = data.reshape(-1)
    return name, data


def _llama3_rope_factors(rope: dict, dim: int) -> np.ndarray:
    # As convert_hf_to_gguf: per-frequency divisors, interpolated between the wavelengths.
    freqs = 1.0 / (rope["rope_theta"] ** (np.arange(0, dim, 2, dtype=np.float32) / dim))
    old = rope["original_max_position_embeddings"]
    low, high, factor = rope["low_freq_factor"], rope["high_freq_factor"], rope["factor"]
    factors = []
    for freq in freqs:
        wavelen = 2 * math.pi / freq
        if wavelen < old / high:
            factors.append(1.0)
        elif wavelen > old / low:
            factors.append(factor)
        else:
            smooth = (old / wavelen - low) / (high - low)
            factors.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(factors, dtype=np.float32)


def _experts(config) -> tuple[int, int] | None:
    """(experts, experts used per token) of an MoE config, None for a dense one."""
    for key in ("num_experts", "num_local_experts"):
        if getattr(config, key, None) is not None:
            return getattr(config, key), config.num_experts_per_tok
    return None


def _tensors(model, config, arch: str):
    """(GGUF name, values) of every tensor the file holds: the experts' fused gate and up
    projections split in two, as llama.cpp stores them."""
    for hf_name, tensor in model.state_dict().items():
        if hf_name == "lm_head.weight" and config.tie_word_embeddings:
            continue
        data = tensor.float().numpy()
        if hf_name.endswith("mlp.experts.gate_up_proj"):
            layer, half = hf_name.split(".")[2], data.shape[1] // 2
            yield f"blk.{layer}.ffn_gate_exps.weight", np.ascontiguousarray(data[:, :half])
            yield f"blk.{layer}.ffn_up_exps.weight", np.ascontiguousarray(data[:, half:])
            continue
        yield to_gguf(arch, config, hf_name, data)


def write_gguf(model, config, arch: str, path: Path, dtype) -> None:
    writer = gguf.GGUFWriter(str(path), GGUF_ARCH.get(arch, arch))
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    writer.add_name(f"tiny-{arch}")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_dimension_count(head_dim)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    experts = _experts(config)
    if experts is not None:
        writer.add_expert_count(experts[0])
        writer.add_expert_used_count(experts[1])
        if getattr(config, "moe_intermediate_size", None):
            writer.add_expert_feed_forward_length(config.moe_intermediate_size)
        if getattr(config, "shared_expert_intermediate_size", None):
            writer.add_expert_shared_feed_forward_length(config.shared_expert_intermediate_size)
    rope = config.rope_parameters
    if arch == "gemma3":
        writer.add_sliding_window(config.sliding_window)
        rope = rope["full_attention"]
    writer.add_rope_freq_base(rope["rope_theta"])
    if rope.get("rope_type") == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(rope["factor"])
    if rope.get("rope_type") == "llama3":
        writer.add_tensor("rope_freqs.weight", _llama3_rope_factors(rope, head_dim))
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    merged = [m.replace(" ", "") for m in MERGES]
    writer.add_token_list([BYTE_ALPHABET[b] for b in range(256)] + merged + SPECIALS)
    writer.add_token_types([gguf.TokenType.NORMAL] * FIRST_SPECIAL
                           + [gguf.TokenType.CONTROL] * len(SPECIALS))
    writer.add_token_merges(MERGES)
    writer.add_bos_token_id(config.bos_token_id)
    writer.add_eos_token_id(config.eos_token_id)
    writer.add_add_bos_token(False)
    writer.add_chat_template(CHATML)
    for name, data in _tensors(model, config, arch):
        qtype = dtype if data.ndim == 2 else gguf.GGMLQuantizationType.F32
        if qtype != gguf.GGMLQuantizationType.F32:
            data = gguf.quants.quantize(data, qtype)
        writer.add_tensor(name, data, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content']"
          " + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
          "{{ '<|im_start|>assistant\n' }}{% endif %}")
