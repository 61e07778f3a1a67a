"""The fuzzers' inputs and checks: a seed makes one case, the same on every run.

    gguf_case(seed) -> (description, file bytes)
        A GGUF file damaged at random. Half start from a tiny llama that loads and
        generates (test_bad_models.Spec), with metadata values and tensors replaced by
        values of other types and sizes; the rest are byte-level damage (fields set to
        boundary values, flipped bytes, spliced or cut headers) of that model or of
        gguf_mutations' reader-level file.
    template_case(seed) -> (description, template source, messages)
        A real chat template (SmolLM2's, Gemma's, ChatML) with tags spliced in from the
        others, blocks duplicated or nested in themselves, numbers made huge, and loops,
        filters and known attacks inserted.

check_gguf() and check_template() run a case as Lila would be used on it; each returns
normally or raises. The property (fuzz.py): they raise nothing but a LilaError, whose
message is one line without control characters, and never crash or hang.
"""
from __future__ import annotations

import contextlib
import copy
import io
import random
import re
import struct
import unicodedata
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from gguf_mutations import HUGE, base_file_bytes, layout
from test_bad_models import FIRST_SPECIAL, VOCAB, spec as tiny_llama
from lila.errors import LilaError

VT = gguf.GGUFValueType
QT = gguf.GGMLQuantizationType


def problem(error: BaseException) -> str | None:
    """What is wrong with an error that a case raised, or None if it is a proper one."""
    if not isinstance(error, LilaError):
        return f"{type(error).__name__}: {str(error)[:300]}"
    cause = error
    while cause is not None:
        # The worker's address-space limit ran out: reported as a LilaError, but the bound
        # was the test's, not Lila's (without it, the machine's memory would have gone).
        if isinstance(cause, MemoryError):
            return f"MemoryError under a {type(error).__name__}: {str(error)[:200]}"
        cause = cause.__cause__ or cause.__context__
    message = str(error)
    if not message or any(unicodedata.category(c) == "Cc" for c in message):
        return f"{type(error).__name__} message is not one clean line: {message[:300]!r}"
    return None


# --- GGUF files ------------------------------------------------------------------------

# Boundary values for a field of any width (masked to it): off-by-ones, sign bits, counts
# that overflow a multiplication, and HUGE from gguf_mutations.
INTERESTING = (0, 1, 2, 3, 4, 7, 8, 13, 16, 31, 32, 64, 255, 256, 2**15, 2**16, 2**31 - 1,
               2**31, 2**32 - 1) + HUGE + (-1, -2)
_WIDTH_FORMAT = {1: "<B", 2: "<H", 4: "<I", 8: "<Q"}
_SCALAR_WIDTH = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_ARRAY, _STRING = 9, 8

# Keys a mutation may set that the tiny llama lacks, besides the ones it has.
EXTRA_KEYS = ("tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id",
              "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.padding_token_id",
              "tokenizer.ggml.add_eos_token", "tokenizer.ggml.add_space_prefix",
              "tokenizer.ggml.scores", "tokenizer.chat_template",
              "tokenizer.chat_template.tool_use", "general.alignment",
              "llama.rope.scaling.type", "llama.rope.scaling.factor",
              "llama.attention.sliding_window", "llama.vocab_size")
TENSOR_TYPES = (QT.F16, QT.BF16, QT.Q4_0, QT.Q4_1, QT.Q5_0, QT.Q5_1, QT.Q8_0, QT.Q2_K,
                QT.Q3_K, QT.Q4_K, QT.Q5_K, QT.Q6_K, QT.IQ2_XXS, QT.IQ4_NL, QT.TQ1_0)

_bases: dict[str, bytes] = {}


def _base(name: str) -> bytes:
    if name not in _bases:
        _bases[name] = (base_file_bytes() if name == "reader" else
                        _written(tiny_llama()))
    return _bases[name]


def _written(spec) -> bytes:
    with _scratch() as d:
        return spec.write(Path(d) / "case.gguf").read_bytes()


def _scratch():
    import tempfile
    return tempfile.TemporaryDirectory(prefix="lila-fuzz-")


def gguf_case(seed: int) -> tuple[str, bytes]:
    rng = random.Random(f"gguf:{seed}")
    if rng.random() < 0.5:
        for _ in range(20):   # a change that cannot be written (a shape no block fits): another
            spec, steps = tiny_llama(), []
            try:
                for _ in range(rng.choice((1, 1, 2, 3))):
                    steps.append(rng.choice(_SPEC_MUTATIONS)(rng, spec))
                return "tiny llama: " + "; ".join(steps), _written(spec)
            except Exception:   # noqa: BLE001 - the test's and the writer's checks, not Lila's
                continue
    base = rng.choice(("tiny llama", "reader"))
    data = bytearray(_base("reader" if base == "reader" else "model"))
    fields = _fields(bytes(data))
    steps = []
    for _ in range(rng.choice((1, 1, 2, 3))):
        steps.append(rng.choice((_set_field, _set_field, _set_field, _flip, _splice, _cut))(rng, data, fields))
    return f"{base} bytes: " + "; ".join(steps), bytes(data)


_INT_RANGES = {VT.UINT8: (0, 2**8 - 1), VT.INT8: (-2**7, 2**7 - 1), VT.UINT16: (0, 2**16 - 1),
               VT.INT16: (-2**15, 2**15 - 1), VT.UINT32: (0, 2**32 - 1),
               VT.INT32: (-2**31, 2**31 - 1), VT.UINT64: (0, 2**64 - 1),
               VT.INT64: (-2**63, 2**63 - 1)}


def _random_value(rng: random.Random) -> tuple[Any, VT, str]:
    """(value, type, in words) of a metadata value of any type."""
    kind = rng.choice(("int", "int", "float", "bool", "string", "array", "array"))
    if kind == "int":
        value = rng.choice(INTERESTING + (VOCAB, VOCAB - 1, FIRST_SPECIAL, rng.randrange(-9, 600)))
        vtype = rng.choice([t for t, (lo, hi) in _INT_RANGES.items() if lo <= value <= hi])
        return value, vtype, f"{vtype.name} {value}"
    if kind == "float":
        value = rng.choice((0.0, -0.0, 0.5, 1.0, 1e-45, 3.4e38, 1e300, float("nan"), float("inf"),
                            float("-inf"), -1.0))
        vtype = rng.choice((VT.FLOAT32, VT.FLOAT64))
        return value, vtype, f"{vtype.name} {value}"
    if kind == "bool":
        value = rng.random() < 0.5
        return value, VT.BOOL, f"bool {value}"
    if kind == "string":
        value = rng.choice(("", "x", "llama", "gpt2", "default", "\x1b[31mred\nerror: forged",
                            "é" * 1000, "x" * 70000, "{{ raise_exception('boom') }}",
                            "{% for m in messages %}{{ m.content }}{% endfor %}", "<|im_end|>"))
        return value, VT.STRING, f"string {value[:20]!r} ({len(value)} chars)"
    # The writer takes an array's element type from its first value: INT32 for ints,
    # FLOAT32 for floats, BOOL, STRING, or ARRAY for nested lists.
    n = rng.choice((1, 2, 3, VOCAB - 1, VOCAB, VOCAB + 1))
    sub = rng.choice(("int", "float", "bool", "string", "nested"))
    if sub == "string":
        value = [rng.choice(("a", "", "<|im_start|>", "Ġ t", "\x00")) for _ in range(n)]
    elif sub == "nested":
        value = [[1, 2]] * min(n, 3)
    elif sub == "bool":
        value = [rng.random() < 0.5 for _ in range(n)]
    elif sub == "float":
        value = [rng.choice((0.0, -1.0, float("nan"), float("inf"))) for _ in range(n)]
    else:
        value = [rng.choice((0, 1, -1, VOCAB - 1, VOCAB, 255, 2**31 - 1)) for _ in range(n)]
    return value, VT.ARRAY, f"array of {len(value)} {sub}"


def _set_value(rng: random.Random, spec) -> str:
    key = rng.choice(sorted(spec.meta) + list(EXTRA_KEYS))
    value, vtype, words = _random_value(rng)
    spec.meta[key] = (value, vtype)
    return f"{key} = {words}"


def _drop_key(rng: random.Random, spec) -> str:
    key = rng.choice(sorted(spec.meta))
    del spec.meta[key]
    return f"no {key}"


def _change_tensor(rng: random.Random, spec) -> str:
    name = rng.choice(sorted(spec.tensors))
    data, _ = spec.tensors[name]
    change = rng.choice(("shape", "type", "values", "remove", "extra"))
    if change == "shape":
        shape = list(data.shape)
        i = rng.randrange(len(shape))
        shape[i] = max(1, shape[i] + rng.choice((-1, 1, shape[i])))
        if rng.random() < 0.3:
            shape = [1] + shape
        spec.tensors[name] = (np.zeros(shape, np.float32), None)
        return f"{name} shape {tuple(shape)}"
    if change == "type":
        qtype = rng.choice(TENSOR_TYPES)
        if qtype in (QT.F16, QT.BF16):
            spec.tensors[name] = (data.astype(np.float16), None) if qtype == QT.F16 else \
                (data.view(np.uint16)[..., 1::2].copy(), QT.BF16)
        else:
            spec.quantized(name, qtype)
        return f"{name} as {qtype.name}"
    if change == "values":
        value = rng.choice((np.nan, np.inf, -np.inf, 3e38, 0.0))
        spec.tensors[name] = (np.full(data.shape, value, np.float32), None)
        return f"{name} all {value}"
    if change == "remove":
        del spec.tensors[name]
        return f"no {name}"
    extra = rng.choice(("blk.0.attn_extra.weight", "blk.99.attn_norm.weight", "rope_freqs.weight",
                        "blk.0.ffn_gate_inp.weight", "blk.0.attn_q.bias"))
    spec.tensors[extra] = (np.ones((4, data.shape[-1]), np.float32), None)
    return f"extra {extra}"


def _change_vocab(rng: random.Random, spec) -> str:
    """One entry of the tokenizer's arrays: a token, a merge or a token type."""
    key = rng.choice(("tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type"))
    values = list(spec.meta[key][0])
    i = rng.randrange(len(values))
    if key == "tokenizer.ggml.token_type":
        values[i] = rng.choice((0, 2, 3, 4, 5, 6, 7, 255, -1, 2**31 - 1))
    else:
        values[i] = rng.choice(("", " ", "a b c", "Ġ", "Ġ Ġ", "<|im_start|>", "\x00", "é" * 500,
                                values[rng.randrange(len(values))], "zz yy"))
    spec.meta[key] = (values, VT.ARRAY)
    return f"{key}[{i}] = {values[i]!r:.30}"


def _rename_arch(rng: random.Random, spec) -> str:
    arch = rng.choice(("qwen2", "qwen3", "gemma3", "gemma", "mixtral", "llama4"))
    spec.rename_arch(arch)
    return f"architecture {arch}"


_SPEC_MUTATIONS = (_set_value, _set_value, _drop_key, _change_tensor, _change_vocab, _rename_arch)


def _fields(data: bytes) -> list[tuple[int, int, str]]:
    """(offset, width, name) of every header field of a valid file."""
    lay = layout(data)
    out = [(4, 4, "version"), (8, 8, "tensor count"), (16, 8, "kv count")]
    for kv in lay.kv.values():
        out += [(kv.key_len_at, 8, f"{kv.key}: key length"), (kv.type_at, 4, f"{kv.key}: type")]
        if kv.vtype == _ARRAY:
            out += [(kv.value_at, 4, f"{kv.key}: element type"),
                    (kv.value_at + 4, 8, f"{kv.key}: count")]
            if struct.unpack_from("<I", data, kv.value_at)[0] == _STRING:
                out.append((kv.value_at + 12, 8, f"{kv.key}: first string length"))
        elif kv.vtype == _STRING:
            out.append((kv.value_at, 8, f"{kv.key}: length"))
        else:
            out.append((kv.value_at, _SCALAR_WIDTH[kv.vtype], f"{kv.key}: value"))
    for t in lay.tensors.values():
        out += [(t.name_len_at, 8, f"{t.name}: name length"), (t.n_dims_at, 4, f"{t.name}: n_dims"),
                (t.type_at, 4, f"{t.name}: type"), (t.offset_at, 8, f"{t.name}: offset")]
        out += [(at, 8, f"{t.name}: dim {i}") for i, at in enumerate(range(t.dims_at, t.type_at, 8))]
    return out


def _set_field(rng: random.Random, data: bytearray, fields) -> str:
    inside = [f for f in fields if f[0] + f[1] <= len(data)]   # an earlier step may have cut
    if not inside:
        return _flip(rng, data, fields)
    at, width, name = rng.choice(inside)
    old = int.from_bytes(data[at:at + width], "little")
    value = rng.choice(INTERESTING + (old + 1, old - 1, old * 2, len(data), rng.randrange(64)))
    struct.pack_into(_WIDTH_FORMAT[width], data, at, value % (1 << 8 * width))
    return f"{name} = {value}"


def _header_end(data: bytearray, fields) -> int:
    """Where the header ends (as far as the file still reaches), at least 1."""
    return max(1, min(len(data), max(at + width for at, width, _ in fields)))


def _flip(rng: random.Random, data: bytearray, fields) -> str:
    at = rng.randrange(_header_end(data, fields))
    if at >= len(data):
        data.append(0)
    data[at] ^= rng.randrange(1, 256)
    return f"byte {at} flipped"


def _splice(rng: random.Random, data: bytearray, fields) -> str:
    end = _header_end(data, fields)
    start, length, to = rng.randrange(end), rng.randrange(1, 64), rng.randrange(end)
    chunk = bytes(data[start:start + length])
    if rng.random() < 0.5:
        data[to:to + len(chunk)] = chunk
        return f"bytes {start}+{len(chunk)} copied over {to}"
    data[to:to] = chunk
    return f"bytes {start}+{len(chunk)} inserted at {to}"


def _cut(rng: random.Random, data: bytearray, fields) -> str:
    at = rng.randrange(_header_end(data, fields) if rng.random() < 0.7 else max(1, len(data)))
    del data[at:]
    return f"cut at {at}"


MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Tell a story."}]


def check_gguf(path: Path) -> None:
    """What `lila info` and `lila run` do with a file: read every tensor, describe it (and
    the description is one clean line per row), load it as a model, chat two tokens."""
    import argparse

    import lila
    from lila.cli import info
    from lila.formats.gguf import GGUFFile
    with GGUFFile.open(path) as f:
        unsupported = {name for name, _ in f.unsupported_tensors()}
        for name in f.tensors:
            f.tensor_bytes(name) if name in unsupported else f.tensor(name)
    shown = io.StringIO()
    with contextlib.redirect_stdout(shown):
        info.run(argparse.Namespace(model=str(path), ctx_size=None, backend=None))
    _check_rows(shown.getvalue())
    with lila.load(path) as model:
        model.tokenize("hello <|im_start|> wörld", special=True)
        model.chat(MESSAGES, max_tokens=2, greedy=True).text()


def _check_rows(text: str) -> None:
    """`lila info` prints "key  value" rows, values in one column: a string from the file
    that broke a row into lines, or held terminal escapes, would show here."""
    lines = text.splitlines()
    key_end = lines[0].index("  ")
    column = len(lines[0]) - len(lines[0][key_end:].lstrip(" "))   # where the values start
    for line in lines:
        assert line[:column - 2].strip() and line[column - 2:column] == "  " and not any(
            unicodedata.category(c) == "Cc" for c in line), f"lila info printed {line[:200]!r}"


# --- chat templates --------------------------------------------------------------------

_TAG = re.compile(r"(\{%.*?%\}|\{\{.*?\}\}|\{#.*?#\})", re.S)
_OPENERS = re.compile(r"\{%-?\s*(for|if|macro|filter|generation|call)\b")
_ENDERS = re.compile(r"\{%-?\s*end(for|if|macro|filter|generation|call)\b")
_NUMBER = re.compile(r"(?<![\w.])\d+(?![\w.])")

# Loop counts and sizes: mostly small, so that most cases finish at once, and some huge.
SMALL = (0, 1, 2, 3, 10, 100)
LARGE = (10**4, 10**6, 10**9, 2**31, 2**63, 10**20, -1)

# Known ways to ask a template for unbounded work, and other hostile expressions; {n} is a
# loop count or size.
ATTACKS = (
    "{{ 'ab' * {n} }}",
    "{{ '%0{n}d' % 1 }}",
    "{{ range({n}) | list | length }}",
    "{% set ns = namespace(s='ab') %}{% for _ in range({n}) %}{% set ns.s = ns.s ~ ns.s %}"
    "{% endfor %}{{ ns.s | length }}",
    "{% for a in range({n}) %}{% for b in range({n}) %}{% endfor %}{% endfor %}",
    "{{ {n} ** {n} }}",
    "{{ messages * {n} }}",
    "{% macro m(k) %}{{ m(k + 1) }}{% endmacro %}{{ m(0) }}",
    "{{ raise_exception('\\x1b[31mboom\\nerror: forged {n}') }}",
    "{{ strftime_now('%Y' * {n}) }}",
    "{{ 'x' | center({n}) }}",
    "{{ lipsum({n}) }}",
    "{{ ''.__class__ }}",
    "{{ messages | tojson(indent={n}) }}",
    "{% set x = [1] %}{% for _ in range({n}) %}{% set x = x + x %}{% endfor %}{{ x | length }}",
    "{{ '{0:>{n}}'.format(1) }}",
    "{{ 'ab' | replace('', 'xy' * {n}) | length }}",
    "{% filter upper %}{{ 'a' * {n} }}{% endfilter %}",
    "{{ range({n}) | batch(3) | list | length }}",
    "{{ messages[0]['content'] | wordwrap({n}) }}",
    "{{ " + "(" * 50 + "1" + ")" * 50 + " }}",
    "{{ " + "(" * 5000 + "1" + ")" * 5000 + " }}",
    "{{ {n} // 0 }}",
    "{{ messages[{n}] }}",
    "{{ namespace(_x=1) }}",
    "{{ cycler(1, 2).next() ~ joiner(',')() }}",
)
FILTERS = ("list", "join", "upper", "length", "reverse", "first", "tojson", "unique | list",
           "center({n})", "indent({n})", "batch({n}) | list", "sum", "trim", "string",
           "replace('a', 'aa' * {n})", "int", "float", "abs", "round", "items", "dictsort")


def _corpus() -> dict[str, str]:
    from lila.chat_template import CHATML, GEMMA
    from lila.formats.gguf import GGUFFile
    from lila.store import default_model_path
    with GGUFFile.open(default_model_path()) as f:
        smollm2 = f.metadata["tokenizer.chat_template"]
    return {"smollm2": smollm2, "gemma": GEMMA, "chatml": CHATML}


_templates: dict[str, str] = {}


def template_case(seed: int) -> tuple[str, str, list]:
    rng = random.Random(f"template:{seed}")
    if not _templates:
        _templates.update(_corpus())
    name = rng.choice(sorted(_templates))
    tokens = [t for t in _TAG.split(_templates[name]) if t]
    steps = []
    for _ in range(rng.choice((1, 1, 2, 3))):
        steps.append(rng.choice(_TEMPLATE_MUTATIONS)(rng, tokens))
    messages = copy.deepcopy(rng.choice(_MESSAGE_SETS))
    return f"{name}: " + "; ".join(steps), "".join(tokens), messages


def _count(rng: random.Random) -> int:
    return rng.choice(SMALL) if rng.random() < 0.85 else rng.choice(LARGE)


def _splice_tag(rng: random.Random, tokens: list[str]) -> str:
    donor = rng.choice([t for src in _templates.values() for t in _TAG.findall(src)])
    tokens.insert(rng.randrange(len(tokens) + 1), donor)
    return f"spliced {donor[:40]!r}"


def _duplicate(rng: random.Random, tokens: list[str]) -> str:
    i = rng.randrange(len(tokens))
    j = min(len(tokens), i + rng.randrange(1, 9))
    tokens[j:j] = tokens[i:j]
    return f"duplicated tokens {i}..{j}"


def _delete(rng: random.Random, tokens: list[str]) -> str:
    i = rng.randrange(len(tokens))
    j = min(len(tokens), i + rng.randrange(1, 4))
    del tokens[i:j]
    return f"deleted tokens {i}..{j}"


def _block(tokens: list[str], start: int) -> int | None:
    """The index of the tag that closes the block opened at tokens[start], if any."""
    depth = 0
    for k in range(start, len(tokens)):
        if _OPENERS.match(tokens[k]):
            depth += 1
        elif _ENDERS.match(tokens[k]):
            depth -= 1
            if depth == 0:
                return k
    return None


def _nest(rng: random.Random, tokens: list[str]) -> str:
    starts = [k for k, t in enumerate(tokens) if _OPENERS.match(t)]
    for start in rng.sample(starts, len(starts)):
        end = _block(tokens, start)
        if end is not None:
            tokens[start + 1:start + 1] = tokens[start:end + 1]
            return f"nested the block at token {start} in itself"
    return _duplicate(rng, tokens)


def _loop(rng: random.Random, tokens: list[str]) -> str:
    n = _count(rng)
    i = rng.randrange(len(tokens))
    j = min(len(tokens), i + rng.randrange(1, 6))
    tokens[i:j] = [f"{{% for _ in range({n}) %}}", *tokens[i:j], "{% endfor %}"]
    return f"tokens {i}..{j} looped {n} times"


def _huge_number(rng: random.Random, tokens: list[str]) -> str:
    tags = [k for k, t in enumerate(tokens) if t.startswith("{") and _NUMBER.search(t)]
    if not tags:
        return _inject(rng, tokens)
    k, n = rng.choice(tags), rng.choice(LARGE)
    tokens[k] = _NUMBER.sub(str(n), tokens[k], count=1)
    return f"a number in token {k} made {n}"


def _inject(rng: random.Random, tokens: list[str]) -> str:
    attack = rng.choice(ATTACKS).replace("{n}", str(_count(rng)))
    tokens.insert(rng.randrange(len(tokens) + 1), attack)
    return f"inserted {attack[:60]!r}"


def _filter(rng: random.Random, tokens: list[str]) -> str:
    outputs = [k for k, t in enumerate(tokens) if t.startswith("{{")]
    if not outputs:
        return _inject(rng, tokens)
    k = rng.choice(outputs)
    f = rng.choice(FILTERS).replace("{n}", str(_count(rng)))
    inner = tokens[k].strip("{}-").strip()
    tokens[k] = f"{{{{ ({inner}) | {f} }}}}"
    return f"token {k} through | {f}"


_TEMPLATE_MUTATIONS = (_splice_tag, _duplicate, _delete, _nest, _loop, _huge_number, _inject,
                       _inject, _filter)

_MESSAGE_SETS = (
    MESSAGES,
    [{"role": "user", "content": "Hi"}],
    [{"role": "user", "content": [{"type": "text", "text": "Hi"}, {"type": "image"}]}],
    [{"role": "tool", "content": "42"}, {"role": "user", "content": None}],
    [{"role": "user", "content": 5}, {"role": "assistant", "content": {"x": 1}}],
    [{"role": "user", "content": "{{ 7 * 7 }} {% for %}"}],
    [],
)


def check_template(source: str, messages: list) -> None:
    from lila.chat_template import ChatTemplate
    template = ChatTemplate({"default": source}, bos_token="<s>", eos_token="</s>")
    result = template.render(messages, add_generation_prompt=True)
    assert isinstance(result, str), type(result)
