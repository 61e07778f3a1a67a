"""The fuzzers of tests/fuzz.py, time-boxed for the suite, and what they have found.

Each fuzzer runs its cases from seed 0 on for SECONDS, and at least MIN_CASES of them
whatever the machine's speed: the time decides how many cases run, never whether one
passes. `make fuzz` runs the same cases from a random seed for as long as asked.

Every finding is kept below as its minimized input, run through the same workers (a
crash or a hang is caught there too), with the seed that found it: `python tests/fuzz.py
--kind KIND --replay SEED` shows it again.
"""
from __future__ import annotations

import json

import pytest

from fuzz import KINDS, fuzz
from gguf_mutations import layout, put_bytes
from test_bad_models import VOCAB, VT, spec as tiny_llama

SECONDS = 15                                   # each; about 30 s for the two
MIN_CASES = {"gguf": 500, "template": 200}     # a few seconds on 2 busy cores
WORKERS = 2


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_fuzz(kind):
    result = fuzz(kind, first_seed=0, min_cases=MIN_CASES[kind], seconds=SECONDS,
                  workers=WORKERS, max_findings=20)
    assert not result.findings, result.report()
    assert result.cases >= MIN_CASES[kind]


# --- the harness catches what it is there to catch ---------------------------------------

def test_the_harness_reports_crashes_hangs_and_bad_errors():
    cases = [
        "pass",
        "from lila.errors import LilaError\nraise LilaError('one clean line')",
        "import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)",
        "while True: pass",
        "raise ValueError('not a LilaError')",
        "from lila.errors import LilaError\nraise LilaError('two\\nlines')",
        "from lila.errors import LilaError\nraise LilaError('\\x1b[31mred')",
        "from lila.errors import LilaError\ntry:\n    bytearray(1 << 62)\n"
        "except MemoryError:\n    raise LilaError('out of memory') from None",
        "pass",      # after a crash and a hang, the rest of the batch still runs
    ]
    # The loop never ends: the hang guard fires at any speed.
    result = fuzz("python", cases=cases, case_timeout=3)
    problems = {f.case: f.problem for f in result.findings}
    assert result.cases == len(cases), result.report()
    assert set(problems) == set(cases[2:8]), result.report()
    assert problems[cases[2]].startswith("crash: signal 11")
    assert problems[cases[3]] == "hang: no result in 3 s"
    assert problems[cases[4]] == "ValueError: not a LilaError"
    assert problems[cases[5]].startswith("LilaError message is not one clean line: 'two\\nlines'")
    assert problems[cases[6]].startswith("LilaError message is not one clean line:")
    assert problems[cases[7]] == "MemoryError under a LilaError: out of memory"


# --- findings, minimized -------------------------------------------------------------------

def _tiny_llama_file(path, change) -> str:
    spec = tiny_llama()
    change(spec)
    return str(spec.write(path))


def _nul_in_a_tensor_name(path) -> str:
    """Two NUL bytes over the start of a tensor's name (gguf seed 1557): the name reached
    an error message raw."""
    _tiny_llama_file(path, lambda spec: None)
    data = path.read_bytes()
    at = layout(data).tensors["blk.1.ffn_up.weight"].name_at
    path.write_bytes(put_bytes(data, at, b"\0\0"))
    return str(path)


def _meta(key, value, vtype):
    return lambda spec: spec.meta.__setitem__(key, (value, vtype))


GGUF_FOUND = {
    # Fixed in lila/formats/gguf.py: a key or tensor name with control characters is damage.
    "NUL bytes in a tensor name": _nul_in_a_tensor_name,
    # Fixed in lila/cli/info.py (gguf seed 10315): `lila info` printed general.name raw,
    # so a name could color the terminal and forge an "error:" line.
    "terminal escapes in general.name": lambda path: _tiny_llama_file(
        path, _meta("general.name", "\x1b[31mred\nerror: forged", VT.STRING)),
    # Fixed in lila/tokenizer/vocab.py (gguf seed 22516): OverflowError from int(inf).
    "token types that are floats": lambda path: _tiny_llama_file(
        path, _meta("tokenizer.ggml.token_type", [float("inf")] * VOCAB, VT.ARRAY)),
    # Issue 10's case, fixed in lila/tokenizer/vocab.py: a TypeError from int() of an array.
    "a BOS id stored as an array": lambda path: _tiny_llama_file(
        path, _meta("tokenizer.ggml.bos_token_id", [1, 2], VT.ARRAY)),
    # Open, in lila/chat_template.py (gguf seed 1078): `if not default` on a numpy array
    # raises ValueError.
    "a chat template that is an array of numbers": lambda path: _tiny_llama_file(
        path, _meta("tokenizer.chat_template", [1, 2], VT.ARRAY)),
}

HELLO = [{"role": "user", "content": "Hi"}]
# All open, in lila/chat_template.py, which is gaining time and output limits.
TEMPLATE_FOUND = {
    # template seed 59: RecursionError from jinja2's parser, at load.
    "5000 nested parentheses": "{{ " + "(" * 5000 + "1" + ")" * 5000 + " }}",
    # template seed 250: the message reached the terminal with its escapes and newline.
    "raise_exception with terminal escapes": "{{ raise_exception('\\x1b[31mboom\\nerror: forged') }}",
    # template seeds 1030 and 469: jinja2 folds constants when it compiles (at load): a
    # MemoryError under the workers' limit, gigabytes and seconds without one.
    "a huge centered string, folded at load": "{{ 'x' | center(1000000000) }}",
    "a huge formatted number, folded at load": "{{ '%02147483648d' % 1 }}",
    # template seed 135: no time limit, it runs for hours.
    "lipsum of a billion paragraphs": "{{ lipsum(1000000000) }}",
}


@pytest.fixture(scope="module")
def found_results(tmp_path_factory) -> dict[str, dict[str, str | None]]:
    """{kind: {finding: its problem now, or None}}, each kind's cases in one worker."""
    d = tmp_path_factory.mktemp("fuzz_found")
    inputs = {"gguf": {name: make(d / f"gguf{i}.gguf")
                       for i, (name, make) in enumerate(GGUF_FOUND.items())},
              "template": {}}
    for i, (name, source) in enumerate(TEMPLATE_FOUND.items()):
        path = d / f"template{i}.json"
        path.write_text(json.dumps({"source": source, "messages": HELLO}))
        inputs["template"][name] = str(path)
    out = {}
    for kind, cases in inputs.items():
        result = fuzz(kind, cases=list(cases.values()))
        assert result.cases == len(cases), result.report()
        problems = {f.case: f.problem for f in result.findings}
        out[kind] = {name: problems.get(path) for name, path in cases.items()}
    return out


@pytest.mark.parametrize("name", GGUF_FOUND)
def test_gguf_finding(found_results, name):
    assert found_results["gguf"][name] is None, found_results["gguf"][name]


@pytest.mark.parametrize("name", TEMPLATE_FOUND)
def test_template_finding(found_results, name):
    assert found_results["template"][name] is None, found_results["template"][name]

