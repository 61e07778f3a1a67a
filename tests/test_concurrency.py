"""One model, many callers: threads and interleaved generators each get exactly what they
get alone, never share KV state, never deadlock; a model file that changes on disk gives
a one-line error, never a signal.
"""
from __future__ import annotations

import gc
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import lila
from lila.errors import ModelChangedError

PROMPTS = ["The capital of France is", "Once upon a time", "def fibonacci(n):",
           "The three primary colours are", "Water boils at", "My favourite book is",
           "In 1969, astronauts", "To make bread, first"]
TOKENS = 16


@pytest.fixture(scope="module")
def model(smollm2_path):
    with lila.load(smollm2_path, n_ctx=256) as m:
        yield m


@pytest.fixture(scope="module")
def solo(model) -> dict[str, list[int]]:
    """Each prompt's greedy tokens, generated alone."""
    return {p: _tokens(model.generate(p, max_tokens=TOKENS, greedy=True)) for p in PROMPTS}


def _tokens(completion) -> list[int]:
    completion.text()
    return completion.tokens


def test_interleaved_generators_give_their_solo_outputs(model, solo):
    """Generators advanced in turn, a piece at a time, each on its own KV cache."""
    completions = {p: model.generate(p, max_tokens=TOKENS, greedy=True) for p in PROMPTS[:4]}
    live = {p: iter(c) for p, c in completions.items()}
    while live:
        for prompt in list(live):
            if next(live[prompt], None) is None:
                del live[prompt]
    for prompt, completion in completions.items():
        assert completion.tokens == solo[prompt], prompt
    assert model.engine.in_use == 0


def test_a_second_generation_does_not_disturb_the_first(model, solo):
    first = model.generate(PROMPTS[0], max_tokens=TOKENS, greedy=True)
    pieces = [next(iter(first))]
    assert _tokens(model.generate(PROMPTS[1], max_tokens=TOKENS, greedy=True)) == solo[PROMPTS[1]]
    pieces += list(first)
    assert first.tokens == solo[PROMPTS[0]]


@pytest.mark.parametrize("threads", [2, 8])
def test_threads_generating_on_one_model_get_their_solo_outputs(model, solo, threads):
    results: dict[int, list[int]] = {}
    barrier = threading.Barrier(threads)

    def work(i: int) -> None:
        barrier.wait()    # all start together: their passes interleave
        results[i] = _tokens(model.generate(PROMPTS[i], max_tokens=TOKENS, greedy=True))
    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
    assert not any(w.is_alive() for w in workers), "a thread is stuck"
    assert {PROMPTS[i]: tokens for i, tokens in results.items()} == \
        {p: solo[p] for p in PROMPTS[:threads]}


def test_logits_beside_a_generation_in_another_thread(model):
    ids = model.tokenize(PROMPTS[2])
    alone = model.logits(ids)
    stop = threading.Event()

    def generate() -> None:
        while not stop.is_set():
            model.generate(PROMPTS[3], max_tokens=4, greedy=True).text()
    worker = threading.Thread(target=generate)
    worker.start()
    try:
        for _ in range(5):
            assert np.array_equal(model.logits(ids), alone)
    finally:
        stop.set()
        worker.join(120)


def test_a_dropped_generation_releases_its_cache(model):
    for _ in range(10):
        completion = model.generate(PROMPTS[0], max_tokens=TOKENS, greedy=True)
        next(iter(completion))
        assert model.engine.in_use == 1
        del completion
        gc.collect()
        assert model.engine.in_use == 0
    assert len(model.engine._free) <= model.engine.keep


def test_a_closed_generation_releases_its_cache(model):
    completion = model.generate(PROMPTS[0], max_tokens=TOKENS, greedy=True)
    next(iter(completion))
    completion.close()
    assert model.engine.in_use == 0


def test_the_next_turn_reuses_the_cache_of_the_last(model):
    first = model.generate(PROMPTS[0], max_tokens=8, greedy=True)
    first.text()
    follow = model.tokenize(PROMPTS[0]) + first.tokens + model.tokenize(" And", add_bos=False)
    second = model.generate(follow, max_tokens=2, greedy=True)
    second.text()
    assert second.stats.cached_tokens >= len(follow) - 2


# Two and eight threads, 20 rounds each, in a process of their own: each thread's tokens
# equal the solo ones, and the process (its pool of native threads, sleeping or not) exits.
ROUNDS_SCRIPT = """
import sys, threading
import lila
prompts, tokens = {prompts!r}, {tokens}
model = lila.load(sys.argv[1], n_ctx=128)
solo = {{}}
for p in prompts:
    c = model.generate(p, max_tokens=tokens, greedy=True); c.text(); solo[p] = c.tokens
for round in range(20):
    for n in (2, 8):
        got = {{}}
        def work(p):
            c = model.generate(p, max_tokens=tokens, greedy=True); c.text(); got[p] = c.tokens
        workers = [threading.Thread(target=work, args=(p,)) for p in prompts[:n]]
        [w.start() for w in workers]; [w.join() for w in workers]
        assert got == {{p: solo[p] for p in prompts[:n]}}, (round, n)
print("ok")
"""


@pytest.mark.slow
def test_twenty_rounds_of_threads_and_a_clean_exit(smollm2_path):
    script = ROUNDS_SCRIPT.format(prompts=PROMPTS, tokens=8)
    result = subprocess.run([sys.executable, "-c", script, str(smollm2_path)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "ok"


# --- the model file changes on disk ------------------------------------------------------

@pytest.fixture
def copy(smollm2_path, tmp_path) -> Path:
    path = tmp_path / "model.gguf"
    shutil.copyfile(smollm2_path, path)
    return path


@pytest.mark.parametrize("threads", [1, 2])
def test_truncated_under_the_native_executor_is_an_error_not_a_signal(copy, threads):
    """The weights' pages past the new end fault (SIGBUS) on whichever pool thread reads
    them: the executor turns it into ModelChangedError, and the process goes on."""
    from lila.executor.native import NativeBackend
    from lila.formats.gguf import GGUFFile
    from lila.hardware import detect
    from lila.hardware.backends import supported_families
    from lila.models import describe
    family = supported_families(detect())[0].name
    with GGUFFile.open(copy) as gguf:
        backend = NativeBackend(describe(gguf).plan, gguf, n_ctx=32, max_batch=8,
                                family=family, threads=threads)
        tokens = np.arange(1, 9)
        backend.forward(tokens, 0)
        os.truncate(copy, copy.stat().st_size // 2)
        with pytest.raises(ModelChangedError, match="changed on disk"):
            backend.forward(tokens, 0)
        with pytest.raises(ModelChangedError):   # every pass, not only the first
            backend.forward(tokens[:1], 0)
        del backend


def test_changed_in_place_between_generations(copy):
    with lila.load(copy, n_ctx=64) as m:
        assert m.file_changed() is None
        m.generate(PROMPTS[0], max_tokens=2, greedy=True).text()
        with open(copy, "r+b") as f:             # same size, other bytes
            f.seek(-64, os.SEEK_END)
            f.write(bytes(64))
        assert "modified" in m.file_changed()
        with pytest.raises(ModelChangedError, match="load it again"):
            m.generate(PROMPTS[0], max_tokens=2, greedy=True).text()
        with pytest.raises(ModelChangedError):
            m.logits([1, 2, 3])


def test_replaced_by_rename_keeps_working(copy, smollm2_path):
    """The map still holds the old file: nothing to refuse, but it is worth saying."""
    with lila.load(copy, n_ctx=64) as m:
        expected = _tokens(m.generate(PROMPTS[0], max_tokens=4, greedy=True))
        other = copy.with_name("other.gguf")
        shutil.copyfile(smollm2_path, other)
        os.replace(other, copy)
        assert "replaced" in m.file_changed()
        assert _tokens(m.generate(PROMPTS[0], max_tokens=4, greedy=True)) == expected


def test_truncated_while_lila_run_generates(copy):
    proc = subprocess.Popen([sys.executable, "-m", "lila", "run", str(copy), "Tell me a story.",
                             "--greedy", "--ignore-eos", "-n", "100000"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout.read(40)          # it is generating
        os.truncate(copy, copy.stat().st_size // 3)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    lines = err.decode().strip().splitlines()
    assert proc.returncode == 2, err.decode()[-2000:]
    assert lines[-1].startswith("error: ") and str(copy) in lines[-1] and "Traceback" not in err.decode()
