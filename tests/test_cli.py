"""The `lila` command, run as a user runs it: `python -m lila ...` in a subprocess.

Generation uses the real default model (SmolLM2-135M-Instruct, Q4_1) with few tokens,
so that the whole file stays within seconds of model loads.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

TIMEOUT = 120          # generous: a loaded CI machine; the commands take seconds
# The model's answer is a near-tie between "The capital..." and "L'Étoile..." when asked
# "What is the capital of France?" with 8-bit activations (llama.cpp answers L'Étoile
# too); this wording has a clear winner on every backend.
QUESTION = "Name the capital of France."


def lila(*args: str | Path, input: str | None = None, timeout: float = TIMEOUT
         ) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lila", *map(str, args)], input=input,
                          stdin=subprocess.DEVNULL if input is None else None,
                          capture_output=True, text=True, timeout=timeout)


def lila_all(*commands: tuple) -> list[subprocess.CompletedProcess]:
    """Several independent commands at once (each is mostly start-up)."""
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        return list(pool.map(lambda args: lila(*args), commands))


def assert_one_error_line(r: subprocess.CompletedProcess, *, says: str = "") -> str:
    lines = r.stderr.splitlines()
    assert r.returncode == 2, f"exit {r.returncode}: {r.stderr[-2000:]}"
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr[-2000:]
    assert says in lines[0], lines[0]
    return lines[0]


# --- commands that load no model ---------------------------------------------------------

def test_no_arguments_prints_usage():
    r = lila()
    assert r.returncode == 2
    assert r.stderr.startswith("usage: lila") and "Traceback" not in r.stderr


def test_pull_help():
    r = lila("pull", "--help")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("usage: lila pull") and "hf://" in r.stdout


def test_detect():
    from lila.hardware import choose_backend, detect
    r = lila("detect")
    assert r.returncode == 0, r.stderr
    assert "features:" in r.stdout and "cores:" in r.stdout
    choice = choose_backend(detect())
    assert f"backend: {choice.name} (" in r.stdout
    if choice.kernels:   # the kernel behind each entry of the table, by symbol
        assert f"gemv[Q4_1]         lila_gemv_q4_1_{choice.kernels.replace('-', '')}" in r.stdout
        assert "missing" not in r.stdout


def test_detect_with_a_backend_override():
    r = lila("detect", "--backend", "reference")
    assert r.returncode == 0, r.stderr
    assert "backend: reference (numpy, fp32; chosen by --backend)" in r.stdout


def test_bench_json(smollm2_path):
    import json
    r = lila("bench", smollm2_path, "-p", "16", "-n", "4", "-r", "2", "--threads", "2", "--json")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert result["threads"] == 2 and result["n_prompt"] == 16 and result["n_gen"] == 4
    assert result["pp"] > 0 and result["tg"] > 0 and result["rss_mb"] > 50
    assert result["pp_min"] <= result["pp"] <= result["pp_max"]
    assert result["low_memory"] is False and 0 < result["anonymous_mb"] < result["resident_mb"]
    assert "pp16" in r.stdout and "tg4" in r.stdout    # the table comes first
    assert "MB file-backed), weights in memory; peak" in r.stdout


def test_bench_bad_flags(smollm2_path):
    assert_one_error_line(lila("bench", smollm2_path, "-p", "0"), says="-p must be at least 1")
    assert_one_error_line(lila("bench", smollm2_path, "--threads", "0"), says="threads")


def test_detect_unknown_backend():
    assert_one_error_line(lila("detect", "--backend", "nosuch"), says="nosuch")


# --- lila info ---------------------------------------------------------------------------

def test_info_on_the_default_model(smollm2_path):
    r = lila("info", smollm2_path)
    assert r.returncode == 0, r.stderr
    rows = {}
    for line in r.stdout.splitlines():
        key, _, value = line.partition("  ")
        rows[key.strip()] = value.strip()
    assert rows["architecture"] == "llama"
    assert rows["layers"] == "30"
    assert rows["quantization"].startswith("Q4_1") and "Q8_0" in rows["quantization"]
    assert "49152 tokens" in rows["tokenizer"]
    assert "error" not in r.stderr and "Traceback" not in r.stderr


def test_info_on_what_is_not_a_model(tmp_path):
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    text = tmp_path / "notes.txt"
    text.write_text("these are not the weights you are looking for\n" * 20)
    missing, dir_result, text_result = lila_all(
        ("info", tmp_path / "nowhere.gguf"), ("info", empty_dir), ("info", text))
    assert_one_error_line(missing, says="nowhere.gguf")
    assert_one_error_line(dir_result, says="empty")
    assert_one_error_line(text_result, says="notes.txt")


# --- lila run ----------------------------------------------------------------------------

def test_run_answers(smollm2_path):
    r = lila("run", smollm2_path, QUESTION, "--greedy", "--max-tokens", "16")
    assert r.returncode == 0, r.stderr
    assert "Paris" in r.stdout


def test_run_raw_stops_at_max_tokens(smollm2_path):
    r = lila("run", smollm2_path, "Once upon a time", "--raw", "--greedy", "--max-tokens", "5",
             "-v")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip()
    assert "5 generated" in r.stderr and "finish: length" in r.stderr
    assert "<|im_start|>" not in r.stdout


def test_run_stop_string_cuts_the_answer(smollm2_path):
    # The prompt from standard input ('-'), the answer cut before the stop text.
    r = lila("run", smollm2_path, "-", "--greedy", "--max-tokens", "16", "--stop", "Paris", "-v",
             input=QUESTION)
    assert r.returncode == 0, r.stderr
    assert "capital of France" in r.stdout and "Paris" not in r.stdout
    assert "finish: stop" in r.stderr


def test_run_prompt_longer_than_the_context(smollm2_path):
    r = lila("run", smollm2_path, "tell me about the sea " * 40, "--ctx-size", "32", "--raw")
    assert_one_error_line(r, says="context")
    assert r.stdout == ""


@pytest.mark.parametrize("flags,says", [
    (("--top-p", "5"), "top_p"),
    (("--temp", "-1"), "temperature"),
    (("--max-tokens", "0"), "max_tokens"),
])
def test_run_bad_sampling_values(smollm2_path, flags, says):
    assert_one_error_line(lila("run", smollm2_path, "hi", *flags), says=says)


# --- lila chat ---------------------------------------------------------------------------

def test_chat_with_piped_input(smollm2_path):
    script = "/system You are terse.\nHi\n/reset\nWhat is 2+2?\n/quit\n"
    r = lila("chat", smollm2_path, "--greedy", "--max-tokens", "12", input=script)
    assert r.returncode == 0, r.stderr
    answers = [line for line in r.stdout.splitlines() if line.strip()]
    assert len(answers) == 2, r.stdout
    footers = [line for line in r.stderr.splitlines() if "tok/s" in line]
    assert len(footers) == 2, r.stderr
    assert "system message set" in r.stderr and "conversation cleared" in r.stderr
    assert "Traceback" not in r.stderr


class Reader(threading.Thread):
    """Collects a pipe's bytes as they come."""

    def __init__(self, pipe):
        super().__init__(daemon=True)
        self.pipe, self.chunks = pipe, []

    def run(self) -> None:
        while chunk := self.pipe.read1(4096):
            self.chunks.append(chunk)

    def text(self) -> str:
        return b"".join(self.chunks).decode("utf-8", "replace")


def test_chat_ctrl_c_stops_the_answer_not_the_chat(smollm2_path):
    proc = subprocess.Popen([sys.executable, "-m", "lila", "chat", str(smollm2_path),
                             "--max-tokens", "400", "--greedy"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = Reader(proc.stdout), Reader(proc.stderr)
    out.start()
    err.start()
    try:
        proc.stdin.write(b"Write a long story about a dragon.\n")
        proc.stdin.flush()
        deadline = time.monotonic() + TIMEOUT
        while len(out.text().strip()) < 20:      # the story is being written
            assert proc.poll() is None, err.text()
            assert time.monotonic() < deadline, f"no answer: {err.text()}"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        proc.stdin.write(f"{QUESTION}\n/quit\n".encode())
        proc.stdin.flush()
        assert proc.wait(TIMEOUT) == 0, err.text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out.join(5)
    err.join(5)
    stdout, stderr = out.text(), err.text()
    footers = [line for line in stderr.splitlines() if "tok/s" in line]
    assert len(footers) == 2, stderr
    assert "stopped" in footers[0] and "stopped" not in footers[1], stderr
    story_tokens = int(footers[0].strip("[").split()[0])
    assert story_tokens < 400, footers[0]
    story, answer = stdout.strip().splitlines()[0], stdout.strip().splitlines()[-1]
    assert story.strip() and "Paris" not in story, stdout
    assert "Paris" in answer, stdout
    assert "Traceback" not in stderr
