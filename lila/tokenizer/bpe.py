"""Byte-level BPE (`tokenizer.ggml.model == "gpt2"`): GPT-2, Llama-3, Qwen2, SmolLM, ...

Tokens are spelled in GPT-2's byte alphabet: each of the 256 byte values stands for one
printable character ("Ġ" is the space byte), so any byte string is a string of tokens.
"""
from __future__ import annotations

from tokenizers import Tokenizer, decoders, models

from lila.errors import ModelFormatError
from lila.tokenizer.pretokenizers import pre_tokenizer
from lila.tokenizer.vocab import Vocab


def _byte_alphabet() -> dict[int, str]:
    """GPT-2's bytes_to_unicode: printable latin-1 bytes stand for themselves, the other
    68 byte values for the characters from U+0100 on."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    extra = iter(range(256, 512))
    return {b: chr(b) if b in printable else chr(next(extra)) for b in range(256)}


BYTE_ALPHABET = _byte_alphabet()
_LETTERS = frozenset(BYTE_ALPHABET.values())
# For str.translate: each letter to the code point of its byte, so .encode("latin-1")
# then gives the bytes.
_UNSPELL = {ord(ch): b for b, ch in BYTE_ALPHABET.items()}


def _spell(text: str) -> str:
    return "".join(BYTE_ALPHABET[b] for b in text.encode("utf-8"))


def build_bpe(vocab: Vocab, added: frozenset[int]) -> Tokenizer:
    """The HF tokenizer for a byte-level vocabulary. `added` are the ids matched whole in
    the text (special and user-defined tokens), which keep their text as it is."""
    pre = pre_tokenizer(vocab.pre)
    # Some converters store a normal token as plain text instead of in the byte alphabet;
    # respell it, as transformers does, so that merges reach it. Added tokens are matched
    # as text and stay as they are (llama.cpp does the same).
    table = {}
    for i, token in enumerate(vocab.tokens):
        if i not in added and not _LETTERS.issuperset(token):
            token = _spell(token)
        table[token] = i
    try:
        model = models.BPE(table, vocab.merge_pairs(), ignore_merges=pre.ignore_merges)
    except Exception as e:  # tokenizers reports a merge of unknown tokens as a plain Exception
        raise ModelFormatError(f"the BPE merges do not fit the vocabulary: {e}") from None
    tokenizer = Tokenizer(model)
    tokenizer.pre_tokenizer = pre.build()
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def bpe_token_bytes(token: str, is_added: bool) -> bytes:
    """The bytes one token stands for: added tokens are their text, the others are
    spelled in the byte alphabet (or, when a converter left them plain, their text)."""
    if not is_added and _LETTERS.issuperset(token):
        return token.translate(_UNSPELL).encode("latin-1")
    return token.encode("utf-8")
