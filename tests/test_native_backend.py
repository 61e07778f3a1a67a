"""The native backend (hand-written kernels run by native/common/executor.c) on whole
models, for every kernel family this machine can run.

References and bounds (normalised MSE of logits, as llama.cpp's test-backend-ops):
  - tiny random models of each architecture vs transformers fp32: NMSE < 1e-2 (measured
    2.4e-4 for llama, 2.1e-3 for gemma3). The native path quantizes every matmul input
    to 8 bits and stores K/V in fp16, and the F32 weights of these models run as Q8_0,
    so it cannot match to fp32 rounding; the numba backend, written independently with
    the same arithmetic, agrees with it to 1e-13.
  - the same tiny models with Q4_0/Q8_0 weights vs the numpy reference backend on the
    same weights: NMSE < 1e-3 (only activation quantization and fp16 K/V differ).
  - the real SmolLM2 vs transformers: NMSE < 1e-2 (the peers' gate for a whole model)
    and the top token the same at >= 95% of positions; greedy chat answer unchanged.
  - threads and batch splits change only who computes what: results are bit-identical.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch

import hf_gguf
import lila
from kernel_reference import family_params, nmse, runnable_families
from lila.executor.native import NativeBackend
from lila.executor.reference import ReferenceBackend
from lila.formats.gguf import GGUFFile
from lila.hardware.backends import NATIVE
from lila.models import describe

FAMILIES = family_params()
ARCHS = ["llama", "qwen2", "qwen3", "gemma3"]


def native(path, family: str, *, threads: int = 2, n_ctx: int = 128, max_batch: int = 16):
    gguf = GGUFFile.open(path)
    spec = describe(gguf)
    return NativeBackend(spec.plan, gguf, n_ctx=n_ctx, max_batch=max_batch, family=family,
                         threads=threads)


def run_chunked(backend, ids: list[int], chunk: int) -> np.ndarray:
    rows = [backend.forward(np.array(ids[i:i + chunk]), i, all_logits=True)
            for i in range(0, len(ids), chunk)]
    return np.concatenate(rows)


@pytest.fixture(scope="module", params=ARCHS)
def tiny(request, tmp_path_factory):
    return hf_gguf.build(request.param, tmp_path_factory.mktemp(request.param))


@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_models_match_transformers(tiny, family):
    ids = np.random.default_rng(1).integers(0, hf_gguf.VOCAB, 40).tolist()
    expected = tiny.logits(ids)
    backend = native(tiny.path, family)
    got = run_chunked(backend, ids, 16)
    error = nmse(got, expected)
    assert error < 1e-2, f"NMSE {error:.2e}"
    assert (got.argmax(-1) == expected.argmax(-1)).mean() >= 0.9


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("dtype", ["Q4_0", "Q8_0"])
def test_quantized_weights_match_the_reference_backend(tmp_path, family, dtype):
    ref = hf_gguf.build("llama", tmp_path, dtype=getattr(hf_gguf.gguf.GGMLQuantizationType, dtype))
    ids = np.random.default_rng(2).integers(0, hf_gguf.VOCAB, 30).tolist()
    with GGUFFile.open(ref.path) as gguf:
        spec = describe(gguf)
        expected = ReferenceBackend(spec.plan, gguf, n_ctx=64, max_batch=32).forward(
            np.array(ids), 0, all_logits=True)
    got = native(ref.path, family, max_batch=32).forward(np.array(ids), 0, all_logits=True)
    assert nmse(got, expected) < 1e-3


@pytest.mark.parametrize("family", FAMILIES)
def test_threads_and_batches_change_nothing(tiny, family):
    ids = np.random.default_rng(3).integers(0, hf_gguf.VOCAB, 23).tolist()
    one = run_chunked(native(tiny.path, family, threads=1), ids, 16)
    for threads, chunk in ((2, 16), (3, 5), (4, 1)):
        got = run_chunked(native(tiny.path, family, threads=threads), ids, chunk)
        if chunk == 16:
            assert np.array_equal(got, one), f"{threads} threads"
        else:   # a different batch takes the GEMV instead of the GEMM: same sums, other order
            assert nmse(got, one) < 1e-10, f"{threads} threads, batches of {chunk}"


@pytest.mark.parametrize("family", FAMILIES)
def test_fused_program_of_a_llama_layer(tmp_path, family):
    backend = native(hf_gguf.build("llama", tmp_path).path, family)
    lib = backend.native.lib
    kinds = [backend._program.struct.ops[i].kind for i in range(backend._program.struct.n_ops)]
    names = {getattr(lib, n): n[8:] for n in dir(lib) if n.startswith("LILA_OP_")}
    layer = [names[k] for k in kinds[1:1 + kinds[1:].index(lib.LILA_OP_RMSNORM_Q8, 1)]]
    # norm+quantize, QKV as one matmul, rope q, rope k, attention, quantize, output
    # projection added into the residual, norm+quantize, gate+up+SiLU, quantize, down
    assert layer == ["RMSNORM_Q8", "MATMUL", "ROPE", "ROPE", "ATTENTION", "QUANTIZE", "MATMUL"]
    assert kinds.count(lib.LILA_OP_ADD) == 0 and kinds.count(lib.LILA_OP_GLU) == 0


@pytest.mark.parametrize("family", FAMILIES)
def test_bad_batches_are_refused(tiny, family):
    backend = native(tiny.path, family, n_ctx=32, max_batch=8)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        backend.forward(np.array([1, hf_gguf.VOCAB]), 0)
    with pytest.raises(ValueError, match="does not fit"):
        backend.forward(np.arange(9), 0)
    with pytest.raises(ValueError, match="does not fit"):
        backend.forward(np.arange(4), 30)


@pytest.mark.slow   # transformers' reading of the GGUF alone takes about 13 s
@pytest.mark.parametrize("family", FAMILIES)
def test_smollm2_matches_transformers(smollm2_path, smollm2_hf, family):
    hf_model, hf_tok = smollm2_hf
    backend = native(smollm2_path, family, n_ctx=256, max_batch=64)
    text = ("The quick brown fox jumps over the lazy dog. def fibonacci(n): return n if n < 2 "
            "else fibonacci(n - 1) + fibonacci(n - 2). Paris est la capitale de la France.")
    ids = hf_tok(text)["input_ids"]
    with torch.no_grad():
        expected = hf_model(torch.tensor([ids])).logits[0].numpy()
    got = backend.forward(np.array(ids), 0, all_logits=True)
    assert nmse(got, expected) < 1e-2
    assert (got.argmax(-1) == expected.argmax(-1)).mean() >= 0.95


@pytest.mark.xfail(not runnable_families(), strict=True, reason="no native kernels built")
def test_smollm2_greedy_chat_on_the_default_backend(smollm2):
    """Every token the native backend picks greedily is one the reference ranks as
    nearly the best (8-bit activations can swap near-ties: on "What is the capital of
    France?" the first token's two candidates are 0.1 apart in 25)."""
    question = [{"role": "user", "content": "Name three colours of the rainbow."}]
    with lila.load(smollm2.path, n_ctx=512) as model:
        # By default, a CPU with native kernels runs the best family it supports.
        assert model.choice.name in NATIVE, model.choice.reason
        assert model.choice.kernels == model.choice.kernel_family, model.choice
        completion = model.chat(question, greedy=True, max_tokens=24)
        answer = completion.text()
        prompt = model.tokenize(model.template.render(question, add_generation_prompt=True),
                                special=True, add_bos=False)
    assert len(completion.tokens) > 3 and answer.strip()
    expected = smollm2.logits(prompt + completion.tokens)[len(prompt) - 1:-1]
    for step, (token, logits) in enumerate(zip(completion.tokens, expected)):
        assert logits.max() - logits[token] < 1.0, f"step {step}"


@pytest.mark.parametrize("family", FAMILIES)
def test_every_kernel_of_the_family_is_built(family):
    from lila.native import library
    from lila.native.abi import MATMUL_TYPES, WEIGHT_TYPES
    symbols = library().kernel_symbols(family)
    typed = [f"{op}[{t.name}]" for t in MATMUL_TYPES for op in ("gemv", "gemm")]
    typed += [f"embed[{t.name}]" for t in WEIGHT_TYPES]
    missing = [e for e in typed if e not in symbols] + [e for e, s in symbols.items() if s is None]
    assert not missing


def test_a_model_still_open_at_exit_does_not_crash(smollm2_path):
    """A model referenced from a module that is finalized late (here os, through a
    lambda's globals) is destroyed after cffi has let go of the library: the library
    must still be mapped then, for the destructor and the pool's sleeping threads."""
    script = (f"import os, lila\nos.fdatasync = lambda fd: None\n"
              f"model = lila.load({str(smollm2_path)!r})\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def _blocked_signals(task: str) -> int:
    with open(f"/proc/self/task/{task}/status") as status:
        return next(int(line.split()[1], 16) for line in status if line.startswith("SigBlk:"))


def _pool_threads() -> list[str]:
    tasks = os.listdir("/proc/self/task")
    return [t for t in tasks if open(f"/proc/self/task/{t}/comm").read().strip() == "lila-worker"]


@pytest.mark.parametrize("family", family_params())
def test_workers_leave_ctrl_c_to_the_callers_threads(tmp_path, family):
    """The pool's threads block SIGINT (and every signal but the faults they must catch),
    so a Ctrl-C always interrupts a thread of Python's, never a worker."""
    path = hf_gguf.build("llama", tmp_path).path
    before = set(_pool_threads())
    backend = native(path, family, threads=3)
    backend.forward(np.arange(4), 0)   # every worker has run: its mask is its own, not that of its birth
    workers = set(_pool_threads()) - before
    assert len(workers) == 2
    interrupt, bus = 1 << (signal.SIGINT - 1), 1 << (signal.SIGBUS - 1)
    for task in workers:
        assert _blocked_signals(task) & interrupt and not _blocked_signals(task) & bus
    assert not _blocked_signals(str(threading.get_native_id())) & interrupt
    del backend
