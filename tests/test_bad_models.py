"""Model files that are well-formed GGUF but wrong as models: each ends in one LilaError.

The model-level cases start from a tiny llama written here with the gguf package's
GGUFWriter (no torch: the suite must stay fast) and change one thing: a metadata value,
a missing key, a tensor's shape or type, a missing or extra tensor. `lila.load` must
raise a LilaError subclass whose one-line message names the problem, quickly, and
without allocating anything sized by a claimed count (a billion layers, 2**40 wide).

The last part sends a sample of tests/gguf_mutations.py's damaged files (and a few of
the model-level ones) through the whole `python -m lila info FILE` command.
"""
from __future__ import annotations

import copy
import math
import os
import re
import subprocess
import sys
import textwrap
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import gguf
import numpy as np
import pytest

from gguf_mutations import (
    base_file_bytes, layout, must_fail, random_blocks, unsupported_type_file,
)
import lila
from lila.errors import ContextOverflowError, LilaError, ModelFormatError, UnsupportedError
from lila.formats.gguf import GGMLType
from lila.formats.quants import BLOCK_SIZE, TYPE_SIZE
from lila.tokenizer.bpe import BYTE_ALPHABET

VT = gguf.GGUFValueType
QT = gguf.GGMLQuantizationType

CASE_SECONDS = 3.0          # every bad file is refused within this
PEAK_BYTES = 16 << 20       # and with at most this much Python/numpy memory traced

# --- a tiny llama, as metadata and tensors that a case can change before writing ------

DIM, HEADS, KV_HEADS, HEAD_DIM, FFN, LAYERS, CTX = 64, 4, 2, 16, 256, 2, 128
MERGES = ["Ġ t", "h e", "Ġt he", "i n"]
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


TOKENS = [BYTE_ALPHABET[b] for b in range(256)] + [m.replace(" ", "") for m in MERGES] + SPECIALS
VOCAB = len(TOKENS)
FIRST_SPECIAL = VOCAB - len(SPECIALS)


class Spec:
    """A model file before it is written: {key: (value, value type)} and
    {name: (data, raw GGML type or None)}; the architecture's keys are prefixed by arch."""

    def __init__(self) -> None:
        rng = np.random.default_rng(0)
        self.arch = "llama"
        a = "llama."
        self.meta: dict[str, tuple[Any, VT]] = {
            "general.architecture": ("llama", VT.STRING),
            "general.name": ("bad-model base", VT.STRING),
            a + "context_length": (CTX, VT.UINT32),
            a + "embedding_length": (DIM, VT.UINT32),
            a + "block_count": (LAYERS, VT.UINT32),
            a + "feed_forward_length": (FFN, VT.UINT32),
            a + "attention.head_count": (HEADS, VT.UINT32),
            a + "attention.head_count_kv": (KV_HEADS, VT.UINT32),
            a + "attention.key_length": (HEAD_DIM, VT.UINT32),
            a + "attention.value_length": (HEAD_DIM, VT.UINT32),
            a + "rope.dimension_count": (HEAD_DIM, VT.UINT32),
            a + "attention.layer_norm_rms_epsilon": (1e-5, VT.FLOAT32),
            a + "rope.freq_base": (10000.0, VT.FLOAT32),
            "tokenizer.ggml.model": ("gpt2", VT.STRING),
            "tokenizer.ggml.pre": ("default", VT.STRING),
            "tokenizer.ggml.tokens": (TOKENS, VT.ARRAY),
            "tokenizer.ggml.token_type": ([1] * FIRST_SPECIAL + [3] * len(SPECIALS), VT.ARRAY),
            "tokenizer.ggml.merges": (MERGES, VT.ARRAY),
            "tokenizer.ggml.bos_token_id": (FIRST_SPECIAL, VT.UINT32),
            "tokenizer.ggml.eos_token_id": (FIRST_SPECIAL + 2, VT.UINT32),
            "tokenizer.ggml.add_bos_token": (False, VT.BOOL),
        }

        def f32(*shape: int) -> np.ndarray:
            return (rng.standard_normal(shape) * 0.1).astype(np.float32)

        self.tensors: dict[str, tuple[np.ndarray, QT | None]] = {
            "token_embd.weight": (f32(VOCAB, DIM), None),
            "output_norm.weight": (f32(DIM) + 1, None),
            "output.weight": (f32(VOCAB, DIM), None),
        }
        for i in range(LAYERS):
            p = f"blk.{i}."
            self.tensors.update({
                p + "attn_norm.weight": (f32(DIM) + 1, None),
                p + "attn_q.weight": (f32(HEADS * HEAD_DIM, DIM), None),
                p + "attn_k.weight": (f32(KV_HEADS * HEAD_DIM, DIM), None),
                p + "attn_v.weight": (f32(KV_HEADS * HEAD_DIM, DIM), None),
                p + "attn_output.weight": (f32(DIM, HEADS * HEAD_DIM), None),
                p + "ffn_norm.weight": (f32(DIM) + 1, None),
                p + "ffn_gate.weight": (f32(FFN, DIM), None),
                p + "ffn_up.weight": (f32(FFN, DIM), None),
                p + "ffn_down.weight": (f32(DIM, FFN), None),
            })

    # Changes a case makes.
    def set(self, key: str, value: Any, vtype: VT = VT.UINT32) -> "Spec":
        self.meta[self._key(key)] = (value, vtype)
        return self

    def drop(self, key: str) -> "Spec":
        del self.meta[self._key(key)]
        return self

    def _key(self, key: str) -> str:
        return key if key.startswith(("general.", "tokenizer.")) else f"{self.arch}.{key}"

    def rename_arch(self, arch: str) -> "Spec":
        """Another general.architecture, its keys renamed to match."""
        old = self.arch + "."
        self.meta = {(arch + "." + k[len(old):] if k.startswith(old) else k): v
                     for k, v in self.meta.items()}
        self.meta["general.architecture"] = (arch, VT.STRING)
        self.arch = arch
        return self

    def tensor(self, name: str, data: np.ndarray, raw_type: QT | None = None) -> "Spec":
        self.tensors[name] = (data, raw_type)
        return self

    def quantized(self, name: str, qtype: QT) -> "Spec":
        """Tensor `name`, same shape, as random blocks of qtype (which Lila may not run)."""
        shape = self.tensors[name][0].shape
        t = GGMLType(int(qtype))
        rows = math.prod(shape[:-1])
        blocks = random_blocks(t, rows * shape[-1] // BLOCK_SIZE[t], np.random.default_rng(1))
        data = blocks.reshape(*shape[:-1], shape[-1] // BLOCK_SIZE[t] * TYPE_SIZE[t])
        return self.tensor(name, data, qtype)

    def remove(self, name: str) -> "Spec":
        del self.tensors[name]
        return self

    def write(self, path: Path) -> Path:
        w = gguf.GGUFWriter(str(path), self.arch)
        w.kv_data[0].clear()        # the writer's own general.architecture: ours (or none) instead
        for key, (value, vtype) in self.meta.items():
            w.add_key_value(key, value, vtype)
        for name, (data, raw_type) in self.tensors.items():
            w.add_tensor(name, data, raw_dtype=raw_type)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        return path


BASE_SPEC = Spec()


def spec() -> Spec:
    return copy.deepcopy(BASE_SPEC)


# --- the cases: (id, how to break the base, expected error class, substring of the message) --

Case = tuple[str, Callable[[Spec], Spec], type, str]
HUGE = 2**40

CASES: list[Case] = [
    # Counts and sizes that nothing may be allocated by.
    ("zero heads", lambda s: s.set("attention.head_count", 0), ModelFormatError,
     "'llama.attention.head_count' = 0 is out of range"),
    ("zero kv heads", lambda s: s.set("attention.head_count_kv", 0), ModelFormatError,
     "'llama.attention.head_count_kv' = 0 is out of range"),
    ("more kv heads than heads", lambda s: s.set("attention.head_count_kv", 8), ModelFormatError,
     "'llama.attention.head_count_kv' = 8 is out of range"),
    ("kv heads do not divide heads", lambda s: s.set("attention.head_count_kv", 3),
     ModelFormatError, "4 attention heads cannot be shared by 3 KV heads"),
    ("2**31 heads", lambda s: s.set("attention.head_count", 2**31), ModelFormatError,
     "'llama.attention.head_count' = 2147483648 is out of range"),
    ("a billion layers", lambda s: s.set("block_count", 10**9), ModelFormatError,
     "'llama.block_count' = 1000000000 is out of range"),
    ("2**64-1 layers", lambda s: s.set("block_count", 2**64 - 1, VT.UINT64), ModelFormatError,
     "'llama.block_count' = 18446744073709551615 is out of range"),
    ("more layers than the file has tensors", lambda s: s.set("block_count", 1000),
     ModelFormatError, "metadata says 1000 layers but the file holds only 21 tensors"),
    ("one layer more than the tensors", lambda s: s.set("block_count", LAYERS + 1),
     ModelFormatError, f"missing blk.{LAYERS}.attn_norm.weight"),
    ("zero layers", lambda s: s.set("block_count", 0), ModelFormatError,
     "'llama.block_count' = 0 is out of range"),
    ("negative layers", lambda s: s.set("block_count", -1, VT.INT32), ModelFormatError,
     "'llama.block_count' = -1 is out of range"),
    ("huge embedding_length", lambda s: s.set("embedding_length", HUGE, VT.UINT64),
     ModelFormatError, f"'llama.embedding_length' = {HUGE} is out of range"),
    ("huge context_length", lambda s: s.set("context_length", HUGE, VT.UINT64), ModelFormatError,
     f"'llama.context_length' = {HUGE} is out of range"),
    ("zero context_length", lambda s: s.set("context_length", 0), ModelFormatError,
     "'llama.context_length' = 0 is out of range"),
    ("huge feed_forward_length", lambda s: s.set("feed_forward_length", HUGE, VT.UINT64),
     ModelFormatError, f"'llama.feed_forward_length' = {HUGE} is out of range"),
    ("huge key_length", lambda s: s.set("attention.key_length", HUGE, VT.UINT64), ModelFormatError,
     f"'llama.attention.key_length' = {HUGE} is out of range"),
    ("huge sliding window", lambda s: s.set("attention.sliding_window", HUGE, VT.UINT64),
     ModelFormatError, f"'llama.attention.sliding_window' = {HUGE} is out of range"),
    # Numbers that make no sense.
    ("negative eps", lambda s: s.set("attention.layer_norm_rms_epsilon", -0.5, VT.FLOAT32),
     ModelFormatError, "'llama.attention.layer_norm_rms_epsilon' = -0.5 is out of range"),
    ("NaN eps", lambda s: s.set("attention.layer_norm_rms_epsilon", float("nan"), VT.FLOAT32),
     ModelFormatError, "'llama.attention.layer_norm_rms_epsilon' = nan is out of range"),
    ("infinite eps", lambda s: s.set("attention.layer_norm_rms_epsilon", float("inf"), VT.FLOAT64),
     ModelFormatError, "'llama.attention.layer_norm_rms_epsilon' = inf is out of range"),
    ("NaN rope base", lambda s: s.set("rope.freq_base", float("nan"), VT.FLOAT32), ModelFormatError,
     "'llama.rope.freq_base' = nan is out of range"),
    ("zero rope base", lambda s: s.set("rope.freq_base", 0.0, VT.FLOAT32), ModelFormatError,
     "'llama.rope.freq_base' = 0.0 is out of range"),
    ("odd rope dimension", lambda s: s.set("rope.dimension_count", 15), ModelFormatError,
     "rope dimension count 15 is odd"),
    ("rope dimension beyond the head", lambda s: s.set("rope.dimension_count", 32),
     ModelFormatError, "'llama.rope.dimension_count' = 32 is out of range"),
    ("key length != value length", lambda s: s.set("attention.value_length", 32), ModelFormatError,
     "key length 16 != value length 32"),
    ("yarn rope scaling", lambda s: s.set("rope.scaling.type", "yarn", VT.STRING)
     .set("rope.scaling.factor", 4.0, VT.FLOAT32), UnsupportedError, "rope scaling 'yarn'"),
    # Values of the wrong kind.
    ("string block_count", lambda s: s.set("block_count", "thirty", VT.STRING), ModelFormatError,
     "'llama.block_count' should be an integer, got 'thirty'"),
    ("float block_count", lambda s: s.set("block_count", 2.0, VT.FLOAT32), ModelFormatError,
     "'llama.block_count' should be an integer"),
    ("bool head_count", lambda s: s.set("attention.head_count", True, VT.BOOL), ModelFormatError,
     "'llama.attention.head_count' should be an integer"),
    ("per-layer array feed_forward_length",
     lambda s: s.set("feed_forward_length", [FFN] * LAYERS, VT.ARRAY), ModelFormatError,
     "'llama.feed_forward_length' should be an integer"),
    ("string eps", lambda s: s.set("attention.layer_norm_rms_epsilon", "1e-5", VT.STRING),
     ModelFormatError, "'llama.attention.layer_norm_rms_epsilon' should be a number"),
    ("integer architecture", lambda s: s.set("general.architecture", 7), ModelFormatError,
     "metadata 'general.architecture' should be a string, got 7"),
    ("string token id", lambda s: s.set("tokenizer.ggml.bos_token_id", "1", VT.STRING),
     ModelFormatError, "tokenizer.ggml.bos_token_id is not an integer"),
    ("token id beyond the vocabulary", lambda s: s.set("tokenizer.ggml.eos_token_id", 10**6),
     ModelFormatError, "tokenizer.ggml.eos_token_id = 1000000 is outside the vocabulary"),
    ("token types of the wrong length",
     lambda s: s.set("tokenizer.ggml.token_type", [1] * 5, VT.ARRAY),
     ModelFormatError, f"tokenizer.ggml.token_type has 5 entries for {VOCAB} tokens"),
    ("merges not pairs", lambda s: s.set("tokenizer.ggml.merges", ["abc"], VT.ARRAY),
     ModelFormatError, "tokenizer.ggml.merges holds 'abc'"),
    # Missing keys.
    ("no architecture", lambda s: s.drop("general.architecture"), ModelFormatError,
     "missing metadata key 'general.architecture'"),
    ("no embedding_length", lambda s: s.drop("embedding_length"), ModelFormatError,
     "missing metadata key 'llama.embedding_length'"),
    ("no head_count", lambda s: s.drop("attention.head_count"), ModelFormatError,
     "missing metadata key 'llama.attention.head_count'"),
    ("no block_count", lambda s: s.drop("block_count"), ModelFormatError,
     "missing metadata key 'llama.block_count'"),
    ("no feed_forward_length", lambda s: s.drop("feed_forward_length"), ModelFormatError,
     "missing metadata key 'llama.feed_forward_length'"),
    ("no tokenizer", lambda s: s.drop("tokenizer.ggml.model"), ModelFormatError,
     "tokenizer.ggml.model is missing"),
    ("no token list", lambda s: s.drop("tokenizer.ggml.tokens"), ModelFormatError,
     "tokenizer.ggml.tokens is missing"),
    ("no merges", lambda s: s.drop("tokenizer.ggml.merges"), ModelFormatError,
     "tokenizer.ggml.merges is missing"),
    # Tensors that contradict the metadata.
    ("q rows contradict head_count", lambda s: s.tensor("blk.0.attn_q.weight",
                                                        np.zeros((32, DIM), np.float32)),
     ModelFormatError, "blk.0.attn_q.weight has shape (32, 64), expected (64, 64)"),
    ("ffn contradicts feed_forward_length", lambda s: s.set("feed_forward_length", 128),
     ModelFormatError, "blk.0.ffn_gate.weight has shape (256, 64), expected (128, 64)"),
    ("embedding rows contradict the vocabulary",
     lambda s: s.tensor("token_embd.weight", np.zeros((VOCAB - 1, DIM), np.float32)),
     ModelFormatError, f"token_embd.weight has shape ({VOCAB - 1}, 64), expected ({VOCAB}, 64)"),
    ("norm as a matrix", lambda s: s.tensor("output_norm.weight", np.ones((1, DIM), np.float32)),
     ModelFormatError, "output_norm.weight has shape (1, 64), expected (64,)"),
    ("wider than the tensors", lambda s: s.set("embedding_length", 128), ModelFormatError,
     "tensors do not match the llama architecture"),
    ("many contradictions, listed briefly", lambda s: s.set("embedding_length", 32),
     ModelFormatError, "more)"),
    ("missing tensor", lambda s: s.remove("blk.1.ffn_up.weight"), ModelFormatError,
     "missing blk.1.ffn_up.weight"),
    ("missing embedding", lambda s: s.remove("token_embd.weight"), ModelFormatError,
     "missing token_embd.weight"),
    ("extra tensor", lambda s: s.tensor("blk.0.attn_extra.weight", np.zeros((4, 4), np.float32)),
     ModelFormatError, "unexpected tensor blk.0.attn_extra.weight"),
    ("extra layer", lambda s: s.tensor(f"blk.{LAYERS}.attn_norm.weight", np.ones(DIM, np.float32)),
     ModelFormatError, f"unexpected tensor blk.{LAYERS}.attn_norm.weight"),
    # Well formed, but not something Lila runs.
    ("IQ2_XXS tensor", lambda s: s.quantized("blk.0.ffn_down.weight", QT.IQ2_XXS), UnsupportedError,
     "unsupported tensor type IQ2_XXS (1 tensors), e.g. 'blk.0.ffn_down.weight'"),
    ("TQ1_0 tensors", lambda s: s.quantized("blk.0.ffn_down.weight", QT.TQ1_0)
     .quantized("blk.1.ffn_down.weight", QT.TQ1_0), UnsupportedError,
     "unsupported tensor type TQ1_0 (2 tensors)"),
    ("mamba", lambda s: s.rename_arch("mamba"), UnsupportedError,
     "architecture 'mamba' is not supported"),
    ("bert", lambda s: s.rename_arch("bert"), UnsupportedError,
     "architecture 'bert' is not supported"),
    ("empty architecture", lambda s: s.rename_arch(""), UnsupportedError,
     "architecture '' is not supported"),
    ("mixture-of-experts llama", lambda s: s.tensor("blk.0.ffn_gate_inp.weight",
                                                    np.zeros((8, DIM), np.float32)),
     ModelFormatError, "mixture-of-experts routers (ffn_gate_inp) but no llama.expert_count"),
    ("bert tokenizer", lambda s: s.set("tokenizer.ggml.model", "bert", VT.STRING), UnsupportedError,
     "tokenizer type 'bert'"),
]
assert len({c[0] for c in CASES}) == len(CASES)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Every case written once: {id: path}, and "base" for the valid file."""
    d = tmp_path_factory.mktemp("bad_models")
    out = {"base": BASE_SPEC.write(d / "base.gguf")}
    for i, (name, mutate, _, _) in enumerate(CASES):
        out[name] = mutate(spec()).write(d / f"case{i:02d}.gguf")
    return out


def load_error(path: Path, **kwargs) -> tuple[BaseException | None, float, int]:
    """(what lila.load raised or None, seconds, traced peak bytes)."""
    tracemalloc.start()
    start = time.perf_counter()
    exc: BaseException | None = None
    try:
        lila.load(path, **kwargs).close()
    except BaseException as e:  # noqa: BLE001 - any other type is the bug we look for
        exc = e
    finally:
        seconds = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return exc, seconds, peak


def test_base_model_runs(files):
    # Each bad case is this file with one change: it must load and generate, so that a
    # case's error comes from its change.
    with lila.load(files["base"]) as model:
        assert model.config.n_layers == LAYERS and model.config.vocab_size == VOCAB
        assert np.isfinite(model.logits(model.tokenize("hello"))).all()
        completion = model.generate("hello", max_tokens=3, greedy=True, ignore_eos=True)
        text = completion.text()
        assert len(completion.tokens) == 3 and completion.finish_reason == "length"
        assert all(0 <= t < VOCAB for t in completion.tokens)
        assert text == model.tokenizer.decode(completion.tokens, skip_special=True)


@pytest.mark.parametrize("name,mutate,error,message", CASES, ids=[c[0] for c in CASES])
def test_bad_model(files, name, mutate, error, message):
    exc, seconds, peak = load_error(files[name])
    assert exc is not None, f"{name}: accepted"
    assert isinstance(exc, LilaError), f"{name}: leaked {type(exc).__name__}: {exc}"
    assert isinstance(exc, error), f"{name}: {type(exc).__name__}, expected {error.__name__}: {exc}"
    text = str(exc)
    assert message in text, f"{name}: {text!r} does not say {message!r}"
    assert "\n" not in text and len(text) < 600, f"{name}: message is not one short line: {text!r}"
    assert seconds < CASE_SECONDS, f"{name}: took {seconds:.1f} s"
    assert peak < PEAK_BYTES, f"{name}: traced peak {peak >> 20} MB"


def test_context_request_beyond_the_model(files):
    exc, _, _ = load_error(files["base"], n_ctx=CTX + 1)
    assert isinstance(exc, LilaError) and f"context {CTX + 1} is outside 1..{CTX}" in str(exc)
    exc, _, _ = load_error(files["base"], n_ctx=0)
    assert isinstance(exc, LilaError) and "n_ctx must be at least 1, not 0" in str(exc)


def test_prompt_longer_than_the_context(files):
    with lila.load(files["base"], n_ctx=8) as model:
        with pytest.raises(ContextOverflowError, match="context"):
            model.generate(list(range(20)), max_tokens=1).text()


def test_billion_layers_under_an_address_space_limit(files):
    """The whole load, in a process that cannot map more than 1 GiB."""
    script = textwrap.dedent("""
        import resource, sys
        limit = 1 << 30
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        import lila
        from lila.errors import LilaError
        try:
            lila.load(sys.argv[1])
        except LilaError as e:
            print(type(e).__name__, e)
            sys.exit(0)
        sys.exit("accepted")
    """)
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
           "RAYON_NUM_THREADS": "1"}
    for name in ("a billion layers", "huge embedding_length", "huge context_length"):
        result = subprocess.run([sys.executable, "-c", script, str(files[name])], env=env,
                                stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                timeout=60)
        assert result.returncode == 0, f"{name}: {result.stdout}{result.stderr}"
        assert result.stdout.startswith("ModelFormatError ") and "out of range" in result.stdout


# --- the whole `lila info` command on damaged files -----------------------------------

def cli_cases(bad_models: dict[str, Path], tmp: Path) -> list[tuple[str, Path]]:
    """A spread of the reader-level mutations (one value of every third kind of damage,
    ~0.5 s of start-up each) and a few model-level cases, as files."""
    base = base_file_bytes()
    kinds: dict[str, tuple[str, bytes]] = {}
    for description, data in must_fail(base):          # the last, most extreme value of each
        kinds[re.sub(r"\d+", "N", description)] = (description, data)
    chosen = list(kinds.values())[::3]
    end = layout(base).tensors_end
    chosen += [(f"truncated to {n} bytes", base[:n]) for n in (100, end - 1)]
    chosen += [("unsupported tensor types", unsupported_type_file())]
    out = []
    for i, (description, data) in enumerate(chosen):
        path = tmp / f"mut{i:03d}.gguf"
        path.write_bytes(data)
        out.append((description, path))
    for name in ("a billion layers", "IQ2_XXS tensor", "mamba", "mixture-of-experts llama",
                 "bert tokenizer", "missing tensor"):
        out.append((name, bad_models[name]))
    return out


@pytest.fixture(scope="module")
def info_results(files, tmp_path_factory) -> list[tuple[str, subprocess.CompletedProcess]]:
    cases = cli_cases(files, tmp_path_factory.mktemp("cli_mutations"))

    def run(case: tuple[str, Path]):
        description, path = case
        return description, subprocess.run(
            [sys.executable, "-m", "lila", "info", str(path)], stdin=subprocess.DEVNULL,
            capture_output=True, text=True, timeout=60)

    # A process per file, as a user would run it; a few at a time to keep the wall time low.
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        return list(pool.map(run, cases))


def test_info_on_damaged_files(info_results):
    assert len(info_results) >= 20
    failures = []
    for description, r in info_results:
        lines = r.stderr.splitlines()
        if (r.returncode != 2 or len(lines) != 1 or not lines[0].startswith("error: ")
                or "Traceback" in r.stderr or r.stdout):
            failures.append(f"{description}: exit {r.returncode}, stdout {r.stdout[:200]!r}, "
                            f"stderr {r.stderr[-600:]!r}")
    assert not failures, "\n".join(failures)


def test_info_names_the_problem(info_results):
    said = {d: r.stderr.strip() for d, r in info_results}
    assert "is out of range" in said["a billion layers"]
    assert "IQ2_XXS" in said["IQ2_XXS tensor"]
    assert "'mamba' is not supported" in said["mamba"]
    assert "mixture-of-experts" in said["mixture-of-experts llama"]
    assert "tokenizer type 'bert'" in said["bert tokenizer"]
    assert "missing blk.1.ffn_up.weight" in said["missing tensor"]
