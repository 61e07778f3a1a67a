"""Mixture-of-experts models: tiny random ones of each MoE architecture, built by
transformers (fp32, the oracle) and written as llama.cpp's converter writes them, with the
experts of a layer stacked into 3-D tensors.

On the reference backend the logits match transformers at every position, for a prompt
and token by token through the KV cache. The other backends refuse such a model with one
line naming the one that runs it. Hostile MoE metadata is refused before anything is sized
by it.
"""
from __future__ import annotations

import copy
import subprocess
import sys

import gguf
import numpy as np
import pytest

import hf_gguf
import lila
from lila.errors import ModelFormatError, UnsupportedError

ARCHS = ["qwen2moe", "qwen3moe", "mixtral", "olmoe"]
IDS = list(range(5, 45))


@pytest.fixture(scope="module", params=ARCHS)
def tiny(request, tmp_path_factory):
    return hf_gguf.build(request.param, tmp_path_factory.mktemp(request.param))


def test_the_reference_backend_matches_transformers(tiny):
    expected = tiny.logits(IDS)
    model = lila.load(tiny.path, backend="reference", n_ctx=64)
    assert model.config.moe is not None
    np.testing.assert_allclose(model.logits(IDS), expected, atol=1e-4 * np.abs(expected).max())


def test_decoding_through_the_cache_gives_the_same_logits(tiny):
    model = lila.load(tiny.path, backend="reference", n_ctx=64)
    prompt = model.backend.forward(np.array(IDS[:8]), 0, all_logits=True)
    steps = [model.backend.forward(np.array([token]), 8 + i) for i, token in enumerate(IDS[8:])]
    expected = tiny.logits(IDS)
    scale = np.abs(expected).max()
    np.testing.assert_allclose(prompt, expected[:8], atol=1e-4 * scale)
    np.testing.assert_allclose(np.concatenate(steps), expected[8:], atol=1e-4 * scale)


def test_other_backends_refuse_it_by_name(tiny):
    with pytest.raises(UnsupportedError, match="mixture-of-experts .* reference backend"):
        lila.load(tiny.path, backend="numba", n_ctx=64)


def _with_metadata(tiny, tmp_path, **changes):
    """The tiny model's file again, its config changed as `changes` say (the tensors stay)."""
    config = copy.deepcopy(tiny.model.config)
    for key, value in changes.items():
        setattr(config, key, value)
    path = tmp_path / "changed.gguf"
    hf_gguf.write_gguf(tiny.model, config, tiny.arch, path, gguf.GGMLQuantizationType.F32)
    return path


def _experts_key(tiny) -> str:
    return "num_local_experts" if tiny.arch == "mixtral" else "num_experts"


@pytest.mark.parametrize("case", ["no experts", "a million experts", "more used than there are",
                                  "fewer than the tensors hold"])
def test_hostile_metadata_is_refused(tiny, tmp_path, case):
    experts = getattr(tiny.model.config, _experts_key(tiny))
    changes, message = {
        "no experts": ({_experts_key(tiny): 0}, "expert_count"),
        "a million experts": ({_experts_key(tiny): 10 ** 6}, "expert_count"),
        "more used than there are": ({"num_experts_per_tok": experts + 1}, "uses"),
        "fewer than the tensors hold": ({_experts_key(tiny): experts - 1}, "expected"),
    }[case]
    path = _with_metadata(tiny, tmp_path, **changes)
    with pytest.raises(ModelFormatError, match=message) as error:
        lila.load(path, backend="reference", n_ctx=64)
    assert "\n" not in str(error.value)


def test_info_describes_the_experts(tiny):
    shown = subprocess.run([sys.executable, "-m", "lila", "info", str(tiny.path)],
                           capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    moe = lila.load(tiny.path, backend="reference", n_ctx=64).config.moe
    assert f"{moe.experts}, {moe.used} per token, ffn {moe.ffn_dim}" in shown.stdout
