"""Arguments from callers (the API, the command line, sampling settings), checked before
use: a wrong one is a LilaError that names it, never a TypeError from deep inside."""
from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from lila.errors import LilaError


def check_type(name: str, value: Any, kind: type | tuple[type, ...], what: str, *,
               optional: bool = False) -> None:
    if not ((value is None and optional) or isinstance(value, kind)):
        raise LilaError(f"{name} must be {what}, not {shown(value)}")


def check_int(name: str, value: Any, low: int, high: int | None = None, *,
              optional: bool = False, note: str = "") -> None:
    """An int (numpy's too, never a bool or a float) in low..high. note: what a value
    means, said with the bounds (" (0: off)")."""
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise LilaError(f"{name} must be a whole number, not {shown(value)}")
    if value < low or (high is not None and value > high):
        bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise LilaError(f"{name} must be {bounds}{note}, not {value}")


def check_real(name: str, value: Any, in_range: Callable[[float], bool], expect: str) -> None:
    # NaN compares false with everything, so the range test alone would let it through.
    if (isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating))
            or not math.isfinite(value) or not in_range(value)):
        raise LilaError(f"{name} must be a number {expect}, not {shown(value)}")


def shown(value: Any) -> str:
    """A value in a message: its type and the start of its repr."""
    text = repr(value)
    return f"{type(value).__name__} {text[:40] + '...' if len(text) > 40 else text}"
