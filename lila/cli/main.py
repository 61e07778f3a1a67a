"""`lila <command>`: parse arguments, dispatch, and turn every LilaError into one line."""
from __future__ import annotations

import argparse
import importlib
import sys

from lila.errors import LilaError

COMMANDS = {
    "chat": "interactive chat with a model",
    "run": "answer one prompt",
    "bench": "measure prefill and decode speed",
    "info": "describe a model file",
    "detect": "show CPU features and the backend Lila would use",
    "pull": "fetch a model",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lila", description="Run language models locally.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    modules = {}
    for name, help_text in COMMANDS.items():
        modules[name] = importlib.import_module(f"lila.cli.{name}")
        modules[name].add_arguments(sub.add_parser(name, help=help_text,
                                                   description=help_text))
    args = parser.parse_args(argv)
    try:
        return modules[args.command].run(args) or 0
    except LilaError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
