"""Hostile and damaged GGUF files: every one ends in a one-line LilaError or a clean parse."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
import tracemalloc
from pathlib import Path

import pytest

from gguf_mutations import (
    base_file_bytes, deep_nesting_file, layout, may_parse, must_fail, truncations, unsupported_type_file,
)
from lila.errors import LilaError, ModelFormatError, UnsupportedError
from lila.formats.gguf import GGUFFile

BASE = base_file_bytes()
MUST_FAIL = must_fail(BASE)
MAY_PARSE = may_parse(BASE)
CASE_SECONDS = 10.0   # a guard against hangs, not a speed test


def open_bytes(tmp_path: Path, data: bytes) -> None:
    """Open `data` as a GGUF file and touch every tensor; raises what the reader raises."""
    path = tmp_path / "case.gguf"
    path.write_bytes(data)
    with GGUFFile.open(path) as f:
        unsupported = {name for name, _ in f.unsupported_tensors()}
        for name in f.tensors:
            f.tensor_bytes(name) if name in unsupported else f.tensor(name)


def check_error(exc: BaseException, description: str) -> None:
    assert isinstance(exc, LilaError), f"{description}: leaked {type(exc).__name__}: {exc}"
    msg = str(exc)
    assert msg and "\n" not in msg, f"{description}: message is not one line: {msg!r}"


def expect_error(tmp_path: Path, data: bytes, description: str) -> LilaError:
    start = time.perf_counter()
    try:
        open_bytes(tmp_path, data)
    except Exception as exc:  # noqa: BLE001 - any other type is exactly the bug we look for
        check_error(exc, description)
        assert time.perf_counter() - start < CASE_SECONDS, f"{description}: too slow"
        return exc  # type: ignore[return-value]
    pytest.fail(f"{description}: accepted")


def test_base_file_is_valid(tmp_path):
    open_bytes(tmp_path, BASE)


@pytest.mark.parametrize("description,data", MUST_FAIL, ids=[d for d, _ in MUST_FAIL])
def test_must_fail(tmp_path, description, data):
    expect_error(tmp_path, data, description)


def test_truncation_everywhere(tmp_path):
    end = layout(BASE).tensors_end
    for n, prefix in truncations(BASE):
        if n >= end:  # only trailing padding was lost: still a complete file
            open_bytes(tmp_path, prefix)
        else:
            exc = expect_error(tmp_path, prefix, f"truncated to {n} bytes")
            assert isinstance(exc, ModelFormatError)


def test_truncation_messages_say_so(tmp_path):
    lay = layout(BASE)
    exc = expect_error(tmp_path, BASE[: lay.infos_end - 3], "cut in the tensor infos")
    assert "truncated" in str(exc) and "case.gguf" in str(exc)
    exc = expect_error(tmp_path, BASE[: lay.tensors_end - 1], "cut in the last tensor")
    assert "'tens.q4k' extends past the end of the file (truncated download?)" in str(exc)


@pytest.mark.parametrize("description,data", MAY_PARSE, ids=[d for d, _ in MAY_PARSE])
def test_damage_is_reported_or_harmless(tmp_path, description, data):
    start = time.perf_counter()
    try:
        open_bytes(tmp_path, data)
    except Exception as exc:  # noqa: BLE001
        check_error(exc, description)
    assert time.perf_counter() - start < CASE_SECONDS


@pytest.mark.parametrize("description,error_type,words", [
    ("wrong magic", ModelFormatError, ["not a GGUF file"]),
    ("legacy ggjt magic", UnsupportedError, ["ggjt"]),
    ("version 1", UnsupportedError, ["GGUF version 1 ", "versions 2 and 3"]),
    ("version 4", UnsupportedError, ["GGUF version 4 "]),
    ("big-endian version", UnsupportedError, ["big-endian"]),
    (f"tensor count {2**64 - 1}", ModelFormatError, [str(2**64 - 1), "tensors"]),
    (f"key length {2**16}", ModelFormatError, ["limit 65535"]),
    (f"string array length {2**63}", ModelFormatError, ["tokenizer.ggml.tokens", "truncated"]),
    ("unknown value type 13", ModelFormatError, ["test.u32a", "unknown value type 13"]),
    ("bool byte 2", ModelFormatError, ["test.flag"]),
    ("duplicate key", ModelFormatError, ["duplicate metadata key 'test.u32a'"]),
    ("alignment 48", ModelFormatError, ["general.alignment", "power of two"]),
    ("n_dims 5", ModelFormatError, ["'tens.f32' has 5 dimensions"]),
    ("dim1 0", ModelFormatError, ["'tens.f32' has a zero dimension"]),
    ("dims product wraps 2**64", ModelFormatError, ["'tens.f32'", "more than the whole file"]),
    ("unknown ggml type 42", UnsupportedError, ["'tens.f32'", "unknown ggml type id 42"]),
    ("offset misaligned by 16", ModelFormatError, ["'tens.f16'", "not aligned to 32"]),
    ("overlapping tensors", ModelFormatError, ["'tens.f32' and 'tens.f16' overlap"]),
    ("duplicate tensor name", ModelFormatError, ["duplicate tensor name 'tens.f32'"]),
    ("invalid UTF-8 in string array", ModelFormatError, ["tokenizer.ggml.tokens'[1] is not valid UTF-8"]),
    ("invalid UTF-8 in tensor name", ModelFormatError, ["name of tensor 0 is not valid UTF-8"]),
    ("row not a multiple of the block", ModelFormatError, ["'tens.q80'", "Q8_0 block size 32"]),
])
def test_messages_name_the_problem(tmp_path, description, error_type, words):
    data = dict(MUST_FAIL)[description]
    exc = expect_error(tmp_path, data, description)
    assert type(exc) is error_type, f"{description}: {type(exc).__name__}: {exc}"
    for w in words:
        assert w in str(exc), f"{description}: {w!r} not in {str(exc)!r}"


def test_nesting_depth_is_bounded(tmp_path):
    open_bytes(tmp_path, deep_nesting_file(3))
    exc = expect_error(tmp_path, deep_nesting_file(4), "arrays nested 4 deep")
    assert "nests arrays deeper than 3" in str(exc)


def test_unsupported_types_are_listed_then_refused(tmp_path):
    path = tmp_path / "unsupported.gguf"
    path.write_bytes(unsupported_type_file())
    with GGUFFile.open(path) as f:
        assert f.unsupported_tensors() == [("tens.iq2", "IQ2_XXS"), ("tens.tq1", "TQ1_0")]
        assert f.tensor_bytes("tens.iq2").nbytes == f.tensors["tens.iq2"].nbytes
        f.tensor("tens.q4k")
        with pytest.raises(UnsupportedError) as info:
            f.tensor("tens.iq2")
    msg = str(info.value)
    assert "tensor 'tens.iq2' has type IQ2_XXS, which Lila does not support (supported: F32, F16, Q4_0" in msg
    assert "\n" not in msg


def test_claimed_sizes_are_refused_before_allocating(tmp_path):
    """Huge counts and lengths must be checked against the file, not allocated."""
    nasty = [(d, b) for d, b in MUST_FAIL if any(str(n) in d for n in (2**40, 2**62, 2**63, 2**64 - 1, 10**9))]
    assert len(nasty) > 30
    tracemalloc.start()
    try:
        for description, data in nasty:
            tracemalloc.reset_peak()
            expect_error(tmp_path, data, description)
            peak = tracemalloc.get_traced_memory()[1]
            assert peak < 4 << 20, f"{description}: peak allocation {peak} bytes"
    finally:
        tracemalloc.stop()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS semantics are Linux's")
def test_nasty_cases_under_an_address_space_limit(tmp_path):
    nasty = [(d, b) for d, b in MUST_FAIL if "length" in d or "count" in d or "dim" in d]
    for i, (_, data) in enumerate(nasty):
        (tmp_path / f"{i}.gguf").write_bytes(data)
    script = textwrap.dedent(f"""
        import resource, sys
        from lila.errors import LilaError
        from lila.formats.gguf import GGUFFile
        with open("/proc/self/statm") as f:
            used = int(f.read().split()[0]) * resource.getpagesize()
        resource.setrlimit(resource.RLIMIT_AS, (used + (256 << 20),) * 2)
        for i in range({len(nasty)}):
            try:
                GGUFFile.open(r"{tmp_path}/%d.gguf" % i).close()
            except LilaError:
                continue
            sys.exit("accepted case %d" % i)
        print("ok")
    """)
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
