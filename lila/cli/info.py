"""`lila info MODEL`: what a model file holds and what running it takes; `lila info ADAPTER`:
what a LoRA adapter holds."""
from __future__ import annotations

import argparse
import math
from collections import Counter
from pathlib import Path

from lila.chat_template import ChatTemplate
from lila.errors import LilaError, one_line
from lila.executor import choose, memory_estimate
from lila.executor.memory import streaming
from lila.fabric.adapter import describe_adapter
from lila.fabric.gguf_lora import is_gguf_adapter
from lila.fabric.peft_files import is_peft
from lila.formats.gguf import GGUFFile
from lila.hardware.memory import available_memory
from lila.models import describe
from lila.tokenizer import Tokenizer

MB = 1 << 20


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="GGUF file, directory or pulled model name")
    parser.add_argument("-c", "--ctx-size", type=int, default=None,
                        help="context window for the memory estimate (default: min(model's, 4096))")
    parser.add_argument("--backend", default=None, help="the backend to estimate memory for")


def run(args: argparse.Namespace) -> int:
    from lila.api import DEFAULT_CONTEXT
    from lila.store import resolve_model
    if is_peft(Path(args.model)):
        _print(describe_adapter(args.model))
        return 0
    path = resolve_model(args.model)
    with GGUFFile.open(path) as gguf:
        if is_gguf_adapter(gguf):
            _print(describe_adapter(path))
            return 0
        spec = describe(gguf)
        tokenizer = Tokenizer.from_gguf_metadata(gguf.metadata)
        template = ChatTemplate.from_gguf_metadata(gguf.metadata, tokenizer)
        cfg = spec.config
        n_ctx = args.ctx_size or min(cfg.context_length, DEFAULT_CONTEXT)
        params = sum(math.prod(info.shape) for info in spec.weights.values())
        mix = Counter()
        for info in spec.weights.values():
            mix[info.ggml_type.name] += math.prod(info.shape)
        choice = choose(args.backend)
        memory = memory_estimate(spec, n_ctx=n_ctx, backend=choice.name)
        rows = [
            ("file", str(path)),
            ("name", cfg.name),
            ("architecture", cfg.arch),
            ("parameters", f"{params / 1e6:.1f} M"),
            ("quantization", ", ".join(f"{t} {n / params:.0%}" for t, n in mix.most_common())),
            ("file size", f"{gguf.file_size / MB:.1f} MB (GGUF v{gguf.version})"),
            ("layers", str(cfg.n_layers)),
            ("width / ffn", f"{cfg.dim} / {cfg.ffn_dim}"),
            ("heads (q / kv)", f"{cfg.n_heads} / {cfg.n_kv_heads} of {cfg.head_dim}"),
            ("context", f"{cfg.context_length} (using {n_ctx})"),
            ("rope", f"base {cfg.rope_base:g}, {cfg.rope_dim} dims, scale {cfg.rope_scale:g}"),
            ("sliding window", str(cfg.sliding_window) if cfg.sliding_window else "none"),
            ("experts", "none" if cfg.moe is None else
             f"{cfg.moe.experts}, {cfg.moe.used} per token, ffn {cfg.moe.ffn_dim}"
             + (f", shared ffn {cfg.moe.shared_ffn_dim}" if cfg.moe.shared_ffn_dim else "")),
            ("tokenizer", f"{tokenizer.kind}, {tokenizer.vocab_size} tokens"),
            ("chat template", template.origin),
        ]
        if template.problem:   # the file's template, and why it is not used (one line)
            rows.append(("chat template problem", template.problem))
        rows.append(("backend", f"{choice.name} ({choice.reason})"))
        total = sum(memory.values())
        available = available_memory()
        rows += [(f"memory: {k}", f"{v / MB:.0f} MB") for k, v in memory.items()]
        verdict = "fits"
        if total > available:
            try:
                streaming(memory, None, available)
                verdict = "does not fit: weights will stream from disk (slower)"
            except LilaError as e:
                verdict = f"does NOT fit: {e}"
        rows.append(("memory: total", f"{total / MB:.0f} MB; {available / MB:.0f} MB available; "
                                      f"{verdict}"))
    _print(rows)
    return 0


def _print(rows: list[tuple[str, str]]) -> None:
    width = max(len(k) for k, _ in rows)
    for key, value in rows:   # a value from the file (its name) must not forge lines
        print(f"{key:<{width}}  {one_line(value, limit=500)}")
