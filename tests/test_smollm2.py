"""The real default model (SmolLM2-135M-Instruct, Q4_1) against transformers reading the
same GGUF: both dequantize the same weights to fp32, so the logits agree to fp32 rounding.

Tolerance: max |lila - transformers| below 2e-3 on logits of magnitude ~20, and every
position's argmax the same.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

# transformers takes about 13 s to read and dequantize the GGUF (the smollm2_hf fixture).
pytestmark = pytest.mark.slow

TOLERANCE = 2e-3
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def test_teacher_forced_logits_match_transformers(smollm2, smollm2_hf):
    hf_model, hf_tok = smollm2_hf
    texts = [
        "The quick brown fox jumps over the lazy dog. " * 3,
        "def fibonacci(n):\n    return n if n < 2 else fibonacci(n - 1) + fibonacci(n - 2)\n",
        "Paris est la capitale de la France, et Berlin celle de l'Allemagne.",
    ]
    for text in texts:
        ids = hf_tok(text)["input_ids"]
        assert smollm2.tokenize(text) == ids
        with torch.no_grad():
            expected = hf_model(torch.tensor([ids])).logits[0].numpy()
        got = smollm2.logits(ids)
        err = np.abs(got - expected).max()
        assert err < TOLERANCE, f"max error {err}"
        assert (got.argmax(-1) == expected.argmax(-1)).all()


def test_chat_prompt_equals_transformers(smollm2, smollm2_hf):
    _, hf_tok = smollm2_hf
    expected = hf_tok.apply_chat_template(QUESTION, add_generation_prompt=True, tokenize=False)
    assert smollm2.template.render(QUESTION, add_generation_prompt=True) == expected


def test_greedy_answer_is_paris(smollm2, smollm2_hf):
    hf_model, hf_tok = smollm2_hf
    completion = smollm2.chat(QUESTION, greedy=True, max_tokens=24)
    answer = completion.text()
    assert "Paris" in answer
    assert completion.finish_reason == "stop"
    # The same tokens as transformers' greedy decoding of the same prompt.
    ids = hf_tok.apply_chat_template(QUESTION, add_generation_prompt=True, return_dict=True)["input_ids"]
    with torch.no_grad():
        out = hf_model.generate(torch.tensor([ids]), max_new_tokens=24, do_sample=False)
    expected = out[0, len(ids):].tolist()
    expected = expected[:expected.index(2)] if 2 in expected else expected   # <|im_end|>
    assert completion.tokens == expected
