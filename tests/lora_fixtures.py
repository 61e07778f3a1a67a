"""LoRA adapters for tests, over the tiny models of hf_gguf.

- `peft_adapter`: a PEFT adapter (random, non-zero B) saved as `save_pretrained` does;
- `peft_model`: that adapter loaded by peft onto a copy of the model, for reference logits;
- `merged_weights`: peft's merged weights, converted as convert_hf_to_gguf converts them;
- `gguf_lora`: the same adapter as llama.cpp's convert_lora_to_gguf.py writes it;
- `rewrite_tensors`: change an adapter's safetensors (add a gate, break it for a test).
"""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Callable

import gguf
import numpy as np
import peft
import torch
from safetensors.numpy import load_file, save_file

import hf_gguf
from lila.fabric.adapter import MODULES

SEVEN = tuple(MODULES)   # q_proj ... down_proj
WEIGHTS = "adapter_model.safetensors"
CONFIG = "adapter_config.json"


def _model(tiny: hf_gguf.TinyModel | torch.nn.Module) -> torch.nn.Module:
    return tiny.model if isinstance(tiny, hf_gguf.TinyModel) else tiny


def peft_adapter(tiny: hf_gguf.TinyModel | torch.nn.Module, directory: Path, *, rank: int = 8,
                 alpha: float = 16, targets: tuple[str, ...] = SEVEN, seed: int = 0,
                 rslora: bool = False, rank_pattern: dict | None = None,
                 alpha_pattern: dict | None = None,
                 gate: dict[str, np.ndarray] | None = None) -> Path:
    """Save a PEFT LoRA of the model in `directory` and return it. The model is left as
    it was (peft wraps a copy). `gate`: extra tensors, e.g. {"lila_gate.weight": ...}."""
    torch.manual_seed(seed)
    config = peft.LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(targets),
                             use_rslora=rslora, rank_pattern=rank_pattern or {},
                             alpha_pattern=alpha_pattern or {}, init_lora_weights=False)
    peft.get_peft_model(copy.deepcopy(_model(tiny)), config).save_pretrained(directory)
    if gate:
        rewrite_tensors(directory, lambda tensors: {**tensors, **gate})
    return Path(directory)


def peft_model(tiny: hf_gguf.TinyModel | torch.nn.Module, directory: Path) -> peft.PeftModel:
    """The saved adapter, as peft loads it onto a copy of the model (for reference logits)."""
    return peft.PeftModel.from_pretrained(copy.deepcopy(_model(tiny)), directory).eval()


def merged_weights(tiny: hf_gguf.TinyModel, directory: Path) -> dict[str, np.ndarray]:
    """peft's merged projections as the GGUF would store them: "blk.3.attn_q" -> (out, in)."""
    merged = peft_model(tiny, directory).merge_and_unload()
    weights = {}
    for hf_name, tensor in merged.state_dict().items():
        if hf_name.endswith("_proj.weight"):
            name, data = hf_gguf.to_gguf(tiny.arch, merged.config, hf_name, tensor.float().numpy())
            weights[name.removesuffix(".weight")] = data
    return weights


def rewrite_tensors(directory: Path, change: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]) -> None:
    """Replace the adapter's tensors with `change(tensors)`."""
    path = Path(directory) / WEIGHTS
    tensors = change(load_file(path))
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, path, metadata={"format": "pt"})


def gguf_lora(peft_dir: Path, tiny: hf_gguf.TinyModel, path: Path, *,
              dtype: gguf.GGMLQuantizationType = gguf.GGMLQuantizationType.F32) -> Path:
    """The PEFT adapter in `peft_dir` written as GGUF LoRA, as convert_lora_to_gguf.py does:
    `blk.N.<proj>.weight.lora_a` (rank, in) and `.lora_b` (out, rank), B's rows converted
    like the weight's (llama's Q/K permuted), 2-D tensors in `dtype` (F16 where a row is not
    whole Q8_0 blocks), lila_gate tensors kept in F32."""
    config = json.loads((Path(peft_dir) / CONFIG).read_text())
    writer = gguf.GGUFWriter(str(path), tiny.arch)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(config["lora_alpha"]))
    for key, data in load_file(Path(peft_dir) / WEIGHTS).items():
        if key.startswith("lila_gate."):
            writer.add_tensor(key, data.astype(np.float32))
            continue
        hf_name = key.removeprefix("base_model.model.").replace(".lora_A.weight", ".weight")
        if ".lora_B." in key:
            name, data = hf_gguf.to_gguf(tiny.arch, tiny.model.config,
                                         hf_name.replace(".lora_B.weight", ".weight"), data)
            _add(writer, f"{name}.lora_b", data, dtype)
        else:
            _add(writer, f"{hf_gguf.gguf_name(tiny.arch, hf_name)}.lora_a", data, dtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return Path(path)


def _add(writer: gguf.GGUFWriter, name: str, data: np.ndarray, dtype: gguf.GGMLQuantizationType) -> None:
    data = data.astype(np.float32)
    try:
        raw = gguf.quants.quantize(data, dtype)
    except gguf.QuantError:   # convert_hf_to_gguf's fallback
        dtype = gguf.GGMLQuantizationType.F16
        raw = gguf.quants.quantize(data, dtype)
    writer.add_tensor(name, raw, raw_dtype=dtype)
