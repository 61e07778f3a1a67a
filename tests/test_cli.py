"""The `lila` command, run as a user runs it: `python -m lila ...` in a subprocess.

Generation uses the real default model (SmolLM2-135M-Instruct, Q4_1) with few tokens,
so that the whole file stays within seconds of model loads.
"""
from __future__ import annotations

import fcntl
import os
import re
import select
import shutil
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


def lila(*args: str | Path, input: str | None = None, timeout: float = TIMEOUT,
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lila", *map(str, args)], input=input,
                          stdin=subprocess.DEVNULL if input is None else None,
                          capture_output=True, text=True, timeout=timeout,
                          env=None if env is None else {**os.environ, **env})


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


def test_model_names_that_are_not_paths(tmp_path):
    # Each was a traceback: OSError (ENAMETOOLONG) from Path.exists(), RuntimeError from
    # Path.expanduser().
    assert_one_error_line(lila("info", tmp_path / ("a" * 300 + ".gguf")),
                          says="File name too long")
    assert_one_error_line(lila("run", "some-model", "hi",
                               env={"LILA_HOME": "~lila-test-no-such-user/x"}),
                          says="cannot expand ~lila-test-no-such-user in LILA_HOME=")


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


def test_run_ignore_eos_writes_on_past_the_answer(smollm2_path):
    plain, past = lila_all(
        ("run", smollm2_path, QUESTION, "--greedy", "--max-tokens", "24", "-v"),
        ("run", smollm2_path, QUESTION, "--greedy", "--max-tokens", "24", "-v", "--ignore-eos"))
    assert plain.returncode == past.returncode == 0, plain.stderr + past.stderr
    assert "Paris" in plain.stdout and "finish: stop" in plain.stderr
    assert "24 generated" in past.stderr and "finish: length" in past.stderr
    assert past.stdout.startswith(plain.stdout.rstrip("\n")) and len(past.stdout) > len(plain.stdout)


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


def test_run_prompt_bytes_that_are_not_utf8(smollm2_path):
    # From stdin this was a UnicodeDecodeError traceback; as an argument (which Python
    # decodes with surrogateescape) the tokenizer refused the lone surrogate.
    piped = subprocess.run([sys.executable, "-m", "lila", "run", str(smollm2_path), "-",
                            "--max-tokens", "3"], input=b"caf\xe9, please", capture_output=True,
                           timeout=TIMEOUT, env={**os.environ, **STRICT_STDIN})
    argument = lila("run", smollm2_path, os.fsdecode(b"caf\xe9, please"), "--max-tokens", "3",
                    "--system", os.fsdecode(b"\xff"))
    for r in (piped, argument):
        stderr = r.stderr if isinstance(r.stderr, str) else r.stderr.decode()
        assert r.returncode == 0, stderr
        assert "(the prompt holds bytes that are not utf-8: each became \ufffd)" in stderr
    assert "(--system holds bytes that are not utf-8" in argument.stderr


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


def interruptible() -> None:
    """In a chat child: SIGINT as at a terminal. A suite started in the background
    (`make test &`) ignores it, a child inherits that, and Python then never raises
    KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


STORY = "Write a long story about a dragon."


class Stdout:
    """A pipe for a child's stdout that the test reads only when it chooses to. Where the
    system allows (Linux) it holds one page: a child that writes more while the test is
    not reading blocks in write()."""

    PAGE = 4096

    def __init__(self) -> None:
        self.fd, self.child_fd = os.pipe()
        if hasattr(fcntl, "F_SETPIPE_SZ"):
            fcntl.fcntl(self.child_fd, fcntl.F_SETPIPE_SZ, self.PAGE)
        self.data = bytearray()

    def read_until(self, done, err: Reader) -> None:
        """Read until done(data) is true (done None: until the child closes its end)."""
        deadline = time.monotonic() + TIMEOUT   # a hang guard, far beyond any pass
        while done is None or not done(self.data):
            ready, _, _ = select.select([self.fd], [], [], max(0.0, deadline - time.monotonic()))
            assert ready, f"no output for {TIMEOUT} s: {err.text()}"
            chunk = os.read(self.fd, 1 << 16)
            if not chunk:
                assert done is None, f"stdout closed early: {err.text()}"
                return
            self.data += chunk

    def drain(self) -> None:
        """Read what the pipe holds now, without waiting for more."""
        os.set_blocking(self.fd, False)
        try:
            while chunk := os.read(self.fd, 1 << 16):
                self.data += chunk
        except BlockingIOError:
            pass
        finally:
            os.set_blocking(self.fd, True)


def test_chat_ctrl_c_stops_the_answer_not_the_chat(smollm2_path):
    """Ctrl-C ends the answer being written, at the latest with the token in flight, and
    the chat goes on.

    Nothing here races the clock. With --ignore-eos the story can only end when the
    context is full, thousands of tokens, far more text than the pipe holds (one page, on
    Linux); and once the story has begun the test stops reading. So the chat blocks on the
    full pipe before the story can end: the answer is still running whenever the signal
    lands, at any speed. To count what comes after the signal, the chat is frozen
    (SIGSTOP) before it is sent: all it has written is then in the pipe, and the model's
    greedy pieces, generated here again, tell which token was in flight."""
    out = Stdout()
    proc = subprocess.Popen([sys.executable, "-m", "lila", "chat", str(smollm2_path), "--greedy",
                             "--ignore-eos", "--max-tokens", "100000"],
                            stdin=subprocess.PIPE, stdout=out.child_fd, stderr=subprocess.PIPE,
                            preexec_fn=interruptible)
    os.close(out.child_fd)
    err = Reader(proc.stderr)
    err.start()

    def say(line: str) -> None:
        proc.stdin.write(f"{line}\n".encode())
        proc.stdin.flush()

    try:
        say(STORY)
        out.read_until(lambda data: len(data.strip()) >= 20, err)
        proc.send_signal(signal.SIGSTOP)
        _, status = os.waitpid(proc.pid, os.WUNTRACED)
        assert os.WIFSTOPPED(status), f"the chat ended (status {status}): {err.text()}"
        out.drain()
        at_signal = bytes(out.data)
        proc.send_signal(signal.SIGINT)
        proc.send_signal(signal.SIGCONT)
        say(QUESTION)
        out.read_until(lambda data: b"Paris" in data[len(at_signal):], err)
        # The second answer cannot end either (--ignore-eos) until it is stopped.
        proc.send_signal(signal.SIGINT)
        say("/quit")
        out.read_until(None, err)
        assert proc.wait(TIMEOUT) == 0, err.text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(out.fd)
    err.join(5)
    stderr, stdout = err.text(), bytes(out.data)
    assert "Traceback" not in stderr
    footers = [line for line in stderr.splitlines() if "tok/s" in line]
    assert len(footers) == 2 and all("stopped" in f for f in footers), stderr
    counts = [(int(f.strip("[").split()[0]), float(f.split()[2])) for f in footers]
    assert all(tokens < 2 or speed > 0 for tokens, speed in counts), footers
    story_tokens = counts[0][0]

    from lila import api
    with api.load(smollm2_path) as model:
        completion = model.chat([{"role": "user", "content": STORY}], greedy=True,
                                ignore_eos=True, max_tokens=story_tokens + 2)
        pieces = [(piece.encode(), len(completion.tokens)) for piece in completion]
    # Each piece is one write of at most PIPE_BUF bytes, which a pipe never splits.
    written, k = b"", 0
    while k < len(pieces) and len(written) + len(pieces[k][0]) <= len(at_signal):
        written += pieces[k][0]
        k += 1
    assert written == at_signal, "the chat's story is not the model's greedy answer"
    assert 0 < k < len(pieces), (k, len(pieces))
    (_, tokens_written), (in_flight, tokens_in_flight) = pieces[k - 1], pieces[k]
    assert tokens_written <= story_tokens <= tokens_in_flight, \
        (f"{story_tokens} tokens generated; {tokens_written} were written when Ctrl-C came, "
         f"and the one in flight was token {tokens_in_flight}")
    rest = stdout[len(at_signal):]
    after = next((len(p) + 1 for p in (b"", in_flight) if rest.startswith(p + b"\n")), None)
    assert after is not None, f"more story after Ctrl-C than the piece in flight: {rest[:200]}"
    assert b"Paris" in rest[after:], stdout


# --- a chat never drops its conversation ------------------------------------------------

# As in a UTF-8 locale (under C.UTF-8 Python reads stdin with surrogateescape instead).
STRICT_STDIN = {"PYTHONIOENCODING": "utf-8:strict"}
NAME = "My name is Zoltan."
ASK_NAME = "What is my name?"   # asked alone, the model answers "Alec"


def footers(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "tok/s" in line]


def prompt_tokens(footer: str) -> int:
    return int(re.search(r"prompt (\d+) tokens", footer).group(1))


def test_chat_survives_an_overflowing_turn_and_bytes_that_are_not_utf8(smollm2, smollm2_path):
    # Both used to end the chat (exit 2): the overflow with a ContextOverflowError, the
    # bytes with a UnicodeDecodeError, or a surrogate refused by the tokenizer.
    script = (f"{NAME}\n".encode() + b"tell me about the sea " * 60 + b"\n"
              + b"caf\xe9 \xff\n" + f"{ASK_NAME}\n/quit\n".encode())
    r = subprocess.run([sys.executable, "-m", "lila", "chat", str(smollm2_path), "--greedy",
                        "--max-tokens", "24", "--ctx-size", "256"], input=script,
                       capture_output=True, timeout=TIMEOUT, env={**os.environ, **STRICT_STDIN})
    stderr, stdout = r.stderr.decode(), r.stdout.decode()
    assert r.returncode == 0 and "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and re.fullmatch(
        r"error: prompt is \d+ tokens but the context holds 256; /reset starts a new "
        r"conversation, or send a shorter message", errors[0]), stderr
    assert "(the line holds bytes that are not utf-8: each became \ufffd)" in stderr
    # Three answers, one line each (24 greedy tokens of this model hold no newline).
    answers = stdout.splitlines()
    assert len(answers) == 3 and len(footers(stderr)) == 3, (stdout, stderr)
    assert "Zoltan" in answers[2]
    # The last prompt is exactly the conversation without the failed turn, and with the
    # undecodable bytes replaced.
    kept = [("user", NAME), ("assistant", answers[0]), ("user", "caf\ufffd \ufffd"),
            ("assistant", answers[1]), ("user", ASK_NAME)]
    prompt = smollm2.template.render([{"role": r, "content": c} for r, c in kept])
    assert prompt_tokens(footers(stderr)[2]) == len(smollm2.tokenize(prompt, special=True,
                                                                       add_bos=False))


class ChatProcess:
    """`lila chat` driven one line at a time: say() writes a line; pump() reads stdout until
    a condition holds (a hang guard of TIMEOUT seconds, not a speed test). Stdout is a
    one-page pipe (see Stdout): while the test does not pump, a long answer blocks."""

    def __init__(self, *args: str | Path):
        self.out = Stdout()
        self.proc = subprocess.Popen([sys.executable, "-m", "lila", "chat", *map(str, args)],
                                     stdin=subprocess.PIPE, stdout=self.out.child_fd,
                                     stderr=subprocess.PIPE, preexec_fn=interruptible)
        os.close(self.out.child_fd)
        self.err = Reader(self.proc.stderr)
        self.err.start()

    def say(self, line: str) -> None:
        self.proc.stdin.write(f"{line}\n".encode())
        self.proc.stdin.flush()

    def stdout(self) -> str:
        return self.out.data.decode("utf-8", "replace")

    def pump(self, done) -> None:
        """Read stdout until done() is true; stderr is read all along by its own thread."""
        deadline = time.monotonic() + TIMEOUT
        while not done():
            assert time.monotonic() < deadline, f"still waiting after {TIMEOUT} s: {self.err.text()}"
            ready, _, _ = select.select([self.out.fd], [], [], 0.05)
            if ready and not (chunk := os.read(self.out.fd, 1 << 16)):
                assert done(), f"the chat ended: {self.err.text()}"
                return
            self.out.data += chunk if ready else b""

    def expect(self, text: str, times: int = 1) -> None:
        """Pump until stderr has said text (times times)."""
        self.pump(lambda: self.err.text().count(text) >= times)

    def quit(self) -> tuple[str, str]:
        self.say("/quit")
        self.out.read_until(None, self.err)     # until the chat closes its stdout
        assert self.proc.wait(TIMEOUT) == 0, self.err.text()
        self.err.join(5)
        return self.stdout(), self.err.text()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.out.fd)


def test_chat_refuses_a_changed_model_file_until_reload(smollm2_path, tmp_path):
    path = tmp_path / "model.gguf"
    shutil.copyfile(smollm2_path, path)
    chat = ChatProcess(path, "--greedy", "--max-tokens", "24")
    try:
        chat.say(NAME)
        chat.expect("tok/s")
        os.truncate(path, path.stat().st_size // 2)     # cut under the loaded model
        chat.say(ASK_NAME)
        chat.expect("type /reload to load it again")
        chat.say("/reload")                             # the cut file cannot load
        chat.expect("/reload tries again")
        chat.say(ASK_NAME)
        chat.expect("no model is loaded")
        shutil.copyfile(smollm2_path, path)
        chat.say("/reload")
        chat.expect("(reloaded model")
        chat.say(ASK_NAME)
        chat.expect("tok/s", times=2)
        stdout, stderr = chat.quit()
    finally:
        chat.close()
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 3, stderr
    assert errors[0].startswith(f"error: {path} ") and errors[0].endswith(
        "; type /reload to load it again (the conversation stays)"), errors[0]
    assert errors[1].startswith(f"error: {path}: ") and "truncated" in errors[1], errors[1]
    assert errors[2].startswith("error: no model is loaded (")
    # Two answers: the first turn's, and the one after /reload, which remembers it.
    answers = stdout.splitlines()
    assert len(answers) == 2 and "Zoltan" in answers[1], stdout


def test_chat_survives_a_model_file_cut_during_an_answer(smollm2, smollm2_path, tmp_path):
    """The file is cut while an answer is being written: one error line (the weights can
    no longer be read: a SIGBUS, or the check before each pass), no signal, and after
    /reload the chat goes on without the failed turn.

    Nothing races the clock: with --ignore-eos the story only ends with a full context,
    and once it has begun the test stops reading the one-page stdout pipe, so the chat
    is inside the answer (blocked on the pipe or computing) whenever the file is cut."""
    path = tmp_path / "model.gguf"
    shutil.copyfile(smollm2_path, path)
    system = "You are terse."
    chat = ChatProcess(path, "--greedy", "--ignore-eos", "--max-tokens", "100000",
                       "--system", system)
    try:
        chat.say(STORY)
        chat.pump(lambda: len(chat.out.data.strip()) >= 20)
        os.truncate(path, path.stat().st_size // 2)
        chat.expect("error: ")
        shutil.copyfile(smollm2_path, path)
        chat.say("/reload")
        chat.expect("(reloaded model")
        chat.say(QUESTION)
        before = len(chat.out.data)
        chat.pump(lambda: len(chat.out.data) - before >= 20)
        chat.proc.send_signal(signal.SIGINT)       # the answer cannot end by itself either
        chat.expect("tok/s")
        stdout, stderr = chat.quit()
    finally:
        chat.close()
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith(f"error: {path}"), stderr
    assert errors[0].endswith("; type /reload (the conversation stays)"), errors[0]
    # The only answer that completed a turn; its prompt holds the system message and the
    # question: the failed turn and its half-written story are not in the conversation.
    (footer,) = footers(stderr)
    prompt = smollm2.template.render([{"role": "system", "content": system},
                                      {"role": "user", "content": QUESTION}])
    assert prompt_tokens(footer) == len(smollm2.tokenize(prompt, special=True, add_bos=False))
