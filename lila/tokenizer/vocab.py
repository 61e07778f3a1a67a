"""The tokenizer a GGUF file describes, read and checked from its metadata.

llama.cpp stores the vocabulary as parallel arrays under `tokenizer.ggml.*`: the token
strings, their types, their scores (sentencepiece) and the merges (BPE). Everything is
checked here, once, so the builders can trust what they get.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from lila.errors import ModelFormatError, UnsupportedError

# llama.cpp's token types (llama_token_type in llama.h).
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

SUPPORTED_MODELS = ("gpt2", "llama")

# Token texts that end a turn wherever a vocabulary has them, as llama.cpp's list of
# end-of-generation tokens: the metadata often names only one of them (SmolLM2 says
# eos = <|im_end|>, but its base model ends text with <|endoftext|>).
END_OF_TURN_TEXTS = frozenset({
    "<|eot_id|>", "<|eom_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>",
    "<end_of_turn>", "<|endoftext|>", "<EOT>", "_<EOT>", "<\uff5cend\u2581of\u2581sentence\uff5c>",
    "<end_of_utterance>",
})


@dataclass(frozen=True)
class Vocab:
    model: str                      # tokenizer.ggml.model: "gpt2" or "llama"
    pre: str                        # tokenizer.ggml.pre ("default" when absent)
    architecture: str               # general.architecture, some vocabularies depend on it
    tokens: list[str]
    token_types: list[int]
    scores: list[float] | None
    merges: list[str] | None
    bos_id: int | None
    eos_id: int | None
    unk_id: int | None
    pad_id: int | None
    eot_ids: frozenset[int]
    add_bos: bool | None            # None: the metadata does not say
    add_eos: bool
    add_space_prefix: bool | None   # None: the metadata does not say

    @cached_property
    def special_ids(self) -> frozenset[int]:
        """Ids the reference tokenizer treats as special: control tokens, and the ones the
        metadata names (transformers registers bos/eos/unk/pad as special tokens)."""
        named = {self.bos_id, self.eos_id, self.unk_id, self.pad_id} - {None}
        return frozenset(i for i, t in enumerate(self.token_types) if t == CONTROL) | named

    def merge_pairs(self) -> list[tuple[str, str]]:
        """The merges as (left, right). Cut at the first space after the first character,
        as llama.cpp does, so that a left token that is itself a space survives."""
        def cut(m: str) -> tuple[str, str]:
            i = m.find(" ", 1)
            return m[:i], m[i + 1:]
        # str.split is the fast path for the usual merge, which does not start with a space
        return [tuple(m.split(" ", 1)) if m[0] != " " else cut(m) for m in self.merges]

    def added_tokens(self) -> list[tuple[int, str, bool]]:
        """(id, text, special) of the tokens matched whole in the input text before the
        model sees it: special ones (only when special text is parsed), and user-defined
        ones like <think> (always, as in llama.cpp and transformers)."""
        special = self.special_ids
        return [(i, text, i in special) for i, text in enumerate(self.tokens)
                if i in special or self.token_types[i] == USER_DEFINED]


def read_vocab(metadata: dict[str, Any]) -> Vocab:
    model = _string(metadata, "tokenizer.ggml.model")
    if model is None:
        raise ModelFormatError("the model file has no tokenizer (tokenizer.ggml.model is missing)")
    if model not in SUPPORTED_MODELS:
        raise UnsupportedError(f"tokenizer type {model!r} (tokenizer.ggml.model) is not supported; "
                               f"Lila reads {', '.join(SUPPORTED_MODELS)}")
    tokens = _string_list(metadata, "tokenizer.ggml.tokens")
    if tokens is None or not tokens:
        raise ModelFormatError("tokenizer.ggml.tokens is missing or empty")
    n = len(tokens)
    types = _number_list(metadata, "tokenizer.ggml.token_type", n, int)
    scores = _number_list(metadata, "tokenizer.ggml.scores", n, float)
    merges = _string_list(metadata, "tokenizer.ggml.merges")
    if model == "gpt2" and merges is None:
        raise ModelFormatError("tokenizer.ggml.merges is missing: a BPE vocabulary needs its merges")
    if model == "llama" and merges is None and scores is None:
        raise ModelFormatError("a sentencepiece vocabulary needs tokenizer.ggml.scores or .merges")
    if merges is not None and any(m.find(" ", 1) < 0 for m in merges):
        bad = next(m for m in merges if m.find(" ", 1) < 0)
        raise ModelFormatError(f"tokenizer.ggml.merges holds {bad!r}, which is not two tokens")

    ids = {key: _token_id(metadata, f"tokenizer.ggml.{key}_token_id", n)
           for key in ("bos", "eos", "unknown", "eot", "eom")}
    # Files in the wild name a padding token past the end of the vocabulary (one added at
    # fine-tuning and never written); llama.cpp ignores it, and so do we: nothing pads.
    try:
        ids["padding"] = _token_id(metadata, "tokenizer.ggml.padding_token_id", n)
    except ModelFormatError:
        ids["padding"] = None
    eot = {ids["eos"], ids["eot"], ids["eom"]} - {None}
    eot |= {i for i, text in enumerate(tokens) if text in END_OF_TURN_TEXTS}
    return Vocab(
        model=model, pre=_string(metadata, "tokenizer.ggml.pre") or "default",
        architecture=_string(metadata, "general.architecture") or "",
        tokens=tokens, token_types=types or [NORMAL] * n, scores=scores, merges=merges,
        bos_id=ids["bos"], eos_id=ids["eos"], unk_id=ids["unknown"], pad_id=ids["padding"],
        eot_ids=frozenset(eot),
        add_bos=_flag(metadata, "tokenizer.ggml.add_bos_token"),
        add_eos=bool(_flag(metadata, "tokenizer.ggml.add_eos_token")),
        add_space_prefix=_flag(metadata, "tokenizer.ggml.add_space_prefix"),
    )


def _string_list(metadata: dict, key: str) -> list[str] | None:
    value = metadata.get(key)
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or set(map(type, value)) - {str}:
        raise ModelFormatError(f"{key} is not an array of strings")
    return list(value)


def _number_list(metadata: dict, key: str, n: int, kind: type) -> list | None:
    value = metadata.get(key)
    if value is None:
        return None
    # Token types must be integers (int(inf) would raise OverflowError, int(0.5) guess);
    # scores may be any numbers. Neither may be bools, strings or nested arrays.
    kinds, words = ("iu", "integers") if kind is int else ("iuf", "numbers")
    try:
        array = np.asarray(value)
    except ValueError:   # a ragged nested list
        array = None
    if array is None or array.ndim != 1 or array.dtype.kind not in kinds:
        raise ModelFormatError(f"{key} is not an array of {words} (it is {_kind(value)})")
    if len(array) != n:
        raise ModelFormatError(f"{key} has {len(array)} entries for {n} tokens")
    # tolist() first: converting numpy scalars one by one is several times slower.
    return [kind(v) for v in array.tolist()]


# The GGUF reader gives integer scalars as Python ints and arrays as numpy arrays or
# lists, so a type check is exact: a bool, a float or an array is never taken for an id.

def _token_id(metadata: dict, key: str, n: int) -> int | None:
    value = metadata.get(key)
    if value is None:
        return None
    if type(value) is not int:
        raise ModelFormatError(f"{key} is not an integer (it is {_kind(value)})")
    if not 0 <= value < n:
        raise ModelFormatError(f"{key} = {value} is outside the vocabulary of {n} tokens")
    return value


def _flag(metadata: dict, key: str) -> bool | None:
    value = metadata.get(key)
    if value is not None and type(value) is not bool:
        raise ModelFormatError(f"{key} is not a bool (it is {_kind(value)})")
    return value


def _string(metadata: dict, key: str) -> str | None:
    value = metadata.get(key)
    if value is not None and type(value) is not str:
        raise ModelFormatError(f"{key} is not a string (it is {_kind(value)})")
    return value


def _kind(value: Any) -> str:
    """What a metadata value is, in words: "an array of 2 int32", "a float"."""
    if hasattr(value, "dtype") and getattr(value, "ndim", 0) == 1:
        return f"an array of {len(value)} {value.dtype.name}"
    if isinstance(value, (list, tuple)):
        return f"an array of {len(value)}"
    name = type(value).__name__
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"
