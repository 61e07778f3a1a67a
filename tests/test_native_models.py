"""The native backend on whole models in every weight type it runs, against the numpy
reference backend on the same file, for every kernel family this machine can run.

The models are small synthetic llamas written by bench/synthetic_gguf.py (a real GGUF
layout and SmolLM2's vocabulary, random weights). Nothing here needs torch, so
`make test-arm64` runs this file under qemu too: it is the whole-model proof of the NEON
kernels and of the executor's threads on ARM64.

Bounds (normalised MSE of logits, kernel_reference.nmse): native vs reference < 1e-3 (only
the 8-bit activations and the fp16 K/V cache differ; F16 weights run as Q8_0), for prefill
and for token-by-token decode (the GEMM and the GEMV): the two cannot be held closer to each
other than that, because a last-bit difference in a sum can move an 8-bit activation code
in the next layer. Thread counts change nothing.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pytest

from kernel_reference import family_params, nmse
from lila.executor.native import NativeBackend
from lila.executor.reference import ReferenceBackend
from lila.formats.gguf import GGUFFile
from lila.models import describe
from lila.store import default_model_path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import synthetic_gguf  # noqa: E402

FAMILIES = family_params()
# Q4_K and Q6_K need rows that are multiples of 256; the gemv/gemm split needs > 1 token.
SHAPES = synthetic_gguf.Shapes(dim=256, layers=2, ffn=512, heads=4, kv_heads=2, head_dim=64,
                               rope_base=10000.0, rms_eps=1e-5, context=128, tied=True)
TYPES = ["q4_0", "q4_1", "q5_0", "q8_0", "q4_k", "q6_k", "f16"]
IDS = np.random.default_rng(7).integers(0, 49152, 12)
DECODED = 4     # the last tokens, fed one at a time


@pytest.fixture(scope="module", params=TYPES)
def model(request, tmp_path_factory):
    """(path, reference logits of IDS) for one weight type."""
    path = tmp_path_factory.mktemp("synthetic") / f"llama-{request.param}.gguf"
    args = argparse.Namespace(type=request.param, embed_type=None, output_type=None, seed=0,
                              tokenizer_from=default_model_path())
    synthetic_gguf.write_model(path, SHAPES, request.param, args, pool_elements=1 << 16)
    with GGUFFile.open(path) as gguf:
        reference = ReferenceBackend(describe(gguf).plan, gguf, n_ctx=64, max_batch=16)
        expected = reference.forward(IDS, 0, all_logits=True)
    return path, expected


def native(path: Path, family: str, threads: int) -> NativeBackend:
    gguf = GGUFFile.open(path)
    return NativeBackend(describe(gguf).plan, gguf, n_ctx=64, max_batch=16, family=family,
                         threads=threads)


@pytest.mark.parametrize("family", FAMILIES)
def test_prefill_and_decode_match_the_reference(model, family):
    path, expected = model
    backend = native(path, family, threads=2)
    prefill = backend.forward(IDS, 0, all_logits=True)
    assert nmse(prefill, expected) < 1e-3
    backend = native(path, family, threads=2)
    split = len(IDS) - DECODED
    steps = [backend.forward(IDS[:split], 0, all_logits=True)]
    steps += [backend.forward(IDS[i:i + 1], i, all_logits=True) for i in range(split, len(IDS))]
    assert nmse(np.concatenate(steps), expected) < 1e-3


@pytest.mark.parametrize("family", FAMILIES)
def test_threads_change_nothing(model, family):
    path, _ = model
    one = native(path, family, threads=1).forward(IDS, 0, all_logits=True)
    for threads in (2, 3):
        assert np.array_equal(native(path, family, threads).forward(IDS, 0, all_logits=True),
                              one), f"{threads} threads"
