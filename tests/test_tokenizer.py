"""Tokenizers from GGUF metadata, held to transformers' tokenizer built from the same file."""
from __future__ import annotations


import numpy as np
import pytest

from lila.errors import LilaError, ModelFormatError, UnsupportedError
from lila.tokenizer import StreamDecoder, Tokenizer
from lila.tokenizer.spm import merges_from_scores
from lila.tokenizer.vocab import CONTROL, USER_DEFINED
from tok_fixtures import gemma3_tok, smollm2_tok, spm_case, spm_model, tok_case, tok_workdir  # noqa: F401 (fixtures)
from tokenizer_corpus import CORPUS


# Characters no test vocabulary has a whole token for: they come out in byte pieces.
RARE = "DNA \U0001f9ec, hieroglyph \U00013000, \ua66e"


def _mismatches(pairs):
    """The first few (input, ours, reference) that differ, for a readable failure."""
    return [p for p in pairs if p[1] != p[2]][:5]


def test_corpus_is_large_enough():
    assert len(CORPUS) >= 400


def test_encode_matches_reference(tok_case):
    ours, ref = tok_case.ours, tok_case.ref
    assert _mismatches((s, ours.encode(s, parse_special=True), ref.encode(s, add_special_tokens=False))
                       for s in CORPUS) == []


def test_gguf_reference_differs_only_next_to_numerals(tok_case):
    # transformers' GGUF loader drops the Digits step of "smollm"/"starcoder" vocabularies;
    # we keep it, as their tokenizer.json and llama.cpp do. Only text around a numeral can
    # differ: "½" alone, or whitespace before a digit ("\t\t3" splits as "\t\t" + "3").
    ours, ref = tok_case.ours, tok_case.gguf_ref
    differ = [s for s in CORPUS if ours.encode(s, parse_special=True) != ref.encode(s, add_special_tokens=False)]
    assert [s for s in differ if not any(c.isnumeric() for c in s)] == []


def test_encode_without_special_parsing_matches_reference(tok_case):
    ours, ref = tok_case.ours, tok_case.ref
    assert _mismatches(
        (s, ours.encode(s), ref(s, add_special_tokens=False, split_special_tokens=True)["input_ids"])
        for s in CORPUS) == []


def test_add_special_matches_reference(tok_case):
    ours, ref = tok_case.ours, tok_case.ref
    assert _mismatches((s, ours.encode(s, add_special=True, parse_special=True), ref.encode(s))
                       for s in CORPUS[:100]) == []


def test_special_text_is_one_token_only_when_parsed(tok_case):
    ours = tok_case.ours
    eos = ours.token_bytes(ours.eos_id).decode()
    parsed, plain = ours.encode(eos, parse_special=True), ours.encode(eos)
    assert parsed == [ours.eos_id] and ours.is_special(parsed[0])
    assert len(plain) > 1 and not any(ours.is_special(i) for i in plain)


def test_every_id_is_inside_the_vocabulary(tok_case):
    # tokenizers gives an added token that the model's table lacks a fresh id past the end
    # (Gemma's runs of spaces once came out as 262144+): every text that is matched whole,
    # and the whole corpus, parsed both ways.
    ours, metadata = tok_case.ours, tok_case.metadata
    tokens, types = metadata["tokenizer.ggml.tokens"], metadata["tokenizer.ggml.token_type"]
    assert ours.vocab_size == len(tokens)
    added = [t for t, kind in zip(tokens, types) if kind in (CONTROL, USER_DEFINED)]
    assert added
    outside = [(s, ids) for s in CORPUS + added for parse in (False, True)
               for ids in [ours.encode(s, parse_special=parse)] if not all(0 <= i < len(tokens) for i in ids)]
    assert outside[:5] == []


def test_decode_matches_reference(tok_case):
    ours, ref = tok_case.ours, tok_case.ref
    for skip in (False, True):
        assert _mismatches((s, ours.decode(ids, skip_special=skip), ref.decode(ids, skip_special_tokens=skip))
                           for s in CORPUS for ids in [ours.encode(s, parse_special=True)]) == []


def _expected_roundtrip(tok: Tokenizer, text: str) -> str:
    # A sentencepiece dummy prefix becomes the text's leading space, which decoding drops.
    return text[1:] if tok.strips_leading_space and text.startswith(" ") else text


def test_decode_encode_roundtrip(tok_case):
    tok = tok_case.ours
    for parse in (False, True):
        assert _mismatches((s, tok.decode(tok.encode(s, parse_special=parse)), _expected_roundtrip(tok, s))
                           for s in CORPUS) == []


def test_stream_decoder_never_splits_a_character(tok_case):
    tok = tok_case.ours
    held_back = 0
    for text in CORPUS + [RARE]:
        ids = tok.encode(text, parse_special=True)
        stream = StreamDecoder(tok)
        pieces = [stream.push(i) for i in ids] + [stream.flush()]
        for piece in pieces:
            assert "\ufffd" not in piece or "\ufffd" in text, (text, pieces)
            assert not any(0xD800 <= ord(c) <= 0xDFFF for c in piece), (text, pieces)
        assert "".join(pieces) == tok.decode(ids, skip_special=True), text
        held_back += text == RARE and any(p == "" for p in pieces[:-1])
    assert held_back  # some token of RARE ended inside a character, and was held back


def test_stream_decoder_keeps_special_tokens_when_asked(smollm2_tok):
    tok = smollm2_tok.ours
    ids = tok.encode("<|im_start|>assistant\nHi 😀<|im_end|>", parse_special=True)
    stream = StreamDecoder(tok, skip_special=False)
    assert "".join(stream.push(i) for i in ids) + stream.flush() == "<|im_start|>assistant\nHi 😀<|im_end|>"


def test_stream_decoder_flush_replaces_an_unfinished_character(smollm2_tok):
    tok = smollm2_tok.ours
    ids = tok.encode("😀")
    assert len(ids) > 1
    stream = StreamDecoder(tok)
    assert stream.push(ids[0]) == ""
    assert stream.flush() == "\ufffd"


def test_smollm2_metadata(smollm2_tok):
    tok = smollm2_tok.ours
    assert tok.vocab_size == 49152
    assert (tok.bos_id, tok.eos_id, tok.add_bos) == (1, 2, False)
    assert {0, 2} <= tok.eot_ids  # <|endoftext|> and <|im_end|>
    assert tok.is_special(1) and not tok.is_special(19556)
    assert tok.token_bytes(216) == b" " and tok.token_bytes(1) == b"<|im_start|>"
    assert tok.encode("Hello world 12345") == [19556, 905, 216, 33, 34, 35, 36, 37]


def test_token_bytes_of_sentencepiece(spm_case):
    tok = spm_case.ours
    assert tok.token_bytes(spm_case.metadata["tokenizer.ggml.tokens"].index("<0x41>")) == b"A"
    assert b"".join(tok.token_bytes(i) for i in tok.encode("a b")).endswith(b"a b")


def test_sentencepiece_defaults(spm_case):
    tok = spm_case.ours
    assert tok.add_bos and not tok.add_eos  # llama.cpp and transformers default
    assert tok.strips_leading_space == (spm_case.name == "spm-llama")  # Gemma adds no dummy prefix
    assert tok.encode("hi", add_special=True)[0] == tok.bos_id


# spm-llama only: the sentencepiece model was trained with a dummy prefix, which Gemma
# files do not use.
@pytest.mark.parametrize("spm_case", ["spm-llama"], indirect=True)
def test_sentencepiece_itself_agrees_on_plain_text(spm_case, spm_model):
    # An independent check of the merges rebuilt from scores: the sentencepiece model the
    # file came from. It differs by design only on a leading space (no second "▁") and on
    # special-token text, which sentencepiece does not parse.
    tok = spm_case.ours
    plain = [s for s in CORPUS if not s.startswith(" ") and "<" not in s]
    assert len(plain) > 300
    assert _mismatches((s, tok.encode(s), spm_model.encode(s)) for s in plain) == []


@pytest.mark.parametrize("coarsen", [1, 50, None])
def test_merges_from_scores_rank_as_transformers(spm_case, coarsen):
    # Coarser scores make many ties, where only the tie-breaking order decides.
    from transformers.tokenization_utils_base import generate_merges
    tokens = spm_case.metadata["tokenizer.ggml.tokens"]
    scores = [0.0 if coarsen is None else round(float(x) / coarsen) for x in spm_case.metadata["tokenizer.ggml.scores"]]
    table, ranks = {t: i for i, t in enumerate(tokens)}, dict(zip(tokens, scores))
    assert merges_from_scores(table, ranks) == generate_merges(table, ranks)


# --- metadata errors -------------------------------------------------------------------

def _tiny(**changes):
    tokens = ["<s>", "</s>", "a", "b", "ab", "Ġ", "Ġab"]
    meta = {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "qwen2", "tokenizer.ggml.tokens": tokens,
            "tokenizer.ggml.token_type": np.array([3, 3, 1, 1, 1, 1, 1], np.int32),
            "tokenizer.ggml.merges": ["a b", "Ġ ab"], "tokenizer.ggml.bos_token_id": 0,
            "tokenizer.ggml.eos_token_id": 1}
    meta.update(changes)
    return {k: v for k, v in meta.items() if v is not None}


def test_tiny_vocabulary_works():
    tok = Tokenizer.from_gguf_metadata(_tiny())
    assert tok.encode("ab ab") == [4, 6]
    assert tok.encode("<s>ab", parse_special=True) == [0, 4]
    assert tok.decode([0, 4, 6], skip_special=True) == "ab ab"


@pytest.mark.parametrize("model", ["bert", "rwkv", "t5", "plamo2"])
def test_unknown_tokenizer_model_is_named(model):
    with pytest.raises(UnsupportedError, match=model):
        Tokenizer.from_gguf_metadata(_tiny(**{"tokenizer.ggml.model": model}))


def test_unknown_pre_tokenizer_is_named():
    with pytest.raises(UnsupportedError, match="deepseek-llm"):
        Tokenizer.from_gguf_metadata(_tiny(**{"tokenizer.ggml.pre": "deepseek-llm"}))


@pytest.mark.parametrize("changes, message", [
    ({"tokenizer.ggml.model": None}, "tokenizer.ggml.model"),
    ({"tokenizer.ggml.tokens": None}, "tokenizer.ggml.tokens"),
    ({"tokenizer.ggml.tokens": []}, "tokenizer.ggml.tokens"),
    ({"tokenizer.ggml.merges": None}, "merges"),
    ({"tokenizer.ggml.merges": ["ab"]}, "merges"),
    ({"tokenizer.ggml.merges": ["a c"]}, "merges"),
    ({"tokenizer.ggml.bos_token_id": 7}, "bos_token_id"),
    ({"tokenizer.ggml.eos_token_id": -1}, "eos_token_id"),
    ({"tokenizer.ggml.token_type": np.array([1, 1], np.int32)}, "token_type"),
    ({"tokenizer.ggml.bos_token_id": None, "tokenizer.ggml.add_bos_token": True}, "add_bos_token"),
    ({"tokenizer.ggml.model": "llama", "tokenizer.ggml.merges": None}, "scores"),
    ({"tokenizer.ggml.model": "llama", "tokenizer.ggml.scores": np.zeros(3, np.float32)}, "scores"),
])
def test_inconsistent_metadata_is_a_format_error(changes, message):
    with pytest.raises(ModelFormatError, match=message):
        Tokenizer.from_gguf_metadata(_tiny(**changes))


@pytest.mark.parametrize("key, value, says", [
    # As the GGUF reader gives them: numeric arrays as numpy arrays, string arrays as lists.
    ("tokenizer.ggml.bos_token_id", np.array([0, 1], np.uint32), "is not an integer (it is an array of 2 uint32)"),
    ("tokenizer.ggml.eos_token_id", np.array([1], np.int32), "is not an integer (it is an array of 1 int32)"),
    ("tokenizer.ggml.eos_token_id", 1.0, "is not an integer (it is a float)"),
    ("tokenizer.ggml.bos_token_id", True, "is not an integer (it is a bool)"),
    ("tokenizer.ggml.eot_token_id", ["<s>"], "is not an integer (it is an array of 1)"),
    ("tokenizer.ggml.add_bos_token", np.array([True, False]), "is not a bool (it is an array of 2 bool)"),
    ("tokenizer.ggml.add_eos_token", 1, "is not a bool (it is an int)"),
    ("tokenizer.ggml.add_space_prefix", "yes", "is not a bool (it is a str)"),
    ("tokenizer.ggml.model", np.array([1, 2], np.uint8), "is not a string (it is an array of 2 uint8)"),
    ("tokenizer.ggml.pre", ["qwen2"], "is not a string (it is an array of 1)"),
    ("general.architecture", 7, "is not a string (it is an int)"),
    # Found by the fuzzer (tests/fuzz.py, gguf seed 22516): int(inf) raised OverflowError.
    ("tokenizer.ggml.token_type", np.full(7, np.inf, np.float32),
     "is not an array of integers (it is an array of 7 float32)"),
    ("tokenizer.ggml.token_type", np.ones(7, bool), "is not an array of integers (it is an array of 7 bool)"),
    ("tokenizer.ggml.token_type", [[1, 2]] * 7, "is not an array of integers (it is an array of 7)"),
    ("tokenizer.ggml.token_type", "1111111", "is not an array of integers (it is a str)"),
    ("tokenizer.ggml.scores", ["0"] * 7, "is not an array of numbers (it is an array of 7)"),
])
def test_metadata_of_the_wrong_type_is_a_format_error(key, value, says):
    # Each was a TypeError or ValueError traceback (an array's truth value, int() of an array).
    with pytest.raises(ModelFormatError) as caught:
        Tokenizer.from_gguf_metadata(_tiny(**{key: value}))
    assert str(caught.value) == f"{key} {says}"


def test_padding_id_past_the_vocabulary_is_ignored():
    # As llama.cpp: files name a pad token that was never written into the vocabulary.
    tok = Tokenizer.from_gguf_metadata(_tiny(**{"tokenizer.ggml.padding_token_id": 99}))
    assert tok.vocab_size == 7


@pytest.mark.parametrize("pre, flag, expected", [
    ("llama-bpe", None, True), ("qwen2", None, False), ("llama-bpe", False, False), ("qwen2", True, True)])
def test_add_bos_default_follows_llama_cpp(pre, flag, expected):
    tok = Tokenizer.from_gguf_metadata(_tiny(**{"tokenizer.ggml.pre": pre, "tokenizer.ggml.add_bos_token": flag}))
    assert tok.add_bos is expected
    assert (tok.encode("ab", add_special=True)[0] == 0) is expected


def test_text_with_a_lone_surrogate_is_refused():
    with pytest.raises(LilaError, match="surrogate U\\+D800 at offset 1"):
        Tokenizer.from_gguf_metadata(_tiny()).encode("a\ud800b")


def test_decode_rejects_ids_outside_the_vocabulary():
    tok = Tokenizer.from_gguf_metadata(_tiny())
    with pytest.raises(ValueError, match="outside"):
        tok.decode([2, 7])
    with pytest.raises(ValueError, match="outside"):
        tok.token_bytes(-1)

