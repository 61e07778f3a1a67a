"""Text to token ids and back, for the vocabulary a GGUF file carries.

The work is done by HF `tokenizers` (Rust), assembled from the metadata the way
transformers assembles it, so that our ids are the reference's ids. This module adds
what the engine needs around it: BOS/EOS as the model wants them, which ids end a turn,
and the raw bytes of each token for streaming.
"""
from __future__ import annotations

import operator
import re
import threading
from typing import Any, Sequence

from tokenizers import AddedToken

from lila.errors import LilaError, ModelFormatError
from lila.tokenizer.bpe import bpe_token_bytes, build_bpe
from lila.tokenizer.pretokenizers import pre_tokenizer
from lila.tokenizer.spm import build_spm, dummy_prefix, spm_token_bytes
from lila.tokenizer.vocab import Vocab, read_vocab

_SURROGATE = re.compile("[\ud800-\udfff]")


class Tokenizer:
    """A GGUF vocabulary: byte-level BPE ("gpt2") or sentencepiece-style ("llama").

    vocab_size, bos_id, eos_id: from the metadata (ids may be None).
    eot_ids: every id that ends a turn (eos, eot, eom, and tokens such as <|im_end|>).
    add_bos / add_eos: what `encode(add_special=True)` adds; tokenizer.ggml.add_bos_token,
        else llama.cpp's default: on for sentencepiece and the Llama-3 family, off otherwise.
    strips_leading_space: decoding drops the space that the dummy prefix added (sentencepiece).
    """

    def __init__(self, vocab: Vocab):
        self.vocab_size = len(vocab.tokens)
        self.kind = "byte-level BPE" if vocab.model == "gpt2" else "sentencepiece"
        self.kind += f" ({vocab.model}" + (f", pre {vocab.pre})" if vocab.model == "gpt2" else ")")
        self.bos_id, self.eos_id, self.eot_ids = vocab.bos_id, vocab.eos_id, vocab.eot_ids
        self._tokens = vocab.tokens
        self._special = vocab.special_ids
        added = vocab.added_tokens()
        if vocab.model == "gpt2":
            self._backend = build_bpe(vocab, frozenset(i for i, _, _ in added))
            self._bytes_of = bpe_token_bytes
            default_bos = pre_tokenizer(vocab.pre).add_bos
            self.strips_leading_space = False
        else:
            self._backend = build_spm(vocab)
            self._bytes_of = spm_token_bytes
            default_bos = True
            self.strips_leading_space = dummy_prefix(vocab)
        # tokenizers gives an added token whose text is not in the model's table a fresh id
        # past the vocabulary. Such are the user-defined tokens a builder respelled (Gemma's
        # runs of spaces, runs of "▁" in its table): they stay model tokens, reached by
        # merges, as in transformers, which adds only the user-defined tokens in the table.
        added = [(i, text, special) for i, text, special in added
                 if self._backend.token_to_id(text) == i]
        self._added = frozenset(i for i, _, _ in added)
        self._backend.add_special_tokens([_added(text, True) for _, text, special in added if special])
        self._backend.add_tokens([_added(text, False) for _, text, special in added if not special])
        self.add_bos = _add_flag(vocab.add_bos, default_bos, vocab.bos_id, "bos")
        self.add_eos = _add_flag(vocab.add_eos, False, vocab.eos_id, "eos")
        # encode() sets the backend's special-token switch per call; the lock keeps two
        # threads from encoding under each other's setting.
        self._lock = threading.Lock()

    @classmethod
    def from_gguf_metadata(cls, metadata: dict[str, Any]) -> "Tokenizer":
        """Raises UnsupportedError for a tokenizer type or pre-tokenizer Lila does not know,
        ModelFormatError for metadata that contradicts itself."""
        return cls(read_vocab(metadata))

    def encode(self, text: str, *, add_special: bool = False, parse_special: bool = False) -> list[int]:
        """Token ids of text. add_special: add BOS/EOS as the model's metadata says.
        parse_special: text such as "<|im_start|>" becomes that control token; otherwise it
        is tokenized as plain text (user-defined tokens like <think> are matched either way)."""
        with self._lock:
            self._backend.encode_special_tokens = not parse_special
            try:
                ids = self._backend.encode(text, add_special_tokens=False).ids
            except TypeError:
                _refuse(text)
                raise
        if add_special:
            ids = [self.bos_id] * self.add_bos + ids + [self.eos_id] * self.add_eos
        return ids

    def decode(self, ids: Sequence[int], *, skip_special: bool = False) -> str:
        ids = [self._check(i) for i in ids]
        return self._backend.decode(ids, skip_special_tokens=skip_special)

    def token_bytes(self, id: int) -> bytes:
        """The raw bytes of one token; a piece of a multi-byte character may be only part of one."""
        id = self._check(id)
        return self._bytes_of(self._tokens[id], id in self._added)

    def is_special(self, id: int) -> bool:
        return id in self._special

    def _check(self, id: int) -> int:
        id = operator.index(id)  # numpy integers too, but never a float
        if not 0 <= id < self.vocab_size:
            raise ValueError(f"token id {id} is outside the vocabulary of {self.vocab_size}")
        return id


def _refuse(text: Any) -> None:
    """Say why tokenizers refused a str: one with lone surrogates (from bytes decoded with
    errors="surrogateescape") is not Unicode text, and has no UTF-8 to tokenize."""
    if isinstance(text, str) and (m := _SURROGATE.search(text)):
        raise LilaError(f"the text holds a lone surrogate U+{ord(m.group()):04X} at offset {m.start()}, "
                        f"which is not valid Unicode")


def _added(text: str, special: bool) -> AddedToken:
    # Matched on the raw text, exactly: no stripping of neighbours, no normalization.
    return AddedToken(text, special=special, normalized=False, lstrip=False, rstrip=False,
                      single_word=False)


def _add_flag(flag: bool | None, default: bool, token: int | None, name: str) -> bool:
    if flag is None:
        return default and token is not None
    if flag and token is None:
        raise ModelFormatError(f"tokenizer.ggml.add_{name}_token is set but there is no "
                               f"tokenizer.ggml.{name}_token_id")
    return flag
