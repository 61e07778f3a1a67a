"""Generation through the Python API on a tiny random llama: greedy decoding against
transformers, sampling, stops, limits, KV reuse across turns and the OpenAI shapes."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import hf_gguf
import lila
from lila.errors import ContextOverflowError, LilaError

PROMPT = [5, 70, 101, 32, 116, 104, 101, 32, 99, 97, 116]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    ref = hf_gguf.build("llama", tmp_path_factory.mktemp("gen"), seed=3)
    with lila.load(ref.path, max_batch=8) as model:
        yield ref, model


def hf_greedy(ref, ids: list[int], n: int) -> list[int]:
    with torch.no_grad():
        out = ref.model.generate(torch.tensor([ids]), max_new_tokens=n, do_sample=False,
                                 eos_token_id=None, pad_token_id=0)
    return out[0, len(ids):].tolist()


def test_greedy_tokens_equal_transformers(tiny):
    ref, model = tiny
    completion = model.generate(PROMPT, greedy=True, max_tokens=30)
    completion.text()
    expected = hf_greedy(ref, PROMPT, 30)
    stop_ids = [i for i, t in enumerate(expected) if t in model.tokenizer.eot_ids]
    expected = expected[:stop_ids[0]] if stop_ids else expected
    assert completion.tokens == expected
    assert completion.finish_reason == ("stop" if stop_ids else "length")


def test_pieces_join_to_the_decoded_tokens(tiny):
    _, model = tiny
    completion = model.generate(PROMPT, seed=7, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0,
                                max_tokens=40)
    pieces = list(completion)
    assert "".join(pieces) == model.detokenize(completion.tokens)
    assert completion.stats.completion_tokens == len(completion.tokens)


def test_seeded_sampling_is_reproducible(tiny):
    _, model = tiny
    runs = [model.generate(PROMPT, seed=s, temperature=1.5, top_k=0, min_p=0.0, max_tokens=20)
            for s in (11, 11, 12)]
    tokens = [(r.text(), r.tokens)[1] for r in runs]
    assert tokens[0] == tokens[1]
    assert tokens[0] != tokens[2]


def test_greedy_past_the_end_token_equals_transformers(tiny):
    # ignore_eos bans the end tokens, as transformers' suppress_tokens does.
    ref, model = tiny
    completion = model.generate(PROMPT, greedy=True, max_tokens=30, ignore_eos=True)
    completion.text()
    with torch.no_grad():
        out = ref.model.generate(torch.tensor([PROMPT]), max_new_tokens=30, do_sample=False,
                                 eos_token_id=None, pad_token_id=0,
                                 suppress_tokens=sorted(model.tokenizer.eot_ids))
    assert completion.tokens == out[0, len(PROMPT):].tolist()
    assert completion.finish_reason == "length"


def test_max_tokens_ends_with_length(tiny):
    _, model = tiny
    # The random model may well pick an end token within three tokens: ban them.
    completion = model.generate(PROMPT, seed=1, temperature=1.0, max_tokens=3, ignore_eos=True)
    completion.text()
    assert completion.finish_reason == "length"
    assert len(completion.tokens) == completion.stats.completion_tokens == 3


def test_stop_string_cuts_the_text(tiny):
    _, model = tiny
    full = model.generate(PROMPT, greedy=True, max_tokens=30, ignore_eos=True).text()
    assert len(full) >= 6, repr(full)   # 30 tokens, none of them an end token
    stop = full[3:6]
    cut = model.generate(PROMPT, greedy=True, max_tokens=30, ignore_eos=True, stop=[stop])
    text = cut.text()
    assert text == full[:full.index(stop)]
    assert cut.finish_reason == "stop"


def test_context_guard(tmp_path):
    ref = hf_gguf.build("llama", tmp_path)
    with lila.load(ref.path, n_ctx=16) as model:
        with pytest.raises(ContextOverflowError, match="16"):
            model.generate(list(range(20)), greedy=True).text()
        completion = model.generate(PROMPT, greedy=True, max_tokens=100, ignore_eos=True)
        completion.text()
        assert len(PROMPT) + len(completion.tokens) == 16   # the context, not max_tokens
        assert completion.finish_reason == "length"
    with pytest.raises(LilaError, match="context"):
        lila.load(ref.path, n_ctx=10 ** 6)


def test_next_chat_turn_reuses_the_cache(tiny, tmp_path):
    ref, model = tiny
    turn1 = [{"role": "user", "content": "the cat"}]
    answer = model.chat(turn1, greedy=True, max_tokens=8).text()
    turn2 = turn1 + [{"role": "assistant", "content": answer}, {"role": "user", "content": "in"}]
    second = model.chat(turn2, greedy=True, max_tokens=8)
    reply = second.text()
    assert second.stats.cached_tokens > 0
    with lila.load(ref.path) as fresh:   # the same answer without any cached state
        again = fresh.chat(turn2, greedy=True, max_tokens=8)
        assert again.text() == reply and again.stats.cached_tokens == 0


def test_chat_completion_shapes(tiny):
    _, model = tiny
    messages = [{"role": "user", "content": "the"}]
    result = model.create_chat_completion(messages, max_tokens=6, greedy=True, ignore_eos=True)
    assert result["object"] == "chat.completion"
    choice = result["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert choice["finish_reason"] == "length"
    usage = result["usage"]
    assert usage["completion_tokens"] == 6 and usage["prompt_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    chunks = list(model.create_chat_completion(messages, max_tokens=6, greedy=True, stream=True,
                                               ignore_eos=True))
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    streamed = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert streamed == choice["message"]["content"]
    assert chunks[-1]["choices"][0]["finish_reason"] == choice["finish_reason"]


def test_tokenize_detokenize_and_logits(tiny):
    _, model = tiny
    text = "the cat in the hat"
    ids = model.tokenize(text)
    assert model.detokenize(ids) == text
    assert model.tokenize("<|im_start|>", special=True) == [hf_gguf.FIRST_SPECIAL + 1]
    assert model.logits(ids).shape == (len(ids), hf_gguf.VOCAB)


@pytest.mark.parametrize("call, message", [
    (lambda m: m.logits([0, hf_gguf.VOCAB]), "outside the vocabulary"),
    (lambda m: m.logits([]), "empty"),
    (lambda m: m.generate(PROMPT, temprature=1.0), "unknown sampling option"),
    (lambda m: m.generate(PROMPT, top_p=2.0).text(), "top_p"),
    (lambda m: m.generate(PROMPT, max_tokens=0), "max_tokens"),
])
def test_bad_requests_are_clear_errors(tiny, call, message):
    _, model = tiny
    with pytest.raises(LilaError, match=message):
        call(model)
    assert np.isfinite(model.logits(PROMPT)).all()   # and the model still works


def test_a_model_that_does_not_fit_is_refused_before_allocating(tiny, monkeypatch):
    ref, _ = tiny
    import psutil
    from collections import namedtuple
    vm = namedtuple("vm", "available total")
    monkeypatch.setattr(psutil, "virtual_memory", lambda: vm(available=1 << 20, total=1 << 30))
    with pytest.raises(LilaError, match="needs about .* MB .* only 1 MB is available"):
        lila.load(ref.path, low_memory=False)
    # streaming the weights leaves the KV cache and activations, which do not fit either
    monkeypatch.setattr(psutil, "virtual_memory", lambda: vm(available=1 << 16, total=1 << 30))
    with pytest.raises(LilaError, match="even streaming its weights .* only 0 MB is available"):
        lila.load(ref.path)
