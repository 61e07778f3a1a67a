"""The token loop: prefill, decode, sampling and stopping over one KV cache.

A Session remembers which tokens its cache holds, so a new prompt that extends the last
one (the next turn of a chat) only evaluates the tokens that differ.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from lila.errors import ContextOverflowError, LilaError
from lila.generation.sampling import Sampler, SamplingParams
from lila.generation.stops import StopMatcher
from lila.tokenizer import StreamDecoder, Tokenizer


@dataclass
class Stats:
    prompt_tokens: int = 0
    cached_tokens: int = 0          # prompt tokens whose KV was reused from the last call
    completion_tokens: int = 0
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0

    @property
    def prefill_tps(self) -> float:
        evaluated = self.prompt_tokens - self.cached_tokens
        return evaluated / self.prefill_seconds if self.prefill_seconds > 0 else 0.0

    @property
    def decode_tps(self) -> float:
        # The first completion token comes out of the prefill's logits.
        steps = max(self.completion_tokens - 1, 0)
        return steps / self.decode_seconds if self.decode_seconds > 0 else 0.0


class Session:
    def __init__(self, backend, tokenizer: Tokenizer):
        self.backend, self.tokenizer = backend, tokenizer
        self.n_ctx, self.max_batch = backend.n_ctx, backend.max_batch
        self.cached: list[int] = []   # tokens whose keys and values the cache holds, in order

    def evaluate(self, ids: Sequence[int], *, all_logits: bool = False) -> np.ndarray:
        """Bring the cache to exactly `ids`, reusing the longest common prefix, and return
        the logits of the last token (or of every newly evaluated token)."""
        ids = list(ids)
        if not ids:
            raise ValueError("nothing to evaluate")
        if len(ids) > self.n_ctx:
            raise ContextOverflowError(f"prompt is {len(ids)} tokens but the context holds "
                                       f"{self.n_ctx}")
        start = 0 if all_logits else _common_prefix(self.cached, ids)
        start = min(start, len(ids) - 1)   # the last token is always run, for its logits
        self.cached = self.cached[:start]
        outputs = []
        for begin in range(start, len(ids), self.max_batch):
            chunk = ids[begin:begin + self.max_batch]
            outputs.append(self.backend.forward(np.array(chunk), begin, all_logits=all_logits))
            self.cached += chunk
        return np.concatenate(outputs) if all_logits else outputs[-1][-1]

    def step(self, token: int) -> np.ndarray:
        """Append one token to the cache; the logits that follow it."""
        if len(self.cached) >= self.n_ctx:
            raise ContextOverflowError(f"the context of {self.n_ctx} tokens is full")
        logits = self.backend.forward(np.array([token]), len(self.cached))
        self.cached.append(token)
        return logits[-1]

    def generate(self, prompt: Sequence[int], *, max_tokens: int, sampling: SamplingParams,
                 stop: Sequence[str] = ()) -> "Completion":
        return Completion(self, list(prompt), max_tokens, sampling.validated(), list(stop))


class Completion:
    """Iterates over the text pieces of one generation; afterwards `finish_reason`
    ("stop" or "length"), `tokens` and `stats` say what happened."""

    def __init__(self, session: Session, prompt: list[int], max_tokens: int,
                 sampling: SamplingParams, stop: list[str]):
        self.session, self.prompt, self.max_tokens = session, prompt, max_tokens
        self.sampler = Sampler(sampling, eot_ids=session.tokenizer.eot_ids)
        self.stop = stop
        self.tokens: list[int] = []
        self.finish_reason: str | None = None
        self.stats = Stats(prompt_tokens=len(prompt))
        self._pieces = self._run()

    def __iter__(self) -> Iterator[str]:
        return self._pieces

    def __next__(self) -> str:
        return next(self._pieces)

    def text(self) -> str:
        return "".join(self)

    def close(self) -> None:
        """Stop generating, for a reader that stops early (Ctrl-C); `stats` then cover
        what was generated."""
        self._pieces.close()

    def _run(self) -> Iterator[str]:
        session, tok = self.session, self.session.tokenizer
        decoder, stops = StreamDecoder(tok), StopMatcher(self.stop)
        t0 = time.perf_counter()
        self.stats.cached_tokens = min(_common_prefix(session.cached, self.prompt), len(self.prompt) - 1)
        logits = session.evaluate(self.prompt)
        self.stats.prefill_seconds = time.perf_counter() - t0
        t0 = time.perf_counter()
        history = list(self.prompt)
        try:
            while True:
                if len(self.tokens) >= self.max_tokens:
                    self.finish_reason = "length"
                    break
                token = self.sampler.sample(logits, history)
                if token in tok.eot_ids:
                    self.finish_reason = "stop"
                    break
                self.tokens.append(token)
                history.append(token)
                self.stats.completion_tokens += 1
                text, stopped = stops.push(decoder.push(token))
                if text:
                    yield text
                if stopped:
                    self.finish_reason = "stop"
                    return
                if len(history) >= session.n_ctx:
                    self.finish_reason = "length"
                    break
                logits = session.step(token)
            tail, stopped = stops.push(decoder.flush())
            tail += "" if stopped else stops.flush()
            if stopped:
                self.finish_reason = "stop"
            if tail:
                yield tail
        finally:
            self.stats.decode_seconds = time.perf_counter() - t0


def check_max_tokens(max_tokens: int) -> None:
    if max_tokens < 1:
        raise LilaError(f"max_tokens must be at least 1, got {max_tokens}")


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n
