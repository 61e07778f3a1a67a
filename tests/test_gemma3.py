"""The real Gemma 3 270M (Q4_K_M, the pretrained model) that `make setup` pulls: whitespace
tokens, its own turn format, and the command line on it.

Its vocabulary has one token for each run of 2..31 spaces, of 1..31 tabs and of 1..31
newlines; the whole-corpus comparisons with transformers are the `gemma3` case of
test_tokenizer.py. It is not instruction-tuned: asked a bare question it repeats the
question, and it never predicts <end_of_turn> (logit near -10), so the chat test gives it a
worked example to follow.
"""
from __future__ import annotations

import hashlib

import pytest

import lila
from lila.chat_template import GEMMA
from lila.store import SPLIT_MODELS
from test_cli import lila as lila_cli
from tok_fixtures import gemma3_tok  # noqa: F401 (fixture)

END_OF_TURN = 106
EXAMPLE = [{"role": "user", "content": "What is the capital of Italy?"},
           {"role": "assistant", "content": "Rome."},
           {"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def gemma3(gemma3_path):
    with lila.load(gemma3_path, n_ctx=256) as model:
        yield model


def test_the_file_is_the_one_its_packages_make(gemma3_path):
    digest = hashlib.sha256()
    with open(gemma3_path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    assert digest.hexdigest() == SPLIT_MODELS["gemma3"].sha256


def test_runs_of_whitespace_are_gemmas_own_tokens(gemma3_tok):
    ours, ref = gemma3_tok.ours, gemma3_tok.ref
    tokens = gemma3_tok.metadata["tokenizer.ggml.tokens"]
    runs = [" " * n for n in range(2, 32)] + [c * n for c in "\t\n" for n in range(1, 32)]
    assert [ours.encode(run) for run in runs] == [[tokens.index(run)] for run in runs]
    assert [ours.encode(run) for run in runs] == [ref.encode(run, add_special_tokens=False) for run in runs]


def test_model_tokenize_two_spaces(gemma3):
    assert gemma3.tokenize("  ") == [2, 138]   # <bos>, then the token of two spaces


def test_end_of_turn_ends_a_turn(gemma3):
    assert gemma3.tokenizer.token_bytes(END_OF_TURN) == b"<end_of_turn>"
    assert END_OF_TURN in gemma3.tokenizer.eot_ids and gemma3.tokenizer.is_special(END_OF_TURN)


def test_chat_answers_in_gemmas_turns(gemma3, gemma3_tok):
    prompt = gemma3.template.render(EXAMPLE)
    assert prompt.endswith("<end_of_turn>\n<start_of_turn>user\nWhat is the capital of France?"
                           "<end_of_turn>\n<start_of_turn>model\n")
    expected = gemma3_tok.ref.apply_chat_template(EXAMPLE, chat_template=GEMMA,
                                                 add_generation_prompt=True, tokenize=True,
                                                 return_dict=True)["input_ids"]
    assert gemma3.tokenize(prompt, special=True, add_bos=False) == expected
    completion = gemma3.chat(EXAMPLE, greedy=True, max_tokens=2)
    assert completion.text() == "Paris."
    assert completion.stats.prompt_tokens == len(expected)


def test_run_code_prompt(gemma3_path):
    # Four spaces of indentation are token 140: they once came out as 262146 and an error.
    r = lila_cli("run", gemma3_path, "def f(x):\n    return x", "-n", "4", "--greedy", "-v")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() and "error" not in r.stderr
    assert "4 generated" in r.stderr and "finish: length" in r.stderr


def test_info_names_the_template_in_use(gemma3_path):
    r = lila_cli("info", gemma3_path)
    assert r.returncode == 0, r.stderr
    rows = {key.strip(): value.strip() for key, _, value in
            (line.partition("  ") for line in r.stdout.splitlines())}
    assert rows["chat template"] == "gemma, the gemma3 architecture's (none in the file)"
    assert rows["tokenizer"] == "sentencepiece (llama), 262144 tokens"
