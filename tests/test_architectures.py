"""Each architecture against transformers (fp32): a tiny random model of it is written as
GGUF, and Lila's logits must match the reference at every position of several prompts.

Tolerance: max |lila - transformers| < 1e-4 on logits of magnitude ~1 (both are fp32; what
differs is summation order), which also makes every argmax agree.
"""
from __future__ import annotations

import numpy as np
import pytest

import hf_gguf
import lila
from lila.generation.session import Session

TOLERANCE = 1e-4
PROMPT_LENGTHS = (1, 7, 23, 40)

CASES = {
    "llama": {},
    "llama-tied": dict(tie_word_embeddings=True),
    "llama3-rope": dict(rope_parameters={
        "rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 16}),
    "qwen2": {},
    "qwen2-untied": dict(tie_word_embeddings=False),
    "qwen3": {},
    "gemma3": {},
    "gemma3-linear-rope": dict(rope_parameters={
        "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
        "full_attention": {"rope_type": "linear", "rope_theta": 1e6, "factor": 8.0}}),
}


@pytest.fixture(scope="module", params=list(CASES))
def tiny(request, tmp_path_factory):
    arch = request.param.split("-")[0].replace("llama3", "llama")
    ref = hf_gguf.build(arch, tmp_path_factory.mktemp(request.param), **CASES[request.param])
    with lila.load(ref.path, max_batch=16, backend="reference") as model:
        yield ref, model


def prompts(vocab: int) -> list[list[int]]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, vocab, n).tolist() for n in PROMPT_LENGTHS]


def test_logits_match_transformers(tiny):
    ref, model = tiny
    for ids in prompts(hf_gguf.VOCAB):
        expected = ref.logits(ids)
        got = model.logits(ids)   # 40 tokens with max_batch 16: chunked prefill over the cache
        assert got.shape == expected.shape
        err = np.abs(got - expected).max()
        assert err < TOLERANCE, f"{len(ids)} tokens: max error {err}"
        assert (got.argmax(-1) == expected.argmax(-1)).all()


def test_incremental_decode_matches_full_prefill(tiny):
    """Feeding tokens one at a time through the KV cache gives the teacher-forced logits."""
    ref, model = tiny
    ids = prompts(hf_gguf.VOCAB)[2]
    expected = ref.logits(ids)
    session = Session(model.engine, model.engine.backend.new_kv())
    for i, token in enumerate(ids):
        got = session.evaluate(ids[:i + 1])   # reuses the cached prefix: one new token
        assert len(session.cached) == i + 1
        assert np.abs(got - expected[i]).max() < TOLERANCE


def test_plan_reads_like_the_architecture(tiny):
    ref, model = tiny
    kinds = [op.kind for op in model.spec.plan.ops]
    cfg = model.config
    assert kinds.count("attention") == cfg.n_layers
    assert kinds[0] == "embed" and model.spec.plan.ops[-1].out == "logits"
    qk_norms = sum(1 for op in model.spec.plan.ops if "attn_q_norm" in "".join(op.weights))
    assert qk_norms == (cfg.n_layers if cfg.arch in ("qwen3", "gemma3") else 0)
