"""llama.cpp side of bench/compare_llamacpp.py: one prefill and one decode measurement.

Runs inside bench/.venv-llamacpp (where llama-cpp-python is installed), never in Lila's
environment. Loads MODEL with n_threads = n_threads_batch = THREADS and n_batch = n_ubatch
= N_PROMPT, so that the prompt is computed as one batch, then does what `lila bench` does
for one repetition:

  prefill   eval of N_PROMPT random token ids (seeded) from position 0
  decode    N_GEN evals of one token each after the prompt, each the greedy (argmax) token
            of the previous step's logits, as generation does

once untimed as a warm-up (first touch of the weights, thread start-up), then timed after
a reset. Only the last position's logits are computed (logits_all=False).
The last stdout line is one JSON object: pp and tg in tokens/s, ttft_ms (the prefill time),
rss_mb (peak resident set), and the parameters used.

    bench/.venv-llamacpp/bin/python bench/llamacpp_driver.py MODEL --threads 2 -p 128 -n 64
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time

import llama_cpp
import numpy as np


def last_logits(llm: llama_cpp.Llama) -> np.ndarray:
    return np.ctypeslib.as_array(llama_cpp.llama_get_logits(llm.ctx), shape=(llm.n_vocab(),))


def prefill_and_decode(llm: llama_cpp.Llama, prompt: list[int], n_gen: int) -> tuple[float, float]:
    """Seconds for the prefill of prompt and for n_gen greedy decode steps after it."""
    llm.reset()  # back to position 0; the next eval drops the KV cache entries past it
    start = time.perf_counter()
    llm.eval(prompt)
    token = int(np.argmax(last_logits(llm)))
    prefilled = time.perf_counter()
    for _ in range(n_gen):
        llm.eval([token])
        token = int(np.argmax(last_logits(llm)))
    return prefilled - start, time.perf_counter() - prefilled


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("-p", "--n-prompt", type=int, default=128)
    parser.add_argument("-n", "--n-gen", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    llm = llama_cpp.Llama(model_path=args.model, n_threads=args.threads, n_threads_batch=args.threads,
                          n_batch=args.n_prompt, n_ubatch=args.n_prompt, n_ctx=args.n_prompt + args.n_gen,
                          verbose=False)
    prompt = np.random.default_rng(args.seed).integers(0, llm.n_vocab(), args.n_prompt).tolist()
    prefill_and_decode(llm, prompt, args.n_gen)  # warm-up
    prefill_s, decode_s = prefill_and_decode(llm, prompt, args.n_gen)

    # ru_maxrss is in KiB on Linux.
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({
        "pp": args.n_prompt / prefill_s, "tg": args.n_gen / decode_s, "ttft_ms": prefill_s * 1000,
        "rss_mb": round(rss_mb, 1), "threads": args.threads, "n_prompt": args.n_prompt, "n_gen": args.n_gen,
        "backend": f"llama-cpp-python {llama_cpp.__version__}", "model": args.model,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
