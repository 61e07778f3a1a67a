"""Incremental detokenization: text as tokens arrive, never a split UTF-8 character.

A token can be a fragment of a character (byte-level BPE splits an emoji over several
tokens, sentencepiece falls back to <0xF0> <0x9F> ...), so we collect bytes and let
Python's incremental UTF-8 decoder hold back an unfinished sequence.
"""
from __future__ import annotations

import codecs

from lila.tokenizer.tokenizer import Tokenizer


class StreamDecoder:
    """push() each generated id, then flush() once at the end. The pieces joined equal
    tokenizer.decode(ids, skip_special=...) for any ids that decode to valid UTF-8."""

    def __init__(self, tokenizer: Tokenizer, *, skip_special: bool = True):
        self._tokenizer = tokenizer
        self._skip_special = skip_special
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        # decode() drops the dummy-prefix space in front of the text; so do we, once.
        self._strip_space = tokenizer.strips_leading_space

    def push(self, id: int) -> str:
        """The text that is complete after this token ("" while a character is unfinished)."""
        if self._skip_special and self._tokenizer.is_special(id):
            return ""
        data = self._tokenizer.token_bytes(id)
        if self._strip_space and data:
            self._strip_space = False
            if data.startswith(b" "):
                data = data[1:]
        return self._utf8.decode(data)

    def flush(self) -> str:
        """End of stream: what is left, an unfinished character becoming U+FFFD."""
        return self._utf8.decode(b"", final=True)
