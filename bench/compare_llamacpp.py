"""Lila vs llama.cpp: prefill and decode speed on the same GGUF and thread count, side by side.

Each repetition runs Lila, then llama.cpp, each in a fresh process, alternating -r times, so
that a slow patch of a shared machine (another job compiling, thermal drift) hits both
engines rather than one. Each run does its own warm-up, then times

  pp  prefill: N_PROMPT random tokens evaluated as one batch from position 0, in tokens/s
  tg  decode:  N_GEN single-token steps after the prompt, in tokens/s

Lila runs as `lila bench MODEL --threads T -p P -n N -r 1 --json` in this Python; llama.cpp
runs through llama-cpp-python, installed on first use into its own virtual environment
bench/.venv-llamacpp (built from source for this CPU; Lila never depends on it), and driven
by bench/llamacpp_driver.py. With --llama-bench PATH a llama.cpp `llama-bench` binary is used
instead (its tg is measured from an empty context, not after the prompt).

Each --lora GGUF (a GGUF LoRA adapter, repeatable) is given to both engines: to llama.cpp
through the driver, to Lila as `lila bench --adapter NS=GGUF`, one namespace each in the
fabric's order (persona, skill, ...). bench/fabric.py measures adapters in more detail.

Output: per-run lines on stderr as they finish, then a table of the median and min..max of
each engine and the ratio of medians lila/llama.cpp (above 1: Lila is faster). With --json
the last stdout line is one JSON object holding all of it, the individual runs included.

    .venv/bin/python bench/compare_llamacpp.py [MODEL] --threads 2 -p 128 -n 64 -r 3
    .venv/bin/python bench/compare_llamacpp.py --install-only     # just build llama-cpp-python
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

from lila.errors import LilaError
from lila.fabric.fabric import DEFAULT_NAMESPACES
from lila.store import resolve_model

BENCH_DIR = Path(__file__).resolve().parent
LLAMACPP_VENV = BENCH_DIR / ".venv-llamacpp"
DRIVER = BENCH_DIR / "llamacpp_driver.py"
BUILD_LOG = LLAMACPP_VENV / "build.log"
# Pinned so that numbers taken on different days compare the same llama.cpp.
LLAMACPP_PACKAGE = "llama-cpp-python==0.3.36"
# GGML_NATIVE is ggml's default, but it turns itself off when SOURCE_DATE_EPOCH is set
# (reproducible builds), so it is asked for explicitly. The rest only skips what the
# benchmark does not use (BLAS would change prefill, and the multimodal library, tests
# and tools only cost build time).
CMAKE_ARGS = ("-DGGML_NATIVE=ON -DGGML_BLAS=OFF -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF "
              "-DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF")
# pip's output lines worth echoing while it builds (the full log goes to BUILD_LOG); ninja's
# steps are echoed shortened to the file they compile or link.
PROGRESS_LINE = re.compile(r"^\s*(Collecting|Building|Installing|Successfully|ERROR|error:|CMake Error)")
NINJA_STEP = re.compile(r"^\s*(\[\d+/\d+\]) ")
COMPILED_SOURCE = re.compile(r"\s-c\s+(\S+)")
LINKED_OUTPUT = re.compile(r"\s-o\s+(\S+)")
ENGINES = ("lila", "llama.cpp")


class BenchError(Exception):
    """A run or the installation failed; the message says which and why."""


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def llamacpp_version(python: Path) -> str | None:
    """The llama-cpp-python version importable by python, or None."""
    if not python.exists():
        return None
    probe = subprocess.run([str(python), "-c", "import llama_cpp; print(llama_cpp.__version__)"],
                           capture_output=True, text=True)
    return probe.stdout.strip() if probe.returncode == 0 else None


def progress(build_line: str) -> str | None:
    """What to show of one line of pip's output, or None."""
    step = NINJA_STEP.match(build_line)
    if step:
        source, output = COMPILED_SOURCE.search(build_line), LINKED_OUTPUT.search(build_line)
        if source:
            return f"{step.group(1)} compiling {Path(source.group(1)).name}"
        return f"{step.group(1)} linking {Path(output.group(1)).name}" if output else step.group(1)
    return build_line.strip()[:150] if PROGRESS_LINE.match(build_line) else None


def install_llamacpp(package: str) -> Path:
    """The Python of bench/.venv-llamacpp, creating the venv and building llama-cpp-python
    from source the first time."""
    python = venv_python(LLAMACPP_VENV)
    installed, wanted = llamacpp_version(python), package.partition("==")[2]
    if installed and installed == (wanted or installed):
        return python
    if not python.exists():
        print(f"creating {LLAMACPP_VENV}", file=sys.stderr)
        created = subprocess.run([sys.executable, "-m", "venv", str(LLAMACPP_VENV)], capture_output=True, text=True)
        if created.returncode != 0:
            raise BenchError(f"could not create {LLAMACPP_VENV}: {created.stderr.strip()}")
    jobs = os.cpu_count() or 1
    print(f"installing {package} into {LLAMACPP_VENV}: it compiles llama.cpp from source for this CPU\n"
          f"  CMAKE_ARGS={CMAKE_ARGS}\n  {jobs} parallel jobs: about 6 minutes on 2 idle cores, longer on a "
          f"busy machine; full log: {BUILD_LOG}", file=sys.stderr)
    env = {**os.environ, "CMAKE_ARGS": CMAKE_ARGS, "CMAKE_BUILD_PARALLEL_LEVEL": str(jobs)}
    # --no-binary: PyPI has only the sdist today, but a prebuilt generic wheel from another
    # index would not be tuned to this CPU. -v so that the compiler's progress reaches the log.
    command = [str(python), "-m", "pip", "install", "-v", "--no-binary", "llama-cpp-python", package]
    started = time.monotonic()
    tail: deque[str] = deque(maxlen=40)
    with open(BUILD_LOG, "w") as log, subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                                                       stderr=subprocess.STDOUT, text=True) as pip:
        assert pip.stdout is not None
        for line in pip.stdout:
            log.write(line)
            tail.append(line.rstrip())
            shown = progress(line)
            if shown:
                print(f"  [{time.monotonic() - started:4.0f} s] {shown}", file=sys.stderr)
    if pip.returncode != 0:
        raise BenchError(f"building {package} failed (exit {pip.returncode}); last lines of {BUILD_LOG}:\n"
                         + "\n".join(tail))
    if llamacpp_version(python) is None:
        raise BenchError(f"{package} installed but `import llama_cpp` fails in {python}")
    print(f"installed {package} in {time.monotonic() - started:.0f}s", file=sys.stderr)
    return python


def llamacpp_python(python: Path | None, package: str) -> Path:
    """python if given (it must import llama_cpp), else bench/.venv-llamacpp's, installed if missing."""
    if python is None:
        return install_llamacpp(package)
    if llamacpp_version(python) is None:
        raise BenchError(f"{python} cannot `import llama_cpp`")
    return python


def last_json_line(stdout: str, what: str) -> dict[str, Any]:
    lines = stdout.strip().splitlines()
    try:
        return json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        raise BenchError(f"{what}: expected a JSON object on the last stdout line, got {stdout[-500:]!r}") from None


def run_checked(command: list[str], what: str) -> str:
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise BenchError(f"{what} failed (exit {result.returncode}): {shlex.join(command)}\n"
                         f"{result.stderr.strip()[-2000:]}")
    return result.stdout


def run_lila(lila_command: list[str], model: Path, args: argparse.Namespace) -> dict[str, Any]:
    command = [*lila_command, "bench", str(model), "--threads", str(args.threads), "-p", str(args.n_prompt),
               "-n", str(args.n_gen), "-r", "1", "--json"]
    if args.lila_backend:
        command += ["--backend", args.lila_backend]
    for namespace, lora in zip(DEFAULT_NAMESPACES, args.lora):
        command += ["--adapter", f"{namespace}={lora}"]
    return last_json_line(run_checked(command, "lila bench"), "lila bench")


def check_lila_adapters(lila_command: list[str], loras: list[str]) -> None:
    if len(loras) > len(DEFAULT_NAMESPACES):
        raise BenchError(f"at most {len(DEFAULT_NAMESPACES)} --lora (one per namespace), not {len(loras)}")
    if loras and "--adapter" not in run_checked([*lila_command, "bench", "--help"], "lila bench --help"):
        raise BenchError("this lila bench has no --adapter option; bench/fabric.py --engines fused,llama.cpp "
                         "measures adapters in both engines through Lila's Python API")


def run_llamacpp_python(python: Path, model: Path, args: argparse.Namespace, seed: int,
                        loras: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """One run of bench/llamacpp_driver.py in python, with the GGUF LoRA adapters loras."""
    command = [str(python), str(DRIVER), str(model), "--threads", str(args.threads), "-p", str(args.n_prompt),
               "-n", str(args.n_gen), "--seed", str(seed)]
    for lora in loras:
        command += ["--lora", str(lora)]
    return last_json_line(run_checked(command, "llama.cpp driver"), "llama.cpp driver")


def run_llama_bench(binary: str, model: Path, args: argparse.Namespace) -> dict[str, Any]:
    # -b/-ub = P: the prompt as one batch, as in the other runs. llama-bench warms up itself.
    command = [binary, "-m", str(model), "-t", str(args.threads), "-p", str(args.n_prompt), "-n", str(args.n_gen),
               "-b", str(args.n_prompt), "-ub", str(args.n_prompt), "-r", "1", "-o", "json"]
    records = json.loads(run_checked(command, "llama-bench"))
    prefill = next(r for r in records if r["n_prompt"] > 0 and r["n_gen"] == 0)
    decode = next(r for r in records if r["n_gen"] > 0 and r["n_prompt"] == 0)
    return {"pp": prefill["avg_ts"], "tg": decode["avg_ts"], "rss_mb": None, "threads": prefill["n_threads"],
            "backend": f"llama-bench {prefill.get('build_commit', '?')}"}


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    summary: dict[str, Any] = {"backend": runs[-1].get("backend"), "threads": runs[-1].get("threads"),
                               "rss_mb": runs[-1].get("rss_mb")}
    for key in ("pp", "tg"):
        values = [run[key] for run in runs]
        summary[key] = statistics.median(values)
        summary[f"{key}_runs"] = values
    return summary


def spread(summary: dict[str, Any], key: str) -> str:
    values = summary[f"{key}_runs"]
    return f"{summary[key]:8.1f} ({min(values):.1f}..{max(values):.1f})"


def print_table(result: dict[str, Any]) -> None:
    lila, llamacpp, ratio = result["lila"], result["llama.cpp"], result["ratio"]
    print(f"model {result['model']}\nthreads {result['threads']}, prompt {result['n_prompt']} tokens, "
          f"{result['n_gen']} decoded, {result['reps']} alternating runs each; tok/s median (min..max)")
    if result["loras"]:
        print(f"LoRA adapters (both engines): {', '.join(result['loras'])}")
    # Each engine's own report of its threads: a backend that ignores --threads shows here.
    print(f"  lila:      {lila['backend']}, {lila['threads']} threads\n"
          f"  llama.cpp: {llamacpp['backend']}, {llamacpp['threads']} threads")
    print(f"{'':10}{'lila':>26}{'llama.cpp':>26}{'lila/llama.cpp':>16}")
    for key, label in (("pp", "prefill"), ("tg", "decode")):
        print(f"{label:10}{spread(lila, key):>26}{spread(llamacpp, key):>26}{ratio[key]:>16.2f}")
    rss = [f"{engine['rss_mb']:.0f}" if engine["rss_mb"] is not None else "?" for engine in (lila, llamacpp)]
    print(f"{'peak RSS MB':10}{rss[0]:>26}{rss[1]:>26}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", help="GGUF path or model name (default: SmolLM2-135M-Instruct Q4_1)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="threads for both engines")
    parser.add_argument("-p", "--n-prompt", type=int, default=128, help="prompt tokens, one batch")
    parser.add_argument("-n", "--n-gen", type=int, default=64, help="decoded tokens")
    parser.add_argument("-r", "--reps", type=int, default=3, help="runs of each engine, alternating")
    parser.add_argument("--json", action="store_true", help="last stdout line: the result as one JSON object")
    parser.add_argument("--llama-bench", metavar="PATH", help="use this llama-bench binary for llama.cpp")
    parser.add_argument("--lila", default=f"{shlex.quote(sys.executable)} -m lila",
                        help="command that runs lila (default: %(default)s)")
    parser.add_argument("--lila-backend", help="passed to `lila bench --backend` (default: Lila's choice)")
    parser.add_argument("--lora", action="append", default=[], metavar="GGUF",
                        help="GGUF LoRA adapter for both engines (repeat for several, at most 5)")
    parser.add_argument("--llamacpp-python", type=Path, metavar="PATH",
                        help="a Python with llama_cpp installed (default: bench/.venv-llamacpp's, built if missing)")
    parser.add_argument("--llamacpp-package", default=LLAMACPP_PACKAGE,
                        help="pip requirement built into bench/.venv-llamacpp (default: %(default)s)")
    parser.add_argument("--install-only", action="store_true",
                        help="create bench/.venv-llamacpp and build llama-cpp-python, then exit")
    args = parser.parse_args()

    try:
        if args.install_only:
            install_llamacpp(args.llamacpp_package)
            return 0
        model = resolve_model(args.model).resolve()
        if args.lora and args.llama_bench:
            raise BenchError("--lora needs llama-cpp-python, not --llama-bench")
        python = None if args.llama_bench else llamacpp_python(args.llamacpp_python, args.llamacpp_package)
        lila_command = shlex.split(args.lila)
        check_lila_adapters(lila_command, args.lora)
        runs: dict[str, list[dict[str, Any]]] = {engine: [] for engine in ENGINES}
        for rep in range(args.reps):
            runs["lila"].append(run_lila(lila_command, model, args))
            if args.llama_bench:
                runs["llama.cpp"].append(run_llama_bench(args.llama_bench, model, args))
            else:
                runs["llama.cpp"].append(run_llamacpp_python(python, model, args, seed=rep, loras=args.lora))
            for engine in ENGINES:
                run = runs[engine][-1]
                print(f"run {rep + 1}/{args.reps} {engine:9}  pp {run['pp']:8.1f}  tg {run['tg']:7.1f} tok/s",
                      file=sys.stderr)
    except (BenchError, LilaError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1

    lila, llamacpp = summarize(runs["lila"]), summarize(runs["llama.cpp"])
    result = {
        "model": str(model), "threads": args.threads, "n_prompt": args.n_prompt, "n_gen": args.n_gen,
        "reps": args.reps, "loras": args.lora, "lila": lila, "llama.cpp": llamacpp,
        "ratio": {key: lila[key] / llamacpp[key] for key in ("pp", "tg")},
    }
    print_table(result)
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
