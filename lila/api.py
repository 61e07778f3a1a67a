"""The Python API: `lila.load(path)` returns a `Model`."""
from __future__ import annotations

import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from lila.chat_template import ChatTemplate
from lila.errors import LilaError
from lila.executor import backend_class, choose, create
from lila.executor.memory import CONVERTED, streaming
from lila.executor.weights import SpillFile
from lila.formats.gguf import GGUFFile
from lila.generation.sampling import SamplingParams
from lila.generation.session import Completion, Session, check_max_tokens
from lila.hardware.memory import available_memory
from lila.models import ModelSpec, describe
from lila.tokenizer import Tokenizer

DEFAULT_CONTEXT = 4096
DEFAULT_MAX_TOKENS = 512


def load(path: str | os.PathLike | None = None, *, n_ctx: int | None = None,
         backend: str | None = None, threads: int | None = None, max_batch: int = 128,
         low_memory: bool | None = None) -> "Model":
    """Open a GGUF model (None: the default model). n_ctx: context window in tokens, at
    most the model's (default: the smaller of the model's and 4096). backend: a name
    from `lila detect` (default: LILA_BACKEND, else the best for this CPU). threads:
    default the CPU's performance cores. low_memory: True streams the weights from disk
    and keeps no copy of them in memory, for models larger than RAM; False never does;
    None (default): LILA_LOW_MEMORY (1 or 0) if set, else only when the model does not
    fit, saying so on stderr."""
    from lila.store import resolve_model
    return Model(resolve_model(None if path is None else str(path)), n_ctx=n_ctx,
                 backend=backend, threads=threads, max_batch=max_batch, low_memory=low_memory)


class Model:
    def __init__(self, path: Path, *, n_ctx: int | None, backend: str | None,
                 threads: int | None = None, max_batch: int = 128, low_memory: bool | None = None):
        if threads is not None and not 1 <= threads <= 1024:
            raise LilaError(f"threads must be between 1 and 1024, not {threads}")
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
                                  max_batch=max_batch, threads=threads, spill=spill)
        except BaseException:
            self.gguf.close()
            raise
        self.session = Session(self.backend, self.tokenizer)

    @property
    def config(self):
        return self.spec.config

    @property
    def name(self) -> str:
        return self.path.stem

    def close(self) -> None:
        self.backend = self.session = None   # the backend's pointers into the map go first
        self.gguf.close()

    def __enter__(self) -> "Model":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def tokenize(self, text: str, special: bool = False, *, add_bos: bool = True) -> list[int]:
        """Token ids of text. special: text like "<|im_start|>" becomes its control token.
        add_bos: add the BOS/EOS tokens the model's tokenizer is configured to add."""
        return self.tokenizer.encode(text, add_special=add_bos, parse_special=special)

    def detokenize(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(ids)

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        """Teacher-forced logits, shape (len(ids), vocab): row i predicts token i + 1."""
        ids = list(ids)
        self._check_ids(ids)
        return self.session.evaluate(ids, all_logits=True)

    def generate(self, prompt: str | Sequence[int], *, max_tokens: int = DEFAULT_MAX_TOKENS,
                 stop: Sequence[str] = (), **sampling: Any) -> Completion:
        """Continue a raw prompt (text, whose special-token text is parsed, or token ids).
        Iterate over the result for text pieces as they are generated."""
        ids = self.tokenize(prompt, special=True) if isinstance(prompt, str) else list(prompt)
        self._check_ids(ids)
        check_max_tokens(max_tokens)
        return self.session.generate(ids, max_tokens=max_tokens, sampling=_sampling(sampling),
                                     stop=stop)

    def chat(self, messages: list[dict], **kwargs: Any) -> Completion:
        """Answer a conversation (OpenAI-style messages) in the model's chat template."""
        prompt = self.template.render(messages, add_generation_prompt=True)
        # As transformers' apply_chat_template: the template writes any BOS itself.
        ids = self.tokenize(prompt, special=True, add_bos=False)
        return self.generate(ids, **kwargs)

    def create_chat_completion(self, messages: list[dict], *, stream: bool = False,
                               max_tokens: int | None = None, stop: str | Sequence[str] | None = None,
                               **sampling: Any) -> dict | Iterator[dict]:
        """OpenAI chat.completion dict, or an iterator of chat.completion.chunk dicts."""
        stops = [stop] if isinstance(stop, str) else list(stop or ())
        completion = self.chat(messages, max_tokens=max_tokens or DEFAULT_MAX_TOKENS, stop=stops,
                               **sampling)
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

    def _check_ids(self, ids: list[int]) -> None:
        vocab = self.config.vocab_size
        bad = [i for i in ids if not 0 <= i < vocab]
        if bad:
            raise LilaError(f"token id {bad[0]} is outside the vocabulary (0..{vocab - 1})")
        if not ids:
            raise LilaError("the prompt is empty")


def _sampling(kwargs: dict) -> SamplingParams:
    try:
        return SamplingParams(**kwargs)
    except TypeError as e:
        raise LilaError(f"unknown sampling option: {e}") from None


def _usage(completion: Completion) -> dict:
    s = completion.stats
    return {"prompt_tokens": s.prompt_tokens, "completion_tokens": s.completion_tokens,
            "total_tokens": s.prompt_tokens + s.completion_tokens}
