"""Text from outside, to and from the terminal.

Bytes that are not valid in their encoding never end a command: Python decodes
command-line arguments with surrogateescape, and stdin either that way or strictly (a
UnicodeDecodeError, in a UTF-8 locale). accept_any_stdin() makes stdin surrogateescape
too; decoded() then turns the escaped bytes of one text into U+FFFD, saying so on stderr,
since the tokenizer refuses lone surrogates. (A string from a model file is printed
through lila.errors.one_line, so that it cannot move the cursor, color the terminal or
forge a line.)
"""
from __future__ import annotations

import io
import sys


def accept_any_stdin() -> None:
    if isinstance(sys.stdin, io.TextIOWrapper):
        sys.stdin.reconfigure(errors="surrogateescape")


def decoded(text: str, what: str, encoding: str | None) -> str:
    """text with each undecodable byte (a lone surrogate) replaced by U+FFFD. what: the text
    in words, for the note ("the line"); encoding: the one it was decoded with."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        encoding = encoding or "utf-8"      # a stand-in stdin (StringIO) has none
        print(f"({what} holds bytes that are not {encoding}: each became \ufffd)", file=sys.stderr)
        return text.encode(encoding, "surrogateescape").decode(encoding, "replace")


def decoded_argument(text: str | None, what: str) -> str | None:
    """A command-line argument (None stays None), decoded as decoded() does."""
    return None if text is None else decoded(text, what, sys.getfilesystemencoding())
