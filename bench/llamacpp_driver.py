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

Each --lora GGUF LoRA file (as convert_lora_to_gguf.py writes them) is applied with scale
1, all of them at once, through llama.cpp's own API (llama_adapter_lora_init, then
llama_set_adapters_lora) rather than Llama(lora_path=...), which takes only one and turns
mmap off.

llama.cpp puts weights it can repack into "extra" buffer types: AMX tiles where the CPU
has AMX, else its CPU_REPACK layouts (Q4_0, among others, for AVX2/AVX-512 kernels). Its
AMX matmul crashes on a batch of more than one token on some machines (a segfault in
ggml_backend_amx_mul_mat, llama.cpp#20824; so on the development machine with 0.3.36), so
--extra-buffers auto (the default) turns extra buffer types off (use_extra_bufts = false,
`llama-bench --no-repack`) where llama.cpp reports AMX_INT8, which loses the repacked
layouts too; `on` keeps them anyway. The JSON says which ran.

The last stdout line is one JSON object: pp and tg in tokens/s, ttft_ms (the prefill time),
rss_mb (peak resident set), and the parameters used.

    bench/.venv-llamacpp/bin/python bench/llamacpp_driver.py MODEL --threads 2 -p 128 -n 64
    bench/.venv-llamacpp/bin/python bench/llamacpp_driver.py MODEL --threads 2 --lora a.gguf --lora b.gguf
"""
from __future__ import annotations

import argparse
import ctypes
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


def use_extra_buffers(choice: str) -> bool:
    if choice != "auto":
        return choice == "on"
    return b"AMX_INT8 = 1" not in llama_cpp.llama_print_system_info()


def turn_off_extra_buffers() -> None:
    """Make the Llama objects made after this load weights without extra buffer types:
    Llama() starts from llama_model_default_params() and has no argument for it."""
    default_params = llama_cpp.llama_cpp.llama_model_default_params

    def params() -> llama_cpp.llama_model_params:
        chosen = default_params()
        chosen.use_extra_bufts = False
        return chosen

    llama_cpp.llama_cpp.llama_model_default_params = params


def apply_loras(llm: llama_cpp.Llama, paths: list[str]) -> list:
    """Load the GGUF LoRA files and set them all on llm's context, each with scale 1."""
    adapters = []
    for path in paths:
        adapter = llama_cpp.llama_adapter_lora_init(llm.model, path.encode())
        if not adapter:
            sys.exit(f"llama.cpp could not load the LoRA adapter {path} (see its log above)")
        adapters.append(adapter)
    pointers = (llama_cpp.llama_adapter_lora_p_ctypes * len(adapters))(*adapters)
    scales = (ctypes.c_float * len(adapters))(*[1.0] * len(adapters))
    if llama_cpp.llama_set_adapters_lora(llm.ctx, pointers, len(adapters), scales) != 0:
        sys.exit(f"llama.cpp could not set the LoRA adapters {', '.join(paths)}")
    return adapters    # freed with the model


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("-p", "--n-prompt", type=int, default=128)
    parser.add_argument("-n", "--n-gen", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lora", action="append", default=[], metavar="GGUF",
                        help="a GGUF LoRA adapter to apply (repeat for several)")
    parser.add_argument("--extra-buffers", choices=("auto", "on", "off"), default="auto",
                        help="llama.cpp's repacked weight buffers (AMX, CPU_REPACK); auto: off where it "
                             "would use AMX (default: %(default)s)")
    args = parser.parse_args()

    extra_buffers = use_extra_buffers(args.extra_buffers)
    if not extra_buffers:
        turn_off_extra_buffers()

    llm = llama_cpp.Llama(model_path=args.model, n_threads=args.threads, n_threads_batch=args.threads,
                          n_batch=args.n_prompt, n_ubatch=args.n_prompt, n_ctx=args.n_prompt + args.n_gen,
                          verbose=False)
    if args.lora:
        apply_loras(llm, args.lora)
    prompt = np.random.default_rng(args.seed).integers(0, llm.n_vocab(), args.n_prompt).tolist()
    prefill_and_decode(llm, prompt, args.n_gen)  # warm-up
    prefill_s, decode_s = prefill_and_decode(llm, prompt, args.n_gen)

    # ru_maxrss is in KiB on Linux.
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({
        "pp": args.n_prompt / prefill_s, "tg": args.n_gen / decode_s, "ttft_ms": prefill_s * 1000,
        "rss_mb": round(rss_mb, 1), "threads": args.threads, "n_prompt": args.n_prompt, "n_gen": args.n_gen,
        "backend": f"llama-cpp-python {llama_cpp.__version__}" + ("" if extra_buffers else ", no extra buffers"),
        "extra_buffers": extra_buffers, "model": args.model, "loras": args.lora,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
