"""`lila detect`: the CPU Lila sees and the backend it would pick."""
from __future__ import annotations

import argparse

from lila.hardware import choose_backend, detect


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", default=None, help="show what this override would pick")


def run(args: argparse.Namespace) -> int:
    cpu = detect()
    choice = choose_backend(cpu, args.backend)
    print(cpu.describe())
    print(f"backend: {choice.name} ({choice.reason})")
    if choice.kernels:
        from lila.native import library
        print(f"kernels ({choice.kernels}):")
        for entry, symbol in library().kernel_symbols(choice.kernels).items():
            print(f"  {entry:<18} {symbol or 'missing'}")
    return 0
