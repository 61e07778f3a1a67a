"""One chat-template render's budget: its limits, its deadline, what it has built so far,
and estimates of what an operation would build, made from its operands before it runs.

lila.template_sandbox calls into this at every step of a render; its docstring says how
the bounds hold together.
"""
from __future__ import annotations

import codecs
import contextlib
import contextvars
import operator
import sys
import time
from collections.abc import ItemsView, Iterator, KeysView, Mapping, ValuesView
from dataclasses import dataclass
from typing import Any, Callable

import jinja2.nodes as nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment


@dataclass(frozen=True)
class TemplateLimits:
    """What one render of a chat template may use; a template that tries more stops with an
    error. Real templates use a small fraction of each: a few ms, and a few times the size of
    the conversation (tests/test_chat_template.py measures them)."""

    seconds: float = 2.0      # wall-clock time of one render
    size: int = 1 << 20       # characters of any one value it builds, the prompt included
    memory: int = 128 << 20   # bytes (about) of everything one render builds, all together
    source: int = 64 << 10    # characters of template source (each costs ~10 us and ~2 KB to compile)


INT_BITS = 1 << 16         # the largest number a template may compute, in bits
DEPTH = 100                # the deepest a template may nest lists, tuples and dicts
COLLISIONS = 16            # distinct keys of one hash that a dict or set may be given


class Budget:
    """One render's deadline and what it has built so far."""

    __slots__ = ("limits", "deadline", "built", "sizes")

    def __init__(self, limits: TemplateLimits):
        self.limits = limits
        self.deadline = time.monotonic() + limits.seconds
        self.built = 0
        # id -> (container, size, depth): each list, tuple or dict measured once. Holding the
        # container keeps its id its own until the render ends; templates cannot mutate
        # containers (the immutable sandbox), so a size stays right.
        self.sizes: dict[int, tuple[Any, int, int]] = {}

    def tick(self) -> None:
        if time.monotonic() > self.deadline:
            raise SecurityError(f"stopped after {self.limits.seconds:g} s, its time limit")

    def check_size(self, size: int) -> None:
        if size > self.limits.size:
            raise SecurityError(f"would build a value of more than {self.limits.size} characters, "
                                "its size limit")

    def charge(self, nbytes: int) -> None:
        self.built += nbytes
        if self.built > self.limits.memory:
            raise SecurityError(f"builds more than {self.limits.memory >> 20} MiB in all, its memory limit")

    def size_of(self, value: Any) -> int:
        """The length of value's text, about (a container's counts everything in it); once
        that passes the size limit, any larger number (it stops measuring)."""
        return self.measure(value)[0]

    def measure(self, value: Any) -> tuple[int, int]:
        """(size_of(value), how deep its containers nest)."""
        if isinstance(value, str):
            return len(value), 0
        if isinstance(value, bytes):
            return 4 * len(value), 0   # as repr() writes it: \xNN
        if isinstance(value, int):
            return value.bit_length() // 3 + 2, 0
        if isinstance(value, float) or value is None:
            return 24, 0
        if not isinstance(value, (list, tuple, dict, KeysView, ValuesView, ItemsView)):
            return 64, 0   # namespaces, loops, macros, iterators, ranges: a short fixed text
        known = self.sizes.get(id(value))
        if known is not None and known[0] is value:
            return known[1], known[2]
        total, depth = 2, 0
        for item in (value.items() if isinstance(value, dict) else value):
            size, inner = self.measure(item)
            total, depth = total + size + 2, max(depth, inner)
            if total > self.limits.size:
                return total, depth
        if isinstance(value, (list, tuple, dict)):
            self.sizes[id(value)] = (value, total, depth + 1)
        return total, depth + 1

    def new(self, value: Any, known: tuple[int, int] | None = None) -> Any:
        """value, just built by the template (known: its measure() where the caller knows
        it): refused if too large or too deep, else counted against the memory limit."""
        size, depth = self.measure(value) if known is None else known
        self.check_size(size)
        if depth > DEPTH:
            # Hashing a tuple recurses in C without a guard: a deep one crashes Python.
            raise SecurityError(f"nests values more than {DEPTH} deep")
        if isinstance(value, int) and value.bit_length() > INT_BITS:
            raise SecurityError(f"computes a number of more than {INT_BITS} bits")
        if isinstance(value, (str, bytes, list, tuple, dict)):
            self.charge(sys.getsizeof(value))
            if known is not None and not isinstance(value, (str, bytes)):
                self.sizes[id(value)] = (value, size, depth)
        return value


_CURRENT: contextvars.ContextVar[Budget | None] = contextvars.ContextVar("lila_template_budget",
                                                                       default=None)


@contextlib.contextmanager
def running(limits: TemplateLimits) -> Iterator[None]:
    """The budget of one render, for the code inside the with block (in this thread)."""
    token = _CURRENT.set(Budget(limits))
    try:
        yield
    finally:
        _CURRENT.reset(token)


def active() -> Budget:
    """The budget of the render under way."""
    budget = _CURRENT.get()
    if budget is None:
        # Only jinja2's constant folding calls a hook outside a render: it catches this and
        # leaves the expression to run, bounded, at render time.
        raise nodes.Impossible()
    return budget


# --- estimates: what an operation would build, from its operands, before it runs --------

_SEQUENCES = (str, bytes, list, tuple)


def _repeat(budget: Budget, seq: Any, n: Any) -> tuple[int, int] | None:
    """measure() of seq * n, or None if that is not a repetition."""
    if isinstance(n, int) and isinstance(seq, _SEQUENCES):
        size, depth = budget.measure(seq)
        return size * max(n, 0), depth
    return None


def _percent_specs(fmt: str):
    """(mapping key or None, width, precision, conversion) of each % conversion in fmt, as
    Python reads them (a key may hold nested parentheses, so no regular expression)."""
    i, n = 0, len(fmt)
    while 0 < (i := fmt.find("%", i) + 1) < n:
        key = None
        if fmt[i] == "(":
            depth, start = 0, i + 1
            while i < n:
                depth += {"(": 1, ")": -1}.get(fmt[i], 0)
                i += 1
                if depth == 0:
                    break
            key = fmt[start:i - 1]
        while i < n and fmt[i] in "-+ #0":
            i += 1
        width, i = _spec_number(fmt, i)
        precision = ""
        if fmt.startswith(".", i):
            precision, i = _spec_number(fmt, i + 1)
        while i < n and fmt[i] in "hlL":
            i += 1
        yield key, width, precision, fmt[i:i + 1]
        i += 1


def _spec_number(fmt: str, i: int) -> tuple[str, int]:
    """The width or precision at fmt[i:] ('*', digits or ''), and the index after it."""
    if fmt.startswith("*", i):
        return "*", i + 1
    j = i
    while j < len(fmt) and fmt[j] in "0123456789":
        j += 1
    return fmt[i:j], j


def percent_size(budget: Budget, fmt: Any, args: Any) -> int:
    """An upper bound on the length of `fmt % args`: its text, every width and precision,
    and every argument each time a conversion takes it."""
    text = fmt.decode("latin-1") if isinstance(fmt, bytes) else str(fmt)
    positional = list(args) if isinstance(args, tuple) else [args]
    total, taken = len(text), 0
    for count, (key, width, precision, kind) in enumerate(_percent_specs(text)):
        if count % 4096 == 4095:
            budget.tick()
        if kind == "%":
            continue
        for field in (width, precision):
            if field == "*":
                value = positional[taken] if taken < len(positional) else 0
                taken += 1
                total += value if isinstance(value, int) and value > 0 else 0
            elif field:
                total += int(field) if len(field) < 10 else budget.limits.size + 1
        if key is None:
            value = positional[taken] if taken < len(positional) else None
            taken += 1
        else:
            try:
                value = args[key]
            except Exception:   # Python's own % reports it
                value = None
        total += budget.size_of(value)
        budget.check_size(total)
    return total


def binop(budget: Budget, op: str, left: Any, right: Any) -> Any:
    """left op right, for a template (the sandbox intercepts every operator): refused before
    it runs if it would build too much."""
    known = None
    if op == "*":
        known = _repeat(budget, left, right) or _repeat(budget, right, left)
        if isinstance(left, int) and isinstance(right, int) and \
                left.bit_length() + right.bit_length() > INT_BITS:
            raise SecurityError(f"computes a number of more than {INT_BITS} bits")
    elif op == "+" and isinstance(left, _SEQUENCES) and isinstance(right, _SEQUENCES):
        (size, depth), (other, other_depth) = budget.measure(left), budget.measure(right)
        known = size + other, max(depth, other_depth)
    elif op == "%" and isinstance(left, (str, bytes)):
        budget.check_size(percent_size(budget, left, right))
    elif op == "**" and isinstance(left, int) and isinstance(right, int) and \
            right * max(left.bit_length(), 2) > INT_BITS:
        raise SecurityError(f"computes a number of more than {INT_BITS} bits")
    if known is not None:
        budget.check_size(known[0])   # before building it
    result = ImmutableSandboxedEnvironment.default_binop_table[op](left, right)
    return budget.new(result, known if isinstance(result, (list, tuple)) else None)


def distinct_hashes(keys: Any) -> None:
    """Refuses keys of which many differ but hash alike. Numbers hash to themselves modulo
    2**61 - 1, not at random: a set or dict of 100000 multiples of it costs 5e9 probes, in
    one call that no hook interrupts."""
    groups: dict[int, list] = {}
    for key in keys:
        group = groups.setdefault(hash(key), [])
        if key not in group:
            if len(group) == COLLISIONS:
                raise SecurityError("uses many values that hash alike")
            group.append(key)


def materialized(value: Any) -> Any:
    """An iterable that an estimate and then the operation itself both read, as a list."""
    return value if isinstance(value, (str, list, tuple)) else list(value)


def replace_size(budget: Budget, s: Any, old: Any, new: Any, count: Any = -1) -> int:
    text = s if isinstance(s, (str, bytes)) else str(s)
    times = len(text) + 1 if not old else text.count(old)
    if count is not None and operator.index(count) >= 0:
        times = min(times, count)
    return len(text) + times * budget.size_of(new)


def join_size(budget: Budget, separator: Any, items: Any, per_item: int = 0) -> int:
    total = budget.size_of(separator) * max(len(items) - 1, 0)
    for item in items:
        total += budget.size_of(item) + per_item
        if total > budget.limits.size:
            break
    return total


def _codec_size(b: Budget, text: Any, encoding: str = "utf-8", errors: str = "strict") -> int:
    name = codecs.lookup(encoding).name
    if name in ("punycode", "idna"):   # pure Python, quadratic in the text's length
        raise SecurityError(f"the {name} codec is not allowed")
    return len(text) * (64 if errors == "namereplace" else 10)   # \N{...} names, \U escapes


# Methods of str, bytes and Markup (and int.to_bytes, dict.fromkeys) that can build more
# than they are given, or take long: name -> the size of what they would build, from
# (budget, the object, its arguments).
METHOD_SIZES: dict[str, Callable[..., int]] = {
    "center": lambda b, s, width, *_: max(len(s), operator.index(width)),
    "ljust": lambda b, s, width, *_: max(len(s), operator.index(width)),
    "rjust": lambda b, s, width, *_: max(len(s), operator.index(width)),
    "zfill": lambda b, s, width: max(len(s), operator.index(width)),
    "expandtabs": lambda b, s, tabsize=8: len(s) + s.count("\t" if isinstance(s, str) else b"\t")
    * max(operator.index(tabsize), 0),
    "replace": replace_size,
    "join": lambda b, s, items: join_size(b, s, items),
    "translate": lambda b, s, table, *_: len(s) * max(
        (len(v) for v in (table.values() if isinstance(table, Mapping) else table)
         if isinstance(v, (str, bytes))), default=1),
    "to_bytes": lambda b, n, length=1, *_, **__: operator.index(length),
    "fromkeys": lambda b, d, keys, value=None: distinct_hashes(keys) or len(keys) * (b.size_of(value) + 4),
    "encode": _codec_size,
    "decode": _codec_size,
}
