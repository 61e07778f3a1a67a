"""Memory read bandwidth, and the decode speed it allows for a model.

Decoding one token reads every weight once, and a small model's weights do not fit in the
cache, so decode speed is bounded by how fast memory can be read:

    ceiling tok/s = read bandwidth / bytes of weights read per token

This script measures the bandwidth by summing a buffer much larger than the last-level
cache (default 1 GiB) as 64-bit words, with a numba parallel loop (plain numpy in threads if
numba cannot be imported), at 1 thread and at --threads threads: one warm-up pass, then
the median of -r passes, in GB/s (10^9 bytes per second).

With --model it also prints the bytes read per decoded token: the sum of the stored sizes
of every tensor a token goes through, i.e. all of them except token_embd (a token reads
one row of it), unless the output projection is tied to token_embd, in which case
token_embd counts once in full. The KV cache and activations are left out: they are small
next to the weights at short contexts. From that, the bandwidth-bound decode ceiling at
--threads threads, and 80% of it, the target a good engine should reach.

    .venv/bin/python bench/bandwidth.py --threads 2 --model smollm2
    .venv/bin/python bench/bandwidth.py --size-mib 2048 -r 7 --json

Read the spread (min..max) before the median: on a shared machine another job reading
memory at the same time shows up as a low minimum; compare medians taken at quiet times.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import numpy as np

from lila.errors import LilaError
from lila.formats.gguf import GGUFFile
from lila.store import resolve_model

TARGET_FRACTION = 0.8
EMBEDDING = "token_embd.weight"
OUTPUT = "output.weight"

try:
    import numba

    @numba.njit(parallel=True, cache=True)
    def _parallel_sum(words: np.ndarray) -> np.uint64:
        total = np.uint64(0)
        for i in numba.prange(words.size):
            total += words[i]
        return total
except ImportError:
    numba = None


def numba_reader(threads: int) -> Callable[[np.ndarray], int]:
    numba.set_num_threads(threads)
    return lambda words: int(_parallel_sum(words))


def numpy_reader(threads: int) -> Callable[[np.ndarray], int]:
    # numpy releases the GIL inside sum, so slices summed in threads read memory in parallel.
    pool = ThreadPoolExecutor(threads)

    def read(words: np.ndarray) -> int:
        slices = np.array_split(words, threads)
        return sum(int(part) for part in pool.map(np.sum, slices))
    return read


def measure(words: np.ndarray, threads: int, reps: int) -> dict[str, Any]:
    """GB/s of `reps` full reads of `words` after one warm-up read (which also compiles)."""
    read = numba_reader(threads) if numba is not None else numpy_reader(threads)
    expected = words.size  # every word is 1: a wrong sum means a broken reader, not a fast one
    if read(words) != expected:
        raise RuntimeError("the read loop summed the buffer wrongly")
    rates = []
    for _ in range(reps):
        start = time.perf_counter()
        read(words)
        rates.append(words.nbytes / (time.perf_counter() - start) / 1e9)
    return {"threads": threads, "gbs": statistics.median(rates), "min": min(rates), "max": max(rates),
            "runs": rates}


def bytes_per_token(path: Path) -> dict[str, Any]:
    """Stored bytes of the weights that decoding one token reads."""
    with GGUFFile.open(path) as model:
        sizes = {name: info.nbytes for name, info in model.tensors.items()}
    tied = OUTPUT not in sizes
    read = sum(size for name, size in sizes.items() if name != EMBEDDING or tied)
    return {"model": str(path), "file_bytes": path.stat().st_size, "bytes_per_token": read, "tied": tied}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="threads of the parallel read "
                        "(default: all cores, %(default)s)")
    parser.add_argument("--size-mib", type=int, default=1024, help="buffer size (default: %(default)s MiB)")
    parser.add_argument("-r", "--reps", type=int, default=5, help="timed reads per thread count")
    parser.add_argument("--model", help="GGUF path or model name: print its bandwidth-bound decode ceiling")
    parser.add_argument("--json", action="store_true", help="last stdout line: the results as one JSON object")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    if numba is not None and args.threads > numba.config.NUMBA_NUM_THREADS:
        raise SystemExit(f"error: numba allows at most {numba.config.NUMBA_NUM_THREADS} threads "
                         f"(set NUMBA_NUM_THREADS to raise it)")
    try:
        model = bytes_per_token(resolve_model(args.model)) if args.model else None
    except LilaError as e:
        raise SystemExit(f"error: {e}") from None

    words = np.empty(args.size_mib * (1 << 20) // 8, dtype=np.uint64)
    words.fill(1)  # touches every page, so that page faults are not timed
    thread_counts = sorted({1, args.threads})
    results = [measure(words, threads, args.reps) for threads in thread_counts]
    method = "numba prange" if numba is not None else "numpy sum in threads"

    print(f"memory read bandwidth: {args.size_mib} MiB buffer, {method}, median (min..max) of {args.reps} runs")
    for result in results:
        print(f"  {result['threads']:3} thread{'s' if result['threads'] > 1 else ' '}  {result['gbs']:7.2f} GB/s "
              f"({result['min']:.2f}..{result['max']:.2f})")
    summary: dict[str, Any] = {"buffer_mib": args.size_mib, "method": method, "reps": args.reps,
                               "bandwidth": results}
    if model is not None:
        bandwidth = results[-1]["gbs"] * 1e9
        ceiling = bandwidth / model["bytes_per_token"]
        model |= {"threads": results[-1]["threads"], "ceiling_tok_s": ceiling,
                  "target_tok_s": TARGET_FRACTION * ceiling}
        read_what = "all weights, token_embd as the tied output" if model["tied"] else "all weights but token_embd"
        print(f"model {model['model']}\n  {model['bytes_per_token'] / 1e6:.1f} MB read per decoded token "
              f"({read_what}; file {model['file_bytes'] / 1e6:.1f} MB)\n"
              f"  decode ceiling at {model['threads']} threads: {ceiling:.1f} tok/s; "
              f"{TARGET_FRACTION:.0%} of it: {model['target_tok_s']:.1f} tok/s")
        summary["model"] = model
    if args.json:
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
