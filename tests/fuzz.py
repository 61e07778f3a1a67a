"""Fuzz what Lila reads from strangers, GGUF files and chat templates, for a set time.

    python tests/fuzz.py --seconds 600              # both kinds, half the time each (make fuzz)
    python tests/fuzz.py --kind template --seed 77  # start at seed 77
    python tests/fuzz.py --kind gguf --replay 1234  # one case, in this process, traceback shown

A case is (kind, seed): fuzz_cases.py builds its input from the seed alone, so the seed
printed with a failure replays it. A case may also be a saved input (a GGUF file, or a
JSON file {"source": ..., "messages": [...]} for a template): test_fuzz.py runs the
minimized inputs of past findings that way. Cases run in worker processes, a batch each,
so that a crash (a signal in native code) or a hang costs only the worker, and the case
it was on is reported. Template workers run under an address-space limit: a template
that asks for unbounded memory gets a MemoryError there, not the whole machine.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import resource
import select
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
KINDS = ("gguf", "template")
BATCH = 200                  # seeds per worker process
CASE_TIMEOUT = 60.0          # a hang guard, far beyond a bounded template's time limit
TEMPLATE_MEMORY = 1 << 30    # address space a template case may add to its worker


Case = int | str      # a seed, or the path of a saved input


@dataclass
class Finding:
    kind: str
    case: Case
    problem: str          # "ValueError: ...", "crash: signal 11", "hang: ..."
    description: str      # what the case did to its input
    where: str = ""       # the innermost frame in lila/, for a Python exception

    def __str__(self) -> str:
        at = f" at {self.where}" if self.where else ""
        return (f"{self.kind} {_named(self.case)}: {self.problem}{at}\n    case: {self.description}\n"
                f"    replay: python tests/fuzz.py --kind {self.kind} --replay {self.case}")


def _named(case: Case) -> str:
    return f"seed {case}" if isinstance(case, int) else case


@dataclass
class Result:
    kind: str
    cases: int = 0
    findings: list[Finding] = field(default_factory=list)

    def report(self) -> str:
        """The failures grouped by kind of problem and place, the first seed of each shown."""
        groups: dict[tuple[str, str], list[Finding]] = {}
        for f in self.findings:
            groups.setdefault((f.problem.split(":")[0], f.where), []).append(f)
        lines = [f"{self.kind}: {self.cases} cases, {len(self.findings)} failed"]
        for found in groups.values():
            lines.append(f"{len(found)} x {found[0]}")
        return "\n".join(lines)


# --- one case, in a worker -------------------------------------------------------------

def prepare(kind: str, case: Case, scratch: Path):
    """(description, a function that runs the case) for a seed or a saved input. Kind
    "python" runs the case as code: test_fuzz.py checks the harness with it."""
    import fuzz_cases
    if kind == "python":
        return case, lambda: exec(case, {})
    if kind == "gguf":
        if isinstance(case, int):
            description, data = fuzz_cases.gguf_case(case)
            path = scratch / f"gguf-{case}.gguf"
            path.write_bytes(data)
        else:
            description, path = case, Path(case)
        return description, lambda: fuzz_cases.check_gguf(path)
    if isinstance(case, int):
        description, source, messages = fuzz_cases.template_case(case)
    else:
        saved = json.loads(Path(case).read_text())
        description, source, messages = case, saved["source"], saved["messages"]
    return description, lambda: fuzz_cases.check_template(source, messages)


def run_case(kind: str, case: Case, scratch: Path) -> tuple[str, dict]:
    """("ok" | "bad", details) for one case; any output of Lila's is silenced."""
    import fuzz_cases
    description, run = prepare(kind, case, scratch)
    try:
        with open(os.devnull, "w") as null, contextlib.redirect_stdout(null), \
                contextlib.redirect_stderr(null):
            run()
    except BaseException as e:  # noqa: BLE001 - any other kind is the finding
        if isinstance(e, KeyboardInterrupt):
            raise
        problem = fuzz_cases.problem(e)
        if problem is not None:
            return "bad", {"problem": problem, "description": description, "where": _where(e)}
    return "ok", {}


def _where(error: BaseException) -> str:
    """The innermost frame of the error's traceback in Lila's package: "lila/api.py:12 in f"."""
    import lila
    package = Path(lila.__file__).parent
    for f in reversed(traceback.extract_tb(error.__traceback__)):
        if Path(f.filename).is_relative_to(package):
            return f"{Path(f.filename).relative_to(package.parent)}:{f.lineno} in {f.name}"
    return ""


def worker(kind: str, cases: list[Case]) -> None:
    """Run the cases, writing one JSON line to stdout before each and one after it."""
    _limit_memory(kind)
    # The protocol keeps the real stdout; anything else written to fd 1 (by native code
    # too) goes to /dev/null, where it cannot break a line of it.
    out = os.fdopen(os.dup(1), "w", buffering=1)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.close(null)
    with tempfile.TemporaryDirectory(prefix="lila-fuzz-") as scratch:
        for i, case in enumerate(cases):
            out.write(json.dumps({"start": i}) + "\n")
            status, details = run_case(kind, case, Path(scratch))
            out.write(json.dumps({"done": i, "status": status, **details}) + "\n")


def _limit_memory(kind: str) -> None:
    """Under the address-space limit, for a template case (Linux)."""
    if kind == "template" and hasattr(resource, "RLIMIT_AS"):
        import fuzz_cases
        fuzz_cases.template_case(0)       # the imports and the corpus, before the limit
        limit = _address_space() + TEMPLATE_MEMORY
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _address_space() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


# --- many cases, from the parent --------------------------------------------------------

class _Worker:
    """A worker process and where it is in its cases; it writes {"start": i} before case
    i and {"done": i, "status": ...} after it."""

    def __init__(self, kind: str, cases: list[Case]):
        self.cases = cases
        self.stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "fuzz.py"), "--worker", kind, json.dumps(cases)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self.stderr)
        self.buffer = b""
        self.finished = 0        # cases done; cases[finished] is the next, or the one running
        self.running = False
        self.since = time.monotonic()

    @property
    def current(self) -> Case:
        return self.cases[self.finished]

    def lines(self) -> list[dict] | None:
        """The lines written since last time; None when the process has closed stdout."""
        chunk = os.read(self.proc.stdout.fileno(), 1 << 16)
        if not chunk:
            return None
        self.buffer += chunk
        *complete, self.buffer = self.buffer.split(b"\n")
        return [json.loads(line) for line in complete]

    def rest(self) -> list[Case]:
        """The cases it has not started (past the one it was on, if it died in one)."""
        return self.cases[self.finished + self.running:]

    def stderr_tail(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read().decode("utf-8", "replace")[-1500:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.proc.stdout.close()
        self.stderr.close()


def fuzz(kind: str, *, first_seed: int = 0, min_cases: int = 0, seconds: float = 0.0,
         workers: int = 1, case_timeout: float = CASE_TIMEOUT, max_findings: int | None = None,
         cases: list[Case] | None = None, progress=None) -> Result:
    """Run cases of kind from first_seed on until both `seconds` have passed and `min_cases`
    are done (or exactly `cases`, if given), in `workers` processes at once. Stops early
    after max_findings failures. The time only decides how many cases run, never whether
    one passes."""
    return _Fuzz(kind, first_seed, min_cases, seconds, cases, case_timeout, progress).run(
        workers, max_findings)


class _Fuzz:
    def __init__(self, kind, first_seed, min_cases, seconds, cases, case_timeout, progress):
        self.kind, self.min_cases, self.case_timeout, self.progress = kind, min_cases, case_timeout, progress
        self.deadline = time.monotonic() + seconds
        self.queue = list(cases) if cases is not None else None
        self.next_seed = first_seed
        self.result = Result(kind)
        self.running: list[_Worker] = []
        self.scratch = tempfile.TemporaryDirectory(prefix="lila-fuzz-")

    def run(self, workers: int, max_findings: int | None) -> Result:
        try:
            while True:
                while len(self.running) < workers and (batch := self.more()):
                    self.running.append(_Worker(self.kind, batch))
                if not self.running or self.enough() or (
                        max_findings is not None and len(self.result.findings) >= max_findings):
                    return self.result      # cases still running are not counted
                ready, _, _ = select.select([w.proc.stdout for w in self.running], [], [], 0.5)
                for w in [w for w in self.running if w.proc.stdout in ready]:
                    self.read(w)
                for w in [w for w in self.running if w.running]:
                    if time.monotonic() - w.since > self.case_timeout:
                        self.found(w, f"hang: no result in {self.case_timeout:.0f} s")
                        self.replace(w)
        finally:
            for w in self.running:
                w.stop()
            self.scratch.cleanup()

    def enough(self) -> bool:
        return (self.queue is None and self.result.cases >= self.min_cases
                and time.monotonic() >= self.deadline)

    def more(self) -> list[Case]:
        if self.queue is not None:
            batch, self.queue = self.queue[:BATCH], self.queue[BATCH:]
            return batch
        if self.enough():
            return []
        self.next_seed += BATCH
        return list(range(self.next_seed - BATCH, self.next_seed))

    def read(self, w: _Worker) -> None:
        lines = w.lines()
        if lines is None:                       # the worker ended: all done, or it died
            code = w.proc.wait()
            if w.running:
                how = f"signal {-code}" if code < 0 else f"exit {code}"
                self.found(w, f"crash: {how}; stderr: {w.stderr_tail()!r}")
            self.replace(w)
            return
        for line in lines:
            if "start" in line:
                w.running, w.since = True, time.monotonic()
            else:
                if line["status"] == "bad":
                    self.found(w, line["problem"], description=line["description"],
                               where=line["where"])
                else:
                    self.result.cases += 1
                w.finished += 1
                w.running = False

    def found(self, w: _Worker, problem: str, **details) -> None:
        """A failure of the case w is on (counted as a case)."""
        if "description" not in details:      # the worker died in it: rebuild it here
            details["description"] = prepare(self.kind, w.current, Path(self.scratch.name))[0]
        self.result.findings.append(Finding(self.kind, w.current, problem, **details))
        self.result.cases += 1
        if self.progress:
            print(self.result.findings[-1], file=self.progress, flush=True)

    def replace(self, w: _Worker) -> None:
        """Stop a worker that ended or hung; a new one takes the cases it had not started."""
        rest = w.rest()
        w.stop()
        self.running.remove(w)
        if rest:
            self.running.append(_Worker(self.kind, rest))


# --- the command ------------------------------------------------------------------------

def replay(kind: str, case: Case, save: Path | None) -> int:
    """Run one case here, so that a debugger or the traceback can show what happens. save:
    where to write its input (a GGUF file; for a template the JSON that --replay reads)."""
    import fuzz_cases
    description, run = prepare(kind, case, Path(tempfile.mkdtemp(prefix="lila-fuzz-")))
    print(f"{kind} {_named(case)}: {description}", file=sys.stderr)
    _limit_memory(kind)
    if save and isinstance(case, int) and kind == "gguf":
        save.write_bytes(fuzz_cases.gguf_case(case)[1])
    elif save and isinstance(case, int):
        _, source, messages = fuzz_cases.template_case(case)
        save.write_text(json.dumps({"source": source, "messages": messages}, indent=1))
    try:
        run()
    except Exception as e:   # noqa: BLE001 - shown whole, then judged
        traceback.print_exc()
        problem = fuzz_cases.problem(e)
        print(f"\n{'FAIL: ' + problem if problem else 'ok: a proper error: ' + str(e)}", file=sys.stderr)
        return 1 if problem else 0
    print("ok: no error", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kind", choices=KINDS, action="append", help="default: both")
    parser.add_argument("--seconds", type=float, default=300.0, help="in all (default 300)")
    parser.add_argument("--seed", type=int, default=None, help="first seed (default: random)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--replay", metavar="SEED|FILE", help="run this one case here")
    parser.add_argument("--save", type=Path, help="with --replay: write the case's input here")
    parser.add_argument("--worker", nargs=2, metavar=("KIND", "CASES"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl-C is for the parent
        worker(args.worker[0], json.loads(args.worker[1]))
        return 0
    kinds = args.kind or list(KINDS)
    if args.replay is not None:
        case = int(args.replay) if args.replay.lstrip("-").isdigit() else args.replay
        return replay(kinds[0], case, args.save)
    first = args.seed if args.seed is not None else random.randrange(10**9)
    failed = 0
    for kind in kinds:
        print(f"{kind}: seeds from {first}, {args.seconds / len(kinds):.0f} s, "
              f"{args.workers} workers", file=sys.stderr, flush=True)
        result = fuzz(kind, first_seed=first, seconds=args.seconds / len(kinds),
                      workers=args.workers, progress=sys.stderr)
        print(result.report(), file=sys.stderr)
        failed += len(result.findings)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
