"""PEFT LoRA adapters: a directory holding `adapter_config.json` and
`adapter_model.safetensors`, as PEFT's `save_pretrained` writes them.

The safetensors header is read (and validated, by the safetensors package) without any
data. The data is mapped, not read whole, and only when asked for: once the caller has
checked every shape, and one tensor at a time (the numpy side of safetensors cannot make
BF16 arrays, so the bytes are decoded by Lila's dequantizer, as GGUF's are).
"""
from __future__ import annotations

import json
import math
import mmap
import os
import re
import stat
import struct
from contextlib import contextmanager, suppress
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
from safetensors import safe_open

from lila.fabric.files import LAYER, MODULES, AdapterFile, Stored, fail, quoted
from lila.formats.quants import GGMLType, dequantize
from lila.models.config import MAX_LAYERS

CONFIG = "adapter_config.json"
WEIGHTS = "adapter_model.safetensors"
MAX_CONFIG_BYTES = 1 << 20
MAX_RANK = 1 << 20
# rank_pattern / alpha_pattern are regular expressions from the file, matched against every
# module's name. Backtracking makes a hostile one slow: exponentially with a repeated group,
# polynomially with many repeats. Real patterns are names, with a wildcard or two; these
# bounds keep the worst case to ~10 us a match (PEFT's own EVA writes one pattern a module).
MAX_PATTERNS = 2048
MAX_PATTERN_CHARS = 256
MAX_REPEATS = 2
MAX_NAME_CHARS = 1024   # a tensor's name, before any regular expression scans it
MAX_TENSORS = 4 * len(MODULES) * MAX_LAYERS   # twice the factors, for a vision tower

# safetensors dtype -> the GGUF type whose dequantizer reads the same bytes.
_DTYPES = {"F32": GGMLType.F32, "F16": GGMLType.F16, "BF16": GGMLType.BF16}
# Bits per element of each safetensors dtype (0.8), to find where each tensor lies.
_BITS = {"BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8, "F8_E4M3FNUZ": 8,
         "F8_E5M2FNUZ": 8, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6, "I16": 16, "U16": 16, "F16": 16,
         "BF16": 16, "I32": 32, "U32": 32, "F32": 32, "C64": 64, "I64": 64, "U64": 64, "F64": 64}

# Config settings that change what the adapter computes, which Lila does not implement.
_REFUSED = {
    "use_dora": "DoRA",
    "use_qalora": "QALoRA",
    "lora_bias": "a bias on LoRA B (lora_bias)",
    "alora_invocation_tokens": "activated LoRA (alora_invocation_tokens)",
    "layer_replication": "layer replication",
    "modules_to_save": "modules_to_save (Lila adds to projections, it does not replace modules)",
    "trainable_token_indices": "trainable tokens (trainable_token_indices)",
    "target_parameters": "target_parameters",
    "use_bdlora": "block-diagonal LoRA (use_bdlora)",
    "arrow_config": "Arrow routing (arrow_config)",
    "kasa_config": "KaSA (kasa_config)",
    "monteclora_config": "MonteCLoRA (monteclora_config)",
}

# A factor of one of the seven projections: `base_model.model.` + the module's name
# (`model.layers.3.self_attn.q_proj`; `model.language_model.layers.3...` in Gemma 3's
# multimodal model) + `.lora_A.weight` (`.lora_A.default.weight` where the adapter's name
# was kept). Spelled out, so that a module's name is short.
_FACTOR = re.compile(rf"(?:base_model\.model\.)?((?:model\.|language_model\.){{0,3}}layers\.({LAYER})"
                     rf"\.(?:self_attn|mlp)\.({'|'.join(MODULES)}))\.lora_([AB])(?:\.default)?\.weight")
_ADAPTED = re.compile(r"([^.]+)\.lora_(?:embedding_)?[AB]\b")
# Parts of a multimodal model that Lila does not run; llama.cpp's converter drops them too.
_VISION = re.compile(r"(?:^|\.)(?:vision_tower|vision_model|multi_modal_projector)\.")


def is_peft(path: Path) -> bool:
    """Whether `path` names a PEFT adapter: its directory or one of its two files."""
    try:
        return path.name in (CONFIG, WEIGHTS) or (path / CONFIG).is_file()
    except (OSError, ValueError):   # a name too long, a NUL byte: for the caller to report
        return False


@contextmanager
def open_peft(path: Path) -> Iterator[AdapterFile]:
    directory = path if path.is_dir() else path.parent
    config_path, weights = directory / CONFIG, directory / WEIGHTS
    config = _read_config(config_path)
    declared, rslora = _scaling(config_path, config)
    size = _regular_file(weights, _no_weights(directory)).st_size
    header = _header(weights)
    if len(header) > MAX_TENSORS:
        raise fail(weights, f"holds {len(header)} tensors, more than an adapter of "
                            f"{MAX_LAYERS} layers has")
    data = _Data(weights, header)
    trained_on = config.get("base_model_name_or_path")
    file = AdapterFile(
        path=os.fsdecode(weights), format="peft", architecture=None, declared=declared,
        scale=_root_scale if rslora else _linear_scale, rslora=rslora, rows_in_gguf_order=False,
        size=size,
        trained_on=trained_on if isinstance(trained_on, str) else None)
    for name, (shape, dtype) in header.items():
        if len(name) > MAX_NAME_CHARS:
            raise fail(weights, f"a tensor name is {len(name)} characters long: {quoted(name)}")
        if _VISION.search(name):
            file.skipped += 1
            continue
        if dtype not in _DTYPES:
            raise fail(weights, f"tensor {quoted(name)} has type {dtype} "
                                f"(supported: {', '.join(_DTYPES)})")
        tensor = Stored(name, shape, dtype, partial(data.read, name, shape, dtype))
        if not file.add(tensor, _factor(name)):
            raise fail(weights, _unexpected(name))
    try:
        yield file
    finally:
        data.close()


def _factor(name: str) -> tuple[str, str, str] | None:
    factor = _FACTOR.fullmatch(name)
    if factor is None:
        return None
    module, layer, projection, which = factor.groups()
    return f"blk.{int(layer)}.{MODULES[projection]}", module, which.lower()


def _linear_scale(alpha: float, rank: int) -> float:
    return alpha / rank


def _root_scale(alpha: float, rank: int) -> float:   # rsLoRA
    return alpha / math.sqrt(rank)


def _unexpected(name: str) -> str:
    if "lora_magnitude_vector" in name:
        return f"holds DoRA magnitudes ({quoted(name)}): DoRA is not supported"
    adapted = _ADAPTED.search(name)
    if adapted and adapted.group(1) not in MODULES:
        return (f"adapts {quoted(adapted.group(1))} ({quoted(name)}): Lila adapts only "
                f"{', '.join(MODULES)}")
    return f"unexpected tensor {quoted(name)}: not a lora_A or lora_B of a layer's projection"


def _no_weights(directory: Path) -> str:
    if (directory / "adapter_model.bin").exists():
        return f"no {WEIGHTS}, only adapter_model.bin (a pickle, which Lila does not read)"
    return f"no {WEIGHTS}"


def _regular_file(path: Path, missing: str) -> os.stat_result:
    # Checked before opening: opening a FIFO would wait for a writer.
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise fail(path.parent, missing) from None
    except (OSError, ValueError) as e:
        raise fail(path, f"cannot read ({getattr(e, 'strerror', None) or e})") from None
    if not stat.S_ISREG(st.st_mode):
        raise fail(path, "is not a regular file")
    return st


def _read_config(path: Path) -> dict[str, Any]:
    if _regular_file(path, f"no {CONFIG}").st_size > MAX_CONFIG_BYTES:
        raise fail(path, f"is larger than {MAX_CONFIG_BYTES} bytes: not an adapter config")
    try:
        config = json.loads(path.read_bytes())
    except OSError as e:
        raise fail(path, f"cannot read ({e.strerror or e})") from None
    except (ValueError, RecursionError) as e:   # ValueError: bad JSON or UTF-8
        raise fail(path, f"is not valid JSON ({e})") from None
    if not isinstance(config, dict):
        raise fail(path, "is not a JSON object")
    kind = config.get("peft_type")
    if kind != "LORA":
        what = "has no peft_type" if kind is None else f"peft_type {quoted(str(kind))} is not supported"
        raise fail(path, f"{what} (Lila reads LORA adapters)")
    for key, what in _REFUSED.items():
        if config.get(key):
            raise fail(path, f"uses {what}, which Lila does not support")
    if config.get("bias", "none") != "none":
        raise fail(path, f"bias = {quoted(str(config['bias']))} trains the base model's biases, "
                         f"which Lila does not support")
    return config


def _scaling(path: Path, config: dict[str, Any]) -> tuple[Callable[[str], tuple[int, float]], bool]:
    """Each module's declared rank and alpha (PEFT's rank_pattern and alpha_pattern over r
    and lora_alpha), and whether the scale is alpha / sqrt(rank) (rsLoRA)."""
    rank = _rank(path, "r", config.get("r", 8))
    alpha = _alpha(path, "lora_alpha", config.get("lora_alpha", 8))
    rslora = config.get("use_rslora", False)
    if not isinstance(rslora, bool):
        raise fail(path, f"use_rslora should be true or false, got {rslora!r:.40}")
    ranks = _patterns(path, config, "rank_pattern", _rank)
    alphas = _patterns(path, config, "alpha_pattern", _alpha)
    return lambda module: (_lookup(ranks, module, rank), _lookup(alphas, module, alpha)), rslora


def _rank(path: Path, what: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_RANK:
        raise fail(path, f"{what} should be a whole number from 1 to {MAX_RANK}, got {value!r:.40}")
    return value


def _alpha(path: Path, what: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise fail(path, f"{what} should be a finite number, got {value!r:.40}")
    return float(value)


def _patterns(path: Path, config: dict[str, Any], key: str,
              check: Callable[[Path, str, Any], Any]) -> list[tuple[re.Pattern, Any]]:
    patterns = config.get(key) or {}
    if not isinstance(patterns, dict) or len(patterns) > MAX_PATTERNS:
        raise fail(path, f"{key} should be an object of at most {MAX_PATTERNS} patterns")
    compiled = []
    for pattern, value in patterns.items():
        what = f"{key} {quoted(pattern)}"
        if len(pattern) > MAX_PATTERN_CHARS:
            raise fail(path, f"{what} is longer than {MAX_PATTERN_CHARS} characters")
        if (slow := _slow(pattern)) is not None:
            raise fail(path, f"{what} {slow}, which Lila does not match (it can be slow)")
        try:   # as PEFT's get_pattern_key: the pattern matches the name's last dotted parts
            regex = re.compile(rf"(.*\.)?({pattern})$")
        except (re.error, RecursionError, OverflowError) as e:
            raise fail(path, f"{what} is not a valid regular expression ({e})") from None
        compiled.append((regex, check(path, what, value)))
    return compiled


def _slow(pattern: str) -> str | None:
    """Why matching `pattern` may backtrack a long time, or None."""
    # Escapes and character classes are single atoms; "(?:" is a group like "(".
    atoms = re.sub(r"\\.|\[\^?\]?(?:\\.|[^\]\\])*\]", "a", pattern).replace("(?", "(")
    if re.search(r"\)[*+?{]", atoms):
        return "repeats a group"
    if len(re.findall(r"[*+?{]", atoms)) > MAX_REPEATS:
        return f"has more than {MAX_REPEATS} repeats"
    return None


def _lookup(patterns: list[tuple[re.Pattern, Any]], module: str, default: Any) -> Any:
    """The value of the first pattern that matches `module`'s full name, as PEFT chooses."""
    return next((value for regex, value in patterns if regex.match(module)), default)


def _header(path: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    """Each tensor's shape and dtype, in file order; no data is read."""
    try:
        with safe_open(path, framework="numpy") as f:
            return {name: (tuple(f.get_slice(name).get_shape()), f.get_slice(name).get_dtype())
                    for name in f.offset_keys()}
    except Exception as e:   # SafetensorError (a bad header), OSError
        raise fail(path, f"is not a valid safetensors file ({e})") from None


class _Data:
    """The tensors' bytes, mapped at the first request (once every shape has been checked)
    and read one tensor at a time. The safetensors package has checked that the tensors,
    in offset order, cover the data without a gap up to the end of the file, so where each
    one lies follows from the sizes of those before it."""

    def __init__(self, path: Path, header: dict[str, tuple[tuple[int, ...], str]]):
        self.path, self.header = path, header
        self._map: mmap.mmap | None = None
        self._places: dict[str, tuple[int, int]] = {}

    def read(self, name: str, shape: tuple[int, ...], dtype: str) -> np.ndarray:
        if self._map is None:
            self._open()
        offset, nbytes = self._places[name]
        raw = np.frombuffer(self._map, dtype=np.uint8, count=nbytes, offset=offset)
        return dequantize(raw, _DTYPES[dtype], shape)

    def _open(self) -> None:
        sizes = []
        for name, (shape, dtype) in self.header.items():
            if dtype not in _BITS:
                raise fail(self.path, f"tensor {quoted(name)} has type {dtype}, of unknown size")
            sizes.append(math.prod(shape) * _BITS[dtype] // 8)
        try:
            with open(self.path, "rb") as f:
                self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError) as e:   # ValueError: an empty file cannot be mapped
            raise fail(self.path, f"cannot read ({getattr(e, 'strerror', None) or e})") from None
        start = len(self._map) - sum(sizes)
        if start < 8 or struct.unpack_from("<Q", self._map)[0] != start - 8:
            raise fail(self.path, "changed on disk while it was being read")
        for name, size in zip(self.header, sizes):
            self._places[name] = (start, size)
            start += size

    def close(self) -> None:
        if self._map is not None:
            with suppress(BufferError):   # an array still viewing it keeps it until it goes
                self._map.close()
