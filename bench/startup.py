"""Where start-up time goes: each phase of `lila.load` on a model, median of N runs.

    .venv/bin/python bench/startup.py [MODEL] [--runs 5]
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from lila.chat_template import ChatTemplate
from lila.executor import choose, create
from lila.formats.gguf import GGUFFile
from lila.models import describe
from lila.store import resolve_model
from lila.tokenizer import Tokenizer


def phases(path, backend: str | None) -> dict[str, float]:
    times, t = {}, time.perf_counter()

    def mark(name: str) -> None:
        nonlocal t
        now = time.perf_counter()
        times[name], t = now - t, now

    gguf = GGUFFile.open(path)
    mark("open + parse header")
    spec = describe(gguf)
    mark("check tensors + build plan")
    tokenizer = Tokenizer.from_gguf_metadata(gguf.metadata)
    mark("tokenizer")
    ChatTemplate.from_gguf_metadata(gguf.metadata, tokenizer)
    mark("chat template")
    choice = choose(backend)
    runner = create(choice, spec.plan, gguf, n_ctx=512, max_batch=64)
    mark(f"backend {choice.name} (weights, buffers, threads)")
    runner.forward(np.array(tokenizer.encode("Hello")), 0)
    mark("first forward")
    gguf.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model", nargs="?", default=None)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--backend", default=None)
    args = parser.parse_args()
    path = resolve_model(args.model)
    runs = [phases(path, args.backend) for _ in range(args.runs)]
    print(f"{path.name}, median of {args.runs} runs")
    for name in runs[0]:
        print(f"  {name:<42} {statistics.median(r[name] for r in runs) * 1000:8.1f} ms")
    print(f"  {'total':<42} {statistics.median(sum(r.values()) for r in runs) * 1000:8.1f} ms")


if __name__ == "__main__":
    main()
