"""Options shared by the commands that load a model and generate."""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any, NamedTuple

from lila.arguments import check_int
from lila.errors import LilaError, one_line
from lila.fabric.fabric import DEFAULT_NAMESPACES, Namespace
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
    add_adapter_options(parser)


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


def add_adapter_options(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("adapters (the memory fabric)")
    g.add_argument("--adapter", action="append", default=[], metavar="NAMESPACE=PATH",
                   help="load a LoRA adapter (PEFT directory or GGUF LoRA) into a namespace: "
                        f"{', '.join(DEFAULT_NAMESPACES)} (repeatable)")
    g.add_argument("--adapter-scale", action="append", default=[], metavar="NAMESPACE=S",
                   help="scale that namespace's adapter by S (default 1; repeatable)")


class AdapterRequest(NamedTuple):
    path: str
    scale: float = 1.0


def adapter_requests(args: argparse.Namespace) -> dict[str, AdapterRequest]:
    """--adapter and --adapter-scale by namespace, checked now so that a bad flag costs
    no model load (the adapter itself is read after the model)."""
    paths = _assignments("--adapter", "PATH", args.adapter)
    scales = {namespace: number(f"--adapter-scale {namespace}", text)
              for namespace, text in _assignments("--adapter-scale", "S", args.adapter_scale).items()}
    for namespace, path in paths.items():
        if not os.path.exists(path):
            raise LilaError(f"--adapter {namespace}={one_line(path)}: no such file or directory")
    for namespace in scales:
        if namespace not in paths:
            raise LilaError(f"--adapter-scale {namespace}: no --adapter {namespace}=PATH")
    return {namespace: AdapterRequest(path, scales.get(namespace, 1.0))
            for namespace, path in paths.items()}


def number(what: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise LilaError(f"{what}: a number, not {one_line(text)!r}") from None


def _assignments(flag: str, what: str, values: list[str]) -> dict[str, str]:
    assigned: dict[str, str] = {}
    for value in values:
        namespace, equals, rest = value.partition("=")
        if not equals or not rest:
            raise LilaError(f"{flag} takes NAMESPACE={what}, not {one_line(value)!r}")
        if namespace not in DEFAULT_NAMESPACES:
            raise LilaError(f"{flag}: no namespace {one_line(namespace)!r}; the namespaces are "
                            f"{', '.join(DEFAULT_NAMESPACES)}")
        if namespace in assigned:
            raise LilaError(f"{flag}: namespace {namespace} given twice")
        assigned[namespace] = rest
    return assigned


def load_model(args: argparse.Namespace, adapters: dict[str, AdapterRequest]):
    import lila
    model = lila.load(args.model, n_ctx=args.ctx_size, backend=args.backend,
                      threads=args.threads, low_memory=args.low_memory)
    notice_fallback(model.choice)
    if model.template.problem:   # the file's chat template cannot be used: say so, once per load
        print(f"lila: warning: {model.template.problem}; using {model.template.origin}", file=sys.stderr)
    load_adapters(model, adapters)
    return model


def load_adapters(model, adapters: dict[str, AdapterRequest]) -> None:
    """Put the adapters in the model's namespaces; if one fails, the model is closed."""
    try:
        for namespace, (path, scale) in adapters.items():
            model.fabric.load(namespace, path, scale=scale)
    except BaseException:
        model.close()
        raise


def describe_adapter(namespace: Namespace) -> str:
    """A loaded namespace in a few words, for chat and bench."""
    return (f"{one_line(namespace.path)} ({namespace.format}, rank {', '.join(map(str, namespace.ranks))}, "
            f"{' '.join(namespace.modules)}, scale {namespace.scale:g}, "
            f"gate {namespace.gate or 'none'}, {megabytes(namespace.memory)})")


def megabytes(size: int) -> str:
    return f"{size / 2**20:.2f} MB"


def notice_fallback(choice) -> None:
    """One line on stderr when this CPU has native kernels that this installation lacks."""
    if choice.name == "numba" and choice.kernel_family != "generic":
        print(f"lila: running on numba kernels ({choice.reason})", file=sys.stderr)
