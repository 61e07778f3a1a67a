"""The Python API: `lila.load(path)` returns a `Model`.

A Model may be used from any number of threads, and any number of its generations may be
alive at once: each generation runs on a KV cache of its own (lila.generation.session),
and forward passes take turns on the one backend, token by token. Every argument is
checked here, so that a wrong one is a LilaError naming it, not a TypeError deep inside.
"""
from __future__ import annotations

import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from lila.arguments import check_int, check_type, shown
from lila.chat_template import ChatTemplate
from lila.errors import LilaError, ModelChangedError
from lila.executor import backend_class, choose, create
from lila.executor.memory import CONVERTED, streaming
from lila.executor.weights import SpillFile
from lila.fabric.adapter import Base
from lila.fabric.fabric import DEFAULT_NAMESPACES, Fabric
from lila.formats.gguf import GGUFFile
from lila.generation.sampling import SamplingParams
from lila.generation.session import Completion, Engine, Session
from lila.hardware.memory import available_memory
from lila.models import ModelSpec, describe
from lila.tokenizer import Tokenizer

DEFAULT_CONTEXT = 4096
DEFAULT_MAX_TOKENS = 512


def load(path: str | os.PathLike | None = None, *, n_ctx: int | None = None,
         backend: str | None = None, threads: int | None = None, max_batch: int = 128,
         low_memory: bool | None = None, namespaces: Sequence[str] = DEFAULT_NAMESPACES,
         fuse_adapters: bool = True) -> "Model":
    """Open a GGUF model (None: the default model). n_ctx: context window in tokens, at
    most the model's (default: the smaller of the model's and 4096). backend: a name
    from `lila detect` (default: LILA_BACKEND, else the best for this CPU). threads:
    default the CPU's performance cores. low_memory: True streams the weights from disk
    and keeps no copy of them in memory, for models larger than RAM; False never does;
    None (default): LILA_LOW_MEMORY (1 or 0) if set, else only when the model does not
    fit, saying so on stderr. namespaces: the names of the memory fabric's namespaces
    (model.fabric), at most 5. fuse_adapters: False computes adapters in ops of their own
    (native backends), to measure what fusing them into the matmuls saves."""
    from lila.store import resolve_model
    if path is not None and not isinstance(path, (str, os.PathLike)):
        raise LilaError(f"path must be a file path or None, not {type(path).__name__}")
    return Model(resolve_model(None if path is None else os.fspath(path)), n_ctx=n_ctx,
                 backend=backend, threads=threads, max_batch=max_batch, low_memory=low_memory,
                 namespaces=namespaces, fuse_adapters=fuse_adapters)


class Model:
    def __init__(self, path: Path, *, n_ctx: int | None, backend: str | None,
                 threads: int | None = None, max_batch: int = 128, low_memory: bool | None = None,
                 namespaces: Sequence[str] = DEFAULT_NAMESPACES, fuse_adapters: bool = True):
        check_int("n_ctx", n_ctx, 1, optional=True)
        check_int("threads", threads, 1, 1024, optional=True)
        check_int("max_batch", max_batch, 1, 1 << 20)
        check_type("backend", backend, str, "a backend name or None", optional=True)
        check_type("low_memory", low_memory, bool, "True, False or None", optional=True)
        check_type("fuse_adapters", fuse_adapters, bool, "True or False")
        self.path = Path(path)
        self.gguf = GGUFFile.open(self.path)
        try:
            self.spec: ModelSpec = describe(self.gguf)
            self.tokenizer = Tokenizer.from_gguf_metadata(self.gguf.metadata)
            self.template = ChatTemplate.from_gguf_metadata(self.gguf.metadata, self.tokenizer)
            limit = self.spec.config.context_length
            if n_ctx is not None and not 1 <= n_ctx <= limit:
                raise LilaError(f"context {n_ctx} is outside 1..{limit}, the model's maximum")
            self.n_ctx = n_ctx or min(limit, DEFAULT_CONTEXT)
            self.choice = choose(backend)
            self.memory = backend_class(self.choice).memory_estimate(
                self.spec.plan, self.spec.weights, n_ctx=self.n_ctx, max_batch=max_batch)
            # Decided before allocating, rather than let the OS kill the process half-way.
            self.low_memory, notice = streaming(self.memory, low_memory, available_memory())
            if notice:
                print(f"lila: {notice}", file=sys.stderr)
            spill = None
            if self.low_memory and self.memory.get(CONVERTED):
                from lila.store import cache_dir
                spill = SpillFile(cache_dir(), self.memory[CONVERTED])
            self.backend = create(self.choice, self.spec.plan, self.gguf, n_ctx=self.n_ctx,
                                  max_batch=max_batch, threads=threads, spill=spill,
                                  fuse_adapters=fuse_adapters)
            self.engine = Engine(self.backend, check=self._check_file)
            self.fabric = Fabric(self.engine, Base.of(self.spec), namespaces)
        except BaseException:
            self.gguf.close()
            raise

    @property
    def config(self):
        return self.spec.config

    @property
    def name(self) -> str:
        return self.path.stem

    def file_changed(self) -> str | None:
        """One line saying how the model file on disk differs from the one loaded (size,
        modification time, or another file at its path), or None if it does not."""
        change = self.gguf.change()
        return None if change is None else f"{self.gguf.path} {change.description}"

    def _check_file(self) -> None:
        # Before every forward pass: weights read from bytes changed under the map would
        # silently give other answers (a truncation would fault: the native backends
        # catch that too, as ModelChangedError, the others cannot).
        change = self.gguf.change()
        if change is not None and change.in_place:
            raise ModelChangedError(f"{self.gguf.path} {change.description}; load it again")

    def close(self) -> None:
        self.backend = self.engine = None   # the backend's pointers into the map go first
        self.gguf.close()

    def __enter__(self) -> "Model":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def tokenize(self, text: str, special: bool = False, *, add_bos: bool = True) -> list[int]:
        """Token ids of text. special: text like "<|im_start|>" becomes its control token.
        add_bos: add the BOS/EOS tokens the model's tokenizer is configured to add."""
        check_type("text", text, str, "a string")
        check_type("special", special, bool, "True or False")
        check_type("add_bos", add_bos, bool, "True or False")
        return self.tokenizer.encode(text, add_special=add_bos, parse_special=special)

    def detokenize(self, ids: Sequence[int]) -> str:
        ids = _token_ids("ids", ids)
        self._check_ids(ids, empty_ok=True)
        return self.tokenizer.decode(ids)

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        """Teacher-forced logits, shape (len(ids), vocab): row i predicts token i + 1."""
        ids = _token_ids("ids", ids)
        self._check_ids(ids)
        kv = self._engine().acquire([])
        try:
            return Session(self.engine, kv).evaluate(ids, all_logits=True)
        finally:
            self.engine.release(kv)

    def generate(self, prompt: str | Sequence[int], *, max_tokens: int = DEFAULT_MAX_TOKENS,
                 stop: str | Sequence[str] | None = (), **sampling: Any) -> Completion:
        """Continue a raw prompt (text, whose special-token text is parsed, or token ids).
        Iterate over the result for text pieces as they are generated. stop: a string or
        a list of them, as the OpenAI API takes it."""
        ids = self.tokenize(prompt, special=True) if isinstance(prompt, str) else _token_ids("prompt", prompt)
        self._check_ids(ids)
        check_int("max_tokens", max_tokens, 1)
        return Completion(self._engine(), self.tokenizer, ids, max_tokens, _sampling(sampling),
                          _stops(stop))

    def chat(self, messages: list[dict], **kwargs: Any) -> Completion:
        """Answer a conversation (OpenAI-style messages) in the model's chat template."""
        _check_messages(messages)
        prompt = self.template.render(messages, add_generation_prompt=True)
        # As transformers' apply_chat_template: the template writes any BOS itself.
        ids = self.tokenize(prompt, special=True, add_bos=False)
        return self.generate(ids, **kwargs)

    def create_chat_completion(self, messages: list[dict], *, stream: bool = False,
                               max_tokens: int | None = None, stop: str | Sequence[str] | None = None,
                               **sampling: Any) -> dict | Iterator[dict]:
        """OpenAI chat.completion dict, or an iterator of chat.completion.chunk dicts."""
        check_type("stream", stream, bool, "True or False")
        check_int("max_tokens", max_tokens, 1, optional=True)
        completion = self.chat(messages, max_tokens=max_tokens or DEFAULT_MAX_TOKENS,
                               stop=_stops(stop), **sampling)
        meta = {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "created": int(time.time()),
                "model": self.name}
        if stream:
            return self._chunks(completion, meta)
        text = completion.text()
        return {**meta, "object": "chat.completion",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": completion.finish_reason}],
                "usage": _usage(completion)}

    def _chunks(self, completion: Completion, meta: dict) -> Iterator[dict]:
        def chunk(delta: dict, finish: str | None) -> dict:
            return {**meta, "object": "chat.completion.chunk",
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        yield chunk({"role": "assistant", "content": ""}, None)
        for piece in completion:
            yield chunk({"content": piece}, None)
        yield {**chunk({}, completion.finish_reason), "usage": _usage(completion)}

    def _engine(self) -> Engine:
        if self.engine is None:
            raise LilaError(f"{self.name}: the model is closed")
        return self.engine

    def _check_ids(self, ids: list[int], *, empty_ok: bool = False) -> None:
        vocab = self.config.vocab_size
        bad = [i for i in ids if not 0 <= i < vocab]
        if bad:
            raise LilaError(f"token id {bad[0]} is outside the vocabulary (0..{vocab - 1})")
        if not ids and not empty_ok:
            raise LilaError("the prompt is empty")


def _token_ids(name: str, ids: Any) -> list[int]:
    if isinstance(ids, (str, bytes)) or not isinstance(ids, (Sequence, np.ndarray)):
        raise LilaError(f"{name} must be a list of token ids, not {shown(ids)}")
    ids = list(ids)
    for i in ids:
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
            raise LilaError(f"{name} must be a list of token ids; it holds {shown(i)}")
    return [int(i) for i in ids]


def _stops(stop: Any) -> list[str]:
    """stop as the OpenAI API takes it: None, one string, or a list of strings."""
    if stop is None:
        return []
    if isinstance(stop, str):
        return [stop]
    if isinstance(stop, (list, tuple)) and all(isinstance(s, str) for s in stop):
        return list(stop)
    raise LilaError(f"stop must be a string or a list of strings, not {shown(stop)}")


def _check_messages(messages: Any) -> None:
    if not isinstance(messages, list) or not messages:
        raise LilaError(f"messages must be a non-empty list of {{'role', 'content'}} dicts, "
                        f"not {shown(messages)}")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise LilaError(f"messages[{i}] must be a dict with a string 'role', not {shown(message)}")
        content = message.get("content")
        if content is not None and not isinstance(content, (str, list)):
            raise LilaError(f"messages[{i}]['content'] must be a string or a list of parts, "
                            f"not {shown(content)}")


def _sampling(kwargs: dict) -> SamplingParams:
    try:
        return SamplingParams(**kwargs)
    except TypeError as e:
        raise LilaError(f"unknown sampling option: {e}") from None


def _usage(completion: Completion) -> dict:
    s = completion.stats
    return {"prompt_tokens": s.prompt_tokens, "completion_tokens": s.completion_tokens,
            "total_tokens": s.prompt_tokens + s.completion_tokens}
