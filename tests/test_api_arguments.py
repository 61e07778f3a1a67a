"""Every argument of the public API is checked: a wrong one is a LilaError that names it,
never a TypeError or ValueError from deep inside."""
from __future__ import annotations

import numpy as np
import pytest

import lila
from lila.errors import LilaError

MESSAGES = [{"role": "user", "content": "Hi"}]


@pytest.fixture(scope="module")
def model(smollm2_path):
    with lila.load(smollm2_path, n_ctx=128) as m:
        yield m


@pytest.mark.parametrize("kwargs, names", [
    (dict(n_ctx=1.5), "n_ctx"), (dict(n_ctx="64"), "n_ctx"), (dict(n_ctx=True), "n_ctx"),
    (dict(n_ctx=0), "n_ctx"), (dict(threads=0), "threads"), (dict(threads=2.0), "threads"),
    (dict(max_batch=None), "max_batch"), (dict(max_batch=-1), "max_batch"),
    (dict(backend=3), "backend"), (dict(low_memory="yes"), "low_memory"),
])
def test_load_arguments(smollm2_path, kwargs, names):
    with pytest.raises(LilaError, match=names):
        lila.load(smollm2_path, **kwargs)


def test_load_path_of_the_wrong_type():
    with pytest.raises(LilaError, match="path must be a file path"):
        lila.load(42)


@pytest.mark.parametrize("kwargs, name", [
    (dict(max_tokens="5"), "max_tokens"), (dict(max_tokens=2.5), "max_tokens"),
    (dict(max_tokens=0), "max_tokens"), (dict(stop=3), "stop"), (dict(stop=["a", 1]), "stop"),
    (dict(temperature="hot"), "temperature"), (dict(top_k=1.5), "top_k"),
    (dict(seed="x"), "seed"), (dict(greedy="yes"), "greedy"), (dict(nonsense=1), "nonsense"),
])
def test_generate_arguments(model, kwargs, name):
    with pytest.raises(LilaError, match=name):
        model.generate("Hello", **kwargs)


@pytest.mark.parametrize("prompt", [None, 3.5, [1, "2"], [1.0], b"bytes", [True]])
def test_generate_prompt_of_the_wrong_type(model, prompt):
    with pytest.raises(LilaError, match="prompt"):
        model.generate(prompt)


def test_stop_is_a_string_or_a_list(model):
    """One string is one stop string, as the OpenAI API takes it: not its characters."""
    full = model.generate("The capital of France is", max_tokens=12, greedy=True).text()
    assert "Paris" in full and full.index("Paris") > 0
    assert model.generate("The capital of France is", max_tokens=12, greedy=True,
                          stop="Paris").text() == full[:full.index("Paris")]
    assert model.generate("The capital of France is", max_tokens=12, greedy=True,
                          stop=["Paris"]).text() == full[:full.index("Paris")]
    assert model.generate("The capital of France is", max_tokens=12, greedy=True,
                          stop=None).text() == full


@pytest.mark.parametrize("messages, name", [
    (None, "messages"), ([], "messages"), ("Hi", "messages"), ([["user", "Hi"]], r"messages\[0\]"),
    ([{"content": "Hi"}], r"messages\[0\]"), ([{"role": "user", "content": 5}], r"messages\[0\]\['content'\]"),
])
def test_chat_messages(model, messages, name):
    with pytest.raises(LilaError, match=name):
        model.chat(messages)


@pytest.mark.parametrize("kwargs, name", [
    (dict(stream="no"), "stream"), (dict(max_tokens="8"), "max_tokens"), (dict(stop=7), "stop"),
])
def test_chat_completion_arguments(model, kwargs, name):
    with pytest.raises(LilaError, match=name):
        model.create_chat_completion(MESSAGES, **kwargs)


@pytest.mark.parametrize("call, name", [
    (lambda m: m.tokenize(b"Hi"), "text"), (lambda m: m.tokenize(None), "text"),
    (lambda m: m.tokenize("Hi", special="yes"), "special"),
    (lambda m: m.tokenize("Hi", add_bos=1), "add_bos"),
    (lambda m: m.detokenize("abc"), "ids"), (lambda m: m.detokenize([1.5]), "ids"),
    (lambda m: m.detokenize([10 ** 9]), "outside the vocabulary"),
    (lambda m: m.logits(None), "ids"), (lambda m: m.logits([]), "empty"),
])
def test_tokenize_detokenize_logits_arguments(model, call, name):
    with pytest.raises(LilaError, match=name):
        call(model)


def test_numpy_token_ids_are_token_ids(model):
    ids = model.tokenize("Hello world")
    assert model.detokenize(np.array(ids)) == model.detokenize(ids)
    assert np.array_equal(model.logits(np.array(ids, np.int32)), model.logits(ids))


def test_a_closed_model_says_so(smollm2_path):
    m = lila.load(smollm2_path, n_ctx=64)
    m.close()
    with pytest.raises(LilaError, match="closed"):
        m.generate("Hi")
    with pytest.raises(LilaError, match="closed"):
        m.logits([1, 2])
