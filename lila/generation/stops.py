"""Stop strings over streamed text.

Generated text arrives in pieces, and a stop string can straddle them ("<|end" then
"|>"). Whatever could still be the start of a stop string is held back until the next
piece decides it, so the user never sees part of a stop string.
"""
from __future__ import annotations

from typing import Sequence


class StopMatcher:
    """push() each piece of text as it is generated; flush() at the end if no stop came."""

    def __init__(self, stops: Sequence[str]):
        self.stops = [s for s in stops if s]   # an empty stop string cannot mean anything
        self.held = ""
        self.stopped = False

    def push(self, text: str) -> tuple[str, bool]:
        """(text safe to show now, whether a stop string has been reached). On a stop the
        text before it is returned and the stop string itself is dropped."""
        if self.stopped:
            return "", True
        buffer = self.held + text
        # Generation stops as soon as a stop string is complete, so the match that ends
        # first wins (the longer one if two end together), however the text was split.
        # Held text never contains a whole stop: these are the first matches in the stream.
        ends = [(i + len(s), -len(s)) for s in self.stops if (i := buffer.find(s)) >= 0]
        if ends:
            end, minus_length = min(ends)
            self.held, self.stopped = "", True
            return buffer[:end + minus_length], True
        keep = max((_overlap(buffer, s) for s in self.stops), default=0)
        self.held = buffer[len(buffer) - keep:]
        return buffer[:len(buffer) - keep], False

    def flush(self) -> str:
        """The held-back tail, once generation has ended without a stop."""
        tail, self.held = self.held, ""
        return "" if self.stopped else tail


def _overlap(text: str, stop: str) -> int:
    """Length of the longest end of text that is a proper beginning of stop."""
    for n in range(min(len(stop) - 1, len(text)), 0, -1):
        if text.endswith(stop[:n]):
            return n
    return 0
