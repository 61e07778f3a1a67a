"""`lila chat [MODEL]`: an interactive conversation in the terminal.

Ctrl-C stops the answer being written, not the chat; Ctrl-D or /quit leaves.
"""
from __future__ import annotations

import argparse
import sys

from lila.cli.options import add_model_options, add_sampling_options, load_model, sampling_kwargs

HELP = """commands:
  /system TEXT   set the system message (and start over)
  /reset         forget the conversation
  /quit          leave (or Ctrl-D)
Ctrl-C stops the current answer."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_options(parser, model_required=False)
    parser.add_argument("--system", default=None, help="system message")
    add_sampling_options(parser)


def run(args: argparse.Namespace) -> int:
    try:
        import readline  # noqa: F401  (line editing and input history where available)
    except ImportError:
        pass
    interactive = sys.stdin.isatty()
    options = sampling_kwargs(args)
    print("loading model...", file=sys.stderr, flush=True)
    with load_model(args) as model:
        streaming = ", weights streaming from disk" if model.low_memory else ""
        print(f"{model.name} ({model.config.arch}, context {model.n_ctx}, "
              f"~{sum(model.memory.values()) >> 20} MB{streaming}). Type /help for commands.",
              file=sys.stderr)
        system = args.system
        messages = _start(system)
        while True:
            try:
                line = input(">>> " if interactive else "")
            except EOFError:
                print(file=sys.stderr)
                return 0
            except KeyboardInterrupt:
                print("\n(use /quit or Ctrl-D to leave)", file=sys.stderr)
                continue
            text = line.strip()
            if not text:
                continue
            if text.startswith("/"):
                command, _, rest = text.partition(" ")
                if command in ("/quit", "/exit", "/bye"):
                    return 0
                if command == "/reset":
                    messages = _start(system)
                    print("(conversation cleared)", file=sys.stderr)
                elif command == "/system":
                    system = rest.strip() or None
                    messages = _start(system)
                    print("(system message set; conversation cleared)", file=sys.stderr)
                elif command == "/help":
                    print(HELP, file=sys.stderr)
                else:
                    print(f"unknown command {command}; /help lists them", file=sys.stderr)
                continue
            messages.append({"role": "user", "content": line})
            answer = _answer(model, messages, options)
            messages.append({"role": "assistant", "content": answer})


def _start(system: str | None) -> list[dict]:
    return [{"role": "system", "content": system}] if system else []


def _answer(model, messages: list[dict], options: dict) -> str:
    completion = model.chat(messages, **options)
    pieces: list[str] = []
    try:
        for piece in completion:
            pieces.append(piece)
            sys.stdout.write(piece)
            sys.stdout.flush()
        note = ""
    except KeyboardInterrupt:
        completion.close()   # Ctrl-C in a write leaves it suspended, its stats unfinished
        note = ", stopped"
    s = completion.stats
    footer = (f"[{s.completion_tokens} tokens, {s.decode_tps:.1f} tok/s; prompt {s.prompt_tokens} "
              f"tokens, {s.prefill_tps:.1f} tok/s{note}]")
    sys.stdout.write("\n")
    print(f"\033[2m{footer}\033[0m" if sys.stderr.isatty() else footer, file=sys.stderr)
    return "".join(pieces)
