"""Options shared by the commands that load a model and generate."""
from __future__ import annotations

import argparse
import sys
from typing import Any

from lila.arguments import check_int
from lila.generation.sampling import SamplingParams


def add_model_options(parser: argparse.ArgumentParser, *, model_required: bool) -> None:
    parser.add_argument("model", nargs=None if model_required else "?", default=None,
                        help="GGUF file, directory or pulled model name"
                             + ("" if model_required else " (default: SmolLM2-135M-Instruct)"))
    parser.add_argument("-c", "--ctx-size", type=int, default=None,
                        help="context window in tokens (default: min(model's, 4096))")
    parser.add_argument("--backend", default=None, help="kernel backend (see `lila detect`)")
    parser.add_argument("-t", "--threads", type=int, default=None,
                        help="threads (default: the CPU's performance cores)")
    add_memory_option(parser)


def add_memory_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--low-memory", action=argparse.BooleanOptionalAction, default=None,
                        help="stream weights from disk, for a model larger than memory "
                             "(default: only when it does not fit; LILA_LOW_MEMORY=1 or 0)")


def add_sampling_options(parser: argparse.ArgumentParser) -> None:
    d = SamplingParams()
    g = parser.add_argument_group("sampling")
    g.add_argument("--greedy", action="store_true", help="always take the most likely token")
    g.add_argument("--temp", type=float, default=d.temperature, help="temperature (0: greedy)")
    g.add_argument("--top-k", type=int, default=d.top_k, help="keep the k most likely (0: off)")
    g.add_argument("--top-p", type=float, default=d.top_p, help="nucleus sampling (1: off)")
    g.add_argument("--min-p", type=float, default=d.min_p, help="drop tokens below min_p x the top")
    g.add_argument("--repeat-penalty", type=float, default=d.repeat_penalty)
    g.add_argument("--repeat-last-n", type=int, default=d.repeat_last_n)
    g.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    g.add_argument("-n", "--max-tokens", type=int, default=512, help="most tokens to generate")
    g.add_argument("--stop", action="append", default=[], help="stop at this text (repeatable)")
    g.add_argument("--ignore-eos", action="store_true",
                   help="never pick an end-of-turn token: write until --max-tokens, a full "
                        "context or a --stop text")


def sampling_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The generation options, checked now so that a bad flag costs no model load."""
    sampling = dict(greedy=args.greedy, temperature=args.temp, top_k=args.top_k,
                    top_p=args.top_p, min_p=args.min_p, repeat_penalty=args.repeat_penalty,
                    repeat_last_n=args.repeat_last_n, seed=args.seed, ignore_eos=args.ignore_eos)
    SamplingParams(**sampling).validated()
    check_int("max_tokens", args.max_tokens, 1)
    return dict(sampling, max_tokens=args.max_tokens, stop=args.stop)


def load_model(args: argparse.Namespace):
    import lila
    model = lila.load(args.model, n_ctx=args.ctx_size, backend=args.backend,
                      threads=args.threads, low_memory=args.low_memory)
    notice_fallback(model.choice)
    if model.template.problem:   # the file's chat template cannot be used: say so, once per load
        print(f"lila: warning: {model.template.problem}; using {model.template.origin}", file=sys.stderr)
    return model


def notice_fallback(choice) -> None:
    """One line on stderr when this CPU has native kernels that this installation lacks."""
    if choice.name == "numba" and choice.kernel_family != "generic":
        print(f"lila: running on numba kernels ({choice.reason})", file=sys.stderr)
