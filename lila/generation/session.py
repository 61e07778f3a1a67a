"""The token loop: prefill, decode, sampling and stopping, each generation on its own KV
cache.

An Engine is a model's backend shared by every sequence: one forward pass at a time, each
on the cache of the sequence it serves. A generation takes a cache when it starts and
gives it back when it ends, is closed, or is dropped; free caches remember which tokens
they hold, so a new prompt that extends an earlier one (the next turn of a chat) only
evaluates the tokens that differ.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np

from lila.errors import ContextOverflowError, ModelChangedError
from lila.executor.kv import KVCache
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


class Engine:
    """A model's backend, shared by every sequence run on it.

    The backend's activation buffers and threads serve one forward pass at a time, so
    passes wait their turn at a lock held only for the pass itself: no caller's code runs
    under it, and no pass waits on anything else, so no wait can deadlock. What a sequence
    owns, its KV cache, is never shared: any number of generations, in any number of
    threads or interleaved in one, each get the tokens they would get alone.

    check: called before each pass, under the lock; raises ModelChangedError when the
    model can no longer be trusted (its file changed). After such an error, or a fault
    while reading the weights, every later pass raises it too.

    The backend's configuration (the memory fabric's adapters) changes only between two
    passes (reconfigure). A cache's keys and values hold only for the configuration
    they were computed under: a free cache of another is not reused.
    """

    def __init__(self, backend, *, check: Callable[[], None] | None = None, keep: int = 2):
        self.backend, self.check, self.keep = backend, check, keep
        self.n_ctx, self.max_batch = backend.n_ctx, backend.max_batch
        self.broken: str | None = None
        self.in_use = 0                  # caches held by sequences now
        self.configuration = 0           # counts reconfigurations
        self._compute = threading.Lock()
        self._pool = threading.Lock()
        self._free: list[KVCache] = []   # least recently used first

    def forward(self, kv: KVCache, tokens: Sequence[int], pos0: int, *,
                all_logits: bool = False) -> np.ndarray:
        with self._compute:
            if self.broken:
                raise ModelChangedError(self.broken)
            try:
                if self.check:
                    self.check()
                if pos0 == 0 or kv.configuration != self.configuration:
                    # a cache extended under another configuration holds a mix of both
                    kv.configuration = self.configuration if pos0 == 0 else -1
                return self.backend.forward(np.asarray(tokens), pos0, kv, all_logits=all_logits)
            except ModelChangedError as e:
                self.broken = str(e)
                raise

    def reconfigure(self, change: Callable[[], None]) -> None:
        """Run change (which reconfigures the backend) between two forward passes."""
        with self._compute:
            change()
            self.configuration += 1

    def acquire(self, prompt: Sequence[int]) -> KVCache:
        """A cache for a sequence starting with prompt: the free one holding most of it,
        else a new one."""
        with self._pool:
            for kv in self._free:
                if kv.configuration != self.configuration:
                    kv.tokens.clear()
            if self._free:
                best = max(self._free, key=lambda kv: _common_prefix(kv.tokens, prompt))
                self._free.remove(best)
                self.in_use += 1
                return best
        kv = self.backend.new_kv()   # outside the lock: allocating may take a while, or fail
        with self._pool:
            self.in_use += 1
        return kv

    def release(self, kv: KVCache) -> None:
        """Give a cache back; beyond `keep` free ones, the least recently used is dropped
        (and its memory with it)."""
        with self._pool:
            self.in_use -= 1
            self._free.append(kv)
            if len(self._free) > self.keep:
                del self._free[0]


class Session:
    """One sequence on an Engine: its KV cache, and the tokens the cache holds."""

    def __init__(self, engine: Engine, kv: KVCache):
        self.engine, self.kv = engine, kv
        self.n_ctx, self.max_batch = engine.n_ctx, engine.max_batch

    @property
    def cached(self) -> list[int]:
        return self.kv.tokens

    def evaluate(self, ids: Sequence[int], *, all_logits: bool = False) -> np.ndarray:
        """Bring the cache to exactly `ids`, reusing the longest common prefix, and return
        the logits of the last token (or of every newly evaluated token)."""
        ids = list(ids)
        if not ids:
            raise ValueError("nothing to evaluate")
        if len(ids) > self.n_ctx:
            raise ContextOverflowError(f"prompt is {len(ids)} tokens but the context holds "
                                       f"{self.n_ctx}")
        start = 0 if all_logits else _common_prefix(self.kv.tokens, ids)
        start = min(start, len(ids) - 1)   # the last token is always run, for its logits
        del self.kv.tokens[start:]
        outputs = []
        for begin in range(start, len(ids), self.max_batch):
            chunk = ids[begin:begin + self.max_batch]
            outputs.append(self.engine.forward(self.kv, chunk, begin, all_logits=all_logits))
            self.kv.tokens += chunk      # only rows a pass has written count as held
        return np.concatenate(outputs) if all_logits else outputs[-1][-1]

    def step(self, token: int) -> np.ndarray:
        """Append one token to the cache; the logits that follow it."""
        if len(self.kv.tokens) >= self.n_ctx:
            raise ContextOverflowError(f"the context of {self.n_ctx} tokens is full")
        logits = self.engine.forward(self.kv, [token], len(self.kv.tokens))
        self.kv.tokens.append(token)
        return logits[-1]


class Completion:
    """Iterates over the text pieces of one generation; afterwards `finish_reason`
    ("stop" or "length"), `tokens` and `stats` say what happened. It holds a KV cache
    from its first piece until its last, or until it is closed or dropped."""

    def __init__(self, engine: Engine, tokenizer: Tokenizer, prompt: list[int], max_tokens: int,
                 sampling: SamplingParams, stop: list[str]):
        self.engine, self.tokenizer = engine, tokenizer
        self.prompt, self.max_tokens = prompt, max_tokens
        self.sampler = Sampler(sampling.validated(), eot_ids=tokenizer.eot_ids)
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
        kv = self.engine.acquire(self.prompt)
        try:
            yield from self._generate(Session(self.engine, kv))
        finally:   # also when the reader closes or drops the completion
            self.engine.release(kv)

    def _generate(self, session: Session) -> Iterator[str]:
        tok = self.tokenizer
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


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n
