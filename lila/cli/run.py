"""`lila run MODEL PROMPT`: one answer, streamed to stdout."""
from __future__ import annotations

import argparse
import sys

from lila.cli.options import (add_model_options, add_sampling_options, adapter_requests, load_model,
                              sampling_kwargs)
from lila.cli.text import accept_any_stdin, decoded, decoded_argument
from lila.executor.memory import summary
from lila.hardware.memory import resident_set


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_options(parser, model_required=True)
    parser.add_argument("prompt", help="the prompt ('-' reads standard input)")
    parser.add_argument("--raw", action="store_true", help="continue the text; no chat template")
    parser.add_argument("--system", default=None, help="system message (chat template only)")
    parser.add_argument("-v", "--verbose", action="store_true", help="timings on stderr")
    add_sampling_options(parser)


def run(args: argparse.Namespace) -> int:
    if args.prompt == "-":
        accept_any_stdin()
        prompt = decoded(sys.stdin.read(), "the prompt", sys.stdin.encoding)
    else:
        prompt = decoded_argument(args.prompt, "the prompt")
    options = sampling_kwargs(args)
    with load_model(args, adapter_requests(args)) as model:
        if args.raw:
            completion = model.generate(prompt, **options)
        else:
            system = decoded_argument(args.system, "--system")
            messages = [{"role": "system", "content": system}] if system else []
            completion = model.chat(messages + [{"role": "user", "content": prompt}], **options)
        for piece in completion:
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
        sys.stdout.flush()
        if args.verbose:
            s = completion.stats
            print(f"[{s.prompt_tokens} prompt tokens at {s.prefill_tps:.1f} tok/s, "
                  f"{s.completion_tokens} generated at {s.decode_tps:.1f} tok/s, "
                  f"finish: {completion.finish_reason}; "
                  f"{summary(model.low_memory, resident_set())}]", file=sys.stderr)
    return 0
