"""`lila bench MODEL`: how fast this machine runs a model.

Prefill is one batch of -p prompt tokens; decode is -n single-token steps after it, each
taking the greedy token, as generation does. Both are timed -r times after a warm-up
run, and reported as the median with the range. Tokens are random ids (seeded), as
llama-bench's are, so the numbers do not depend on a prompt.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time

import numpy as np

from lila.cli.options import (add_adapter_options, add_memory_option, adapter_requests, describe_adapter,
                              load_adapters, megabytes, notice_fallback)
from lila.errors import LilaError
from lila.executor.memory import summary
from lila.hardware.memory import resident_set


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", nargs="?", default=None,
                        help="GGUF file, directory or pulled model name (default: SmolLM2)")
    parser.add_argument("-t", "--threads", type=int, default=None,
                        help="threads (default: the CPU's performance cores)")
    parser.add_argument("-p", "--n-prompt", type=int, default=128, help="prompt tokens (prefill)")
    parser.add_argument("-n", "--n-gen", type=int, default=64, help="generated tokens (decode)")
    parser.add_argument("-r", "--repetitions", type=int, default=3)
    parser.add_argument("--backend", default=None, help="kernel backend (see `lila detect`)")
    add_memory_option(parser)
    add_adapter_options(parser)
    parser.add_argument("--json", action="store_true", help="end with one JSON line")


def run(args: argparse.Namespace) -> int:
    for name, value, low in (("-p", args.n_prompt, 1), ("-n", args.n_gen, 1),
                             ("-r", args.repetitions, 1)):
        if not low <= value <= 1 << 20:
            raise LilaError(f"{name} must be at least {low}, not {value}")
    adapters = adapter_requests(args)
    import lila
    started = time.perf_counter()
    model = lila.load(args.model, backend=args.backend, threads=args.threads,
                      n_ctx=_context(args), max_batch=args.n_prompt, low_memory=args.low_memory)
    load_seconds = time.perf_counter() - started
    notice_fallback(model.choice)
    load_adapters(model, adapters)
    with model:
        result = measure(model.backend, model.config.vocab_size, args.n_prompt, args.n_gen,
                         args.repetitions)
        result.update(model=model.name, backend=model.choice.name,
                      kernels=model.choice.kernels or model.choice.name,
                      threads=getattr(model.backend, "threads", None) or 1,
                      n_prompt=args.n_prompt, n_gen=args.n_gen, reps=args.repetitions,
                      load_ms=round(load_seconds * 1000, 1), low_memory=model.low_memory,
                      rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                      adapters=[dict(namespace=ns.name, path=ns.path, ranks=list(ns.ranks),
                                     modules=list(ns.modules), scale=ns.scale,
                                     memory_mb=round(ns.memory / 2**20, 2))
                                for ns in model.fabric.namespaces if ns.loaded],
                      adapter_memory_mb=round(model.fabric.memory / 2**20, 2))
        # what is in RAM at the end, as the OS counts it (file-backed pages it may drop)
        resident = resident_set()
        result.update({f"{key}_mb": round(value / 2**20, 1) for key, value in resident.items()})
        print_table(result, model, summary(model.low_memory, resident))
    if args.json:
        print(json.dumps(result))
    return 0


def _context(args: argparse.Namespace) -> int | None:
    """Just enough context for the run (a big default cache would only cost memory)."""
    return args.n_prompt + args.n_gen


def measure(backend, vocab: int, n_prompt: int, n_gen: int, reps: int) -> dict:
    rng = np.random.default_rng(0)
    prompt = rng.integers(0, vocab, n_prompt)
    prefill, decode = [], []
    for rep in range(reps + 1):          # the first is the warm-up
        t0 = time.perf_counter()
        token = int(np.argmax(backend.forward(prompt, 0)[-1]))
        t1 = time.perf_counter()
        for step in range(n_gen):
            token = int(np.argmax(backend.forward(np.array([token]), n_prompt + step)[-1]))
        t2 = time.perf_counter()
        if rep:
            prefill.append(t1 - t0)
            decode.append(t2 - t1)
    pp = [n_prompt / s for s in prefill]
    tg = [n_gen / s for s in decode]
    return {"pp": round(statistics.median(pp), 2), "pp_min": round(min(pp), 2),
            "pp_max": round(max(pp), 2), "tg": round(statistics.median(tg), 2),
            "tg_min": round(min(tg), 2), "tg_max": round(max(tg), 2),
            "ttft_ms": round(statistics.median(prefill) * 1000, 2)}


def print_table(r: dict, model, memory: str) -> None:
    cfg = model.config
    print(f"model    {r['model']} ({cfg.arch}, {cfg.n_layers} layers, "
          f"{model.gguf.file_size / 2**20:.0f} MB)")
    print(f"backend  {r['backend']} ({r['kernels']} kernels), {r['threads']} threads")
    kernels = getattr(model.backend, "kernel_names", None)
    if kernels:
        print("kernels  " + ", ".join(sorted(set(kernels().values()))))
    print(f"memory   {memory}; peak {r['rss_mb']:.0f} MB")
    loaded = [ns for ns in model.fabric.namespaces if ns.loaded]
    if loaded:
        print(f"adapters {'; '.join(f'{ns.name} {describe_adapter(ns)}' for ns in loaded)}; "
              f"{megabytes(model.fabric.memory)} in all")
    print(f"\n{'test':<8} {'tok/s':>10} {'min':>10} {'max':>10}")
    for key, label in (("pp", f"pp{r['n_prompt']}"), ("tg", f"tg{r['n_gen']}")):
        print(f"{label:<8} {r[key]:>10.2f} {r[key + '_min']:>10.2f} {r[key + '_max']:>10.2f}")
    print(f"\ntime to first token {r['ttft_ms']:.1f} ms (prefill of {r['n_prompt']} tokens), "
          f"load {r['load_ms']:.0f} ms, median of {r['reps']} runs")
    sys.stdout.flush()
