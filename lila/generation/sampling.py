"""Choosing the next token from the logits, in the order of llama.cpp's default chain:

    repetition penalty -> top-k -> top-p -> min-p -> temperature -> softmax -> draw

with the end-of-turn tokens masked first when ignore_eos is set.

A vocabulary has ~150k entries and this runs once per generated token, so nothing here
sorts or copies the whole vocabulary unless the settings leave no other way.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from lila.arguments import check_int, check_real, check_type
from lila.errors import LilaError


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.8
    top_k: int = 40            # 0: off
    top_p: float = 0.95        # 1: off
    min_p: float = 0.05        # 0: off
    repeat_penalty: float = 1.0
    repeat_last_n: int = 64    # 0: off, -1: the whole history
    seed: int | None = None    # None: fresh entropy
    greedy: bool = False       # also implied by temperature <= 0
    ignore_eos: bool = False   # never pick a token that ends the turn (llama.cpp's --ignore-eos)

    @property
    def is_greedy(self) -> bool:
        return self.greedy or self.temperature <= 0

    def validated(self) -> "SamplingParams":
        """self, or a LilaError naming the first setting that makes no sense."""
        check_real("temperature", self.temperature, lambda v: v >= 0, ">= 0 (0: greedy)")
        check_int("top_k", self.top_k, 0, note=" (0: off)")
        check_real("top_p", self.top_p, lambda v: 0 < v <= 1, "in (0, 1]")
        check_real("min_p", self.min_p, lambda v: 0 <= v <= 1, "in [0, 1]")
        check_real("repeat_penalty", self.repeat_penalty, lambda v: v > 0, "> 0")
        check_int("repeat_last_n", self.repeat_last_n, -1, note=" (-1: the whole history)")
        check_int("seed", self.seed, 0, optional=True)
        for name in ("greedy", "ignore_eos"):
            check_type(name, getattr(self, name), (bool, np.bool_), "true or false")
        return self


class Sampler:
    """Draws tokens for one generation; its random stream is seeded once, so the same
    seed, logits and history give the same tokens."""

    def __init__(self, params: SamplingParams, *, eot_ids: Sequence[int] = ()):
        """eot_ids: the tokens that end a turn, never drawn when params.ignore_eos."""
        self.params = params.validated()
        self.rng = np.random.default_rng(self.params.seed)
        self.banned = np.array(sorted(eot_ids) if self.params.ignore_eos else [], np.int64)

    def sample(self, logits: np.ndarray, history: Sequence[int] = ()) -> int:
        """The next token id. logits: (vocab,) floats, -inf for a masked token."""
        if self.params.is_greedy:
            return int(np.argmax(self._penalized(logits, history)))
        ids, probs = self.distribution(logits, history)
        cumulative = np.cumsum(probs)
        # side="right" never lands on a zero-probability entry.
        i = np.searchsorted(cumulative, self.rng.random() * cumulative[-1], side="right")
        return int(ids[min(i, len(ids) - 1)])

    def distribution(self, logits: np.ndarray, history: Sequence[int] = ()
                     ) -> tuple[np.ndarray, np.ndarray]:
        """The tokens that survive the filters (ascending ids) and the probabilities the
        draw uses for them."""
        p = self.params
        logits = self._penalized(logits, history)
        if p.is_greedy:
            return np.array([np.argmax(logits)]), np.ones(1)
        ids = top_k_ids(logits, p.top_k)
        x = logits[ids].astype(np.float64)
        # top-p and min-p each keep a most-likely prefix of the candidates, and min-p's cut
        # (relative to the top token) is the same before or after top-p renormalizes. So
        # the chain keeps the shorter prefix: look for top-p's cut only among min-p's
        # survivors, with the probabilities of all candidates. This spares a sort of the
        # whole vocabulary when top-k is off.
        keep = np.flatnonzero(min_p_mask(x, p.min_p))
        if p.top_p < 1:
            keep = keep[nucleus(softmax(x)[keep], p.top_p)]
            keep.sort()
        return ids[keep], softmax(x[keep] / p.temperature)

    def _penalized(self, logits, history: Sequence[int]) -> np.ndarray:
        p = self.params
        logits = _checked(logits)
        if self.banned.size:
            logits = logits.copy()
            logits[self.banned[self.banned < len(logits)]] = -np.inf
            _checked(logits)   # a vocabulary of nothing but end tokens has nothing left
        return apply_repeat_penalty(logits, history, p.repeat_penalty, p.repeat_last_n)


def _checked(logits) -> np.ndarray:
    logits = np.asarray(logits)
    if logits.ndim != 1 or logits.size == 0:
        raise LilaError(f"expected logits of shape (vocab,), got {logits.shape}")
    if not np.isfinite(logits).all():
        bad = np.flatnonzero(np.isnan(logits) | (logits == np.inf))
        if bad.size:
            raise LilaError(f"the logits hold {logits[bad[0]]} (token {bad[0]}): the model's "
                            "computation overflowed")
        if logits.max() == -np.inf:
            raise LilaError("every token is masked: all logits are -inf")
    return logits


def apply_repeat_penalty(logits: np.ndarray, history: Sequence[int], penalty: float,
                         last_n: int) -> np.ndarray:
    """CTRL-style penalty on each distinct token of the last last_n of history (-1: all):
    a positive logit is divided by penalty, a negative one multiplied. The caller's array
    is left as it is."""
    if penalty == 1 or last_n == 0 or len(history) == 0:
        return logits
    window = history if last_n < 0 else history[-last_n:]
    ids = np.unique(np.asarray(window, dtype=np.int64))
    if ids[0] < 0 or ids[-1] >= len(logits):
        bad = ids[0] if ids[0] < 0 else ids[-1]
        raise LilaError(f"token id {bad} in the history is outside the vocabulary "
                        f"(0..{len(logits) - 1})")
    out = logits.copy()
    v = out[ids]
    out[ids] = np.where(v > 0, v / penalty, v * penalty)
    return out


def top_k_ids(logits: np.ndarray, k: int) -> np.ndarray:
    """Ids of the k largest logits, ascending (every id when k is 0 or >= the vocabulary)."""
    n = len(logits)
    if k <= 0 or k >= n:
        return np.arange(n)
    ids = np.argpartition(logits, n - k)[n - k:]   # O(n), where a sort would be O(n log n)
    ids.sort()
    return ids


def min_p_mask(logits: np.ndarray, min_p: float) -> np.ndarray:
    """Which entries have a probability of at least min_p times the top one's."""
    if min_p <= 0:
        return np.ones(len(logits), bool)
    # In logits, as llama.cpp: p_i >= min_p * p_max  <=>  l_i >= l_max + log(min_p).
    return logits >= logits.max() + math.log(min_p)


def nucleus(probs: np.ndarray, top_p: float) -> np.ndarray:
    """Indices (in no particular order) of the most likely entries, up to and including
    the one at which their summed probability reaches top_p (all if it never does)."""
    n = len(probs)
    # The nucleus is usually a few dozen entries: sort a growing top slice, not all.
    k = min(n, 64)
    while True:
        top = np.argpartition(probs, n - k)[n - k:] if k < n else np.arange(n)
        top = top[np.argsort(-probs[top], kind="stable")]
        mass = np.cumsum(probs[top])
        if mass[-1] >= top_p or k == n:
            return top[:np.searchsorted(mass, top_p) + 1]
        k = min(n, 8 * k)


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()
