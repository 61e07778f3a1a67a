# TEMPORARY (replaced by the adapters branch)
from __future__ import annotations
import json, os, re
from dataclasses import dataclass
from pathlib import Path
import numpy as np
from safetensors.numpy import load_file

MODULES = {"q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v", "o_proj": "attn_output",
           "gate_proj": "ffn_gate", "up_proj": "ffn_up", "down_proj": "ffn_down"}

@dataclass(frozen=True)
class Base:
    architecture: str
    n_layers: int
    dim: int
    n_heads: int
    n_kv_heads: int
    shapes: dict
    @classmethod
    def of(cls, spec):
        c = spec.config
        shapes = {n.removesuffix(".weight"): tuple(i.shape) for n, i in spec.weights.items() if n.startswith("blk.") and len(i.shape) == 2}
        return cls(c.arch, c.n_layers, c.dim, c.n_heads, c.n_kv_heads, shapes)

@dataclass(frozen=True)
class LoRA:
    a: np.ndarray
    b: np.ndarray
    scale: float

@dataclass(frozen=True)
class Gate:
    weight: np.ndarray
    bias: np.ndarray
    shared: bool

@dataclass(frozen=True)
class Adapter:
    path: Path
    format: str
    architecture: str | None
    lora: dict
    gate: Gate | None
    @property
    def ranks(self): return sorted({l.a.shape[0] for l in self.lora.values()})
    @property
    def modules(self): return sorted({t.split(".")[2] for t in self.lora})

def _permute(w, n_head):
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)

def read_adapter(path, base):
    path = Path(path)
    cfg = json.loads((path / "adapter_config.json").read_text())
    t = load_file(str(path / "adapter_model.safetensors"))
    lora = {}
    for k, v in t.items():
        m = re.search(r"layers\.(\d+)\.(self_attn|mlp)\.(\w+_proj)\.lora_A\.weight$", k)
        if not m: continue
        target = f"blk.{m[1]}.{MODULES[m[3]]}"
        a = v.astype(np.float32); b = t[k.replace("lora_A", "lora_B")].astype(np.float32)
        if base.architecture == "llama" and m[3] == "q_proj": b = _permute(b, base.n_heads)
        if base.architecture == "llama" and m[3] == "k_proj": b = _permute(b, base.n_kv_heads)
        r = a.shape[0]
        lora[target] = LoRA(np.ascontiguousarray(a), np.ascontiguousarray(b), cfg["lora_alpha"] / r)
    return Adapter(path, "peft", None, lora, None)
