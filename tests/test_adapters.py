"""LoRA adapters read by lila/fabric/adapter.py, against peft itself.

The reference is peft's merged weight (`merge_and_unload`) converted as convert_hf_to_gguf
converts a weight: the base GGUF's W + scale * B @ A must equal it, which checks the
scale (alpha / rank, rsLoRA, rank_pattern, alpha_pattern) and llama's Q/K row permutation
at once. GGUF LoRA files (written as llama.cpp's convert_lora_to_gguf.py writes them)
must give the PEFT adapter's arrays, and every malformed or mismatched file one
AdapterError line that names it.
"""
from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from safetensors.torch import save_file as save_torch

import hf_gguf
import lora_fixtures
from gguf_mutations import add_metadata
from lila.cli.main import main as lila_main
from lila.errors import AdapterError
from lila.fabric import peft_files
from lila.fabric.adapter import MODULES, Base, describe_adapter, read_adapter
from lila.formats.gguf import GGUFFile
from lila.models import describe

ARCHS = ("llama", "qwen2", "qwen3", "gemma3")
pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")
T = gguf.GGMLQuantizationType
# Largest error of a stored factor, as a fraction of its largest magnitude: half a unit in
# the last place (F16 2^-11, BF16 2^-8); Q8_0 half a step of max / 127, and its f16 scale.
STORAGE_ERROR = {T.F32: 0.0, T.F16: 1e-3, T.BF16: 4e-3, T.Q8_0: 5e-3}


class Tiny:
    """A tiny model, its GGUF as Lila reads it, and its projections' weights from there."""

    def __init__(self, arch: str, directory: Path):
        self.directory = directory
        self.model = hf_gguf.build(arch, directory)
        with GGUFFile.open(self.model.path) as file:
            self.base = Base.of(describe(file))
            self.weights = {key: file.tensor(f"{key}.weight").copy() for key in self.base.shapes}

    def adapter(self, name: str, **options) -> Path:
        return lora_fixtures.peft_adapter(self.model, self.directory / name, **options)

    def gguf_lora(self, adapter: Path, dtype: T = T.F32) -> Path:
        path = self.directory / f"{adapter.name}-{dtype.name}.gguf"
        return lora_fixtures.gguf_lora(adapter, self.model, path, dtype=dtype)


@pytest.fixture(scope="module", params=ARCHS)
def tiny(request, tmp_path_factory) -> Tiny:
    return Tiny(request.param, tmp_path_factory.mktemp(request.param))


@pytest.fixture(scope="module")
def llama(tmp_path_factory) -> Tiny:
    return Tiny("llama", tmp_path_factory.mktemp("llama"))


def assert_matches_peft(tiny: Tiny, adapter: Path) -> None:
    """W + scale * B @ A, per projection, against peft's merge converted to GGUF."""
    lora = read_adapter(adapter, tiny.base).lora
    merged = lora_fixtures.merged_weights(tiny.model, adapter)
    assert set(lora) == set(merged)
    for key, factors in lora.items():
        w = tiny.weights[key]
        assert not np.allclose(merged[key], w), f"{key}: the adapter changes nothing"
        np.testing.assert_allclose(w + factors.scale * factors.b @ factors.a, merged[key],
                                   rtol=1e-5, atol=1e-5, err_msg=key)


@pytest.mark.parametrize("rank", [4, 8, 16, 32])
def test_peft_adapter_adds_what_peft_merges(tiny, rank):
    adapter = tiny.adapter(f"rank{rank}", rank=rank, alpha=12)
    assert_matches_peft(tiny, adapter)
    read = read_adapter(adapter, tiny.base)
    assert (read.format, read.architecture, read.gate) == ("peft", None, None)
    assert read.ranks == (rank,)
    assert read.modules == tuple(sorted(MODULES.values()))
    assert len(read.lora) == 7 * tiny.base.n_layers
    for key, lora in read.lora.items():
        out, inputs = tiny.base.shapes[key]
        assert lora.a.shape == (rank, inputs) and lora.b.shape == (out, rank)
        assert lora.a.dtype == lora.b.dtype == np.float32
        assert all(x.flags.c_contiguous and x.flags.writeable for x in (lora.a, lora.b))
        assert lora.scale == 12 / rank
    assert read.parameters == sum(l.a.size + l.b.size for l in read.lora.values())


def test_rslora_and_patterns_as_peft_applies_them(tiny):
    rank_pattern = {"q_proj": 4, r"layers\.1\.mlp\.down_proj": 16}
    alpha_pattern = {"v_proj": 32, r"layers\.2\.self_attn\.o_proj": 3}
    for rslora in (False, True):
        adapter = tiny.adapter(f"patterns-{rslora}", rank=8, alpha=16, rslora=rslora,
                               rank_pattern=rank_pattern, alpha_pattern=alpha_pattern)
        assert_matches_peft(tiny, adapter)
        read = read_adapter(adapter, tiny.base)
        assert read.ranks == (4, 8, 16)
        root = np.sqrt if rslora else (lambda r: r)
        assert read.lora["blk.0.attn_q"].scale == pytest.approx(16 / root(4))
        assert read.lora["blk.1.ffn_down"].scale == pytest.approx(16 / root(16))
        assert read.lora["blk.0.attn_v"].scale == pytest.approx(32 / root(8))
        assert read.lora["blk.2.attn_output"].scale == pytest.approx(3 / root(8))


def test_only_the_targeted_projections(llama):
    read = read_adapter(llama.adapter("qv", targets=("q_proj", "v_proj")), llama.base)
    assert read.modules == ("attn_q", "attn_v")
    assert list(read.lora)[:2] == ["blk.0.attn_q", "blk.0.attn_v"]


@pytest.mark.parametrize("arch", ["llama", "qwen3"])
@pytest.mark.parametrize("dtype", list(STORAGE_ERROR), ids=lambda t: t.name)
def test_gguf_lora_gives_the_peft_arrays(arch, dtype, tmp_path):
    tiny = Tiny(arch, tmp_path)
    for rank in (8, 32):   # rank 32: B's rows are whole Q8_0 blocks
        adapter = tiny.adapter(f"r{rank}", rank=rank, alpha=16, rank_pattern={"k_proj": 4})
        peft_form = read_adapter(adapter, tiny.base)
        gguf_form = read_adapter(tiny.gguf_lora(adapter, dtype), tiny.base)
        assert (gguf_form.format, gguf_form.architecture) == ("gguf", arch)
        assert gguf_form.lora.keys() == peft_form.lora.keys()
        for key, lora in peft_form.lora.items():
            other = gguf_form.lora[key]
            assert other.scale == lora.scale
            for mine, theirs in ((other.a, lora.a), (other.b, lora.b)):
                assert mine.dtype == np.float32 and mine.flags.c_contiguous
                bound = STORAGE_ERROR[dtype] * np.abs(theirs).max()
                np.testing.assert_allclose(mine, theirs, rtol=0, atol=bound, err_msg=key)


def test_bf16_and_f16_safetensors(llama):
    adapter = llama.adapter("halves", rank=8)
    exact = read_adapter(adapter, llama.base)
    tensors = lora_fixtures.load_file(adapter / lora_fixtures.WEIGHTS)
    for dtype in (torch.bfloat16, torch.float16):
        half = llama.directory / f"halves-{dtype}"
        shutil.copytree(adapter, half)
        rounded = {k: torch.from_numpy(v).to(dtype) for k, v in tensors.items()}
        save_torch(rounded, half / lora_fixtures.WEIGHTS)
        read = read_adapter(half, llama.base)
        for key, lora in exact.lora.items():   # exactly torch's rounding, then permuted
            a = rounded[next(k for k in rounded if _is(k, key, "A"))].float().numpy()
            np.testing.assert_array_equal(read.lora[key].a, a)
            np.testing.assert_allclose(read.lora[key].b, lora.b, rtol=1e-2, atol=1e-3)


def _is(hf_key: str, key: str, which: str) -> bool:
    _, layer, projection = key.split(".")
    module = next(m for m, p in MODULES.items() if p == projection)
    return f"layers.{layer}." in hf_key and f".{module}.lora_{which}" in hf_key


def test_any_path_into_the_directory(llama):
    adapter = llama.adapter("paths", rank=4)
    expected = read_adapter(adapter, llama.base).lora["blk.1.attn_k"]
    for path in (adapter / "adapter_config.json", adapter / "adapter_model.safetensors", str(adapter)):
        np.testing.assert_array_equal(read_adapter(path, llama.base).lora["blk.1.attn_k"].b, expected.b)


def test_gemma3_multimodal_names(tmp_path):
    """Gemma 3's multimodal model names its text layers `model.language_model.layers.N`
    and keeps `.default` where an adapter's name was not stripped; its vision tower is
    left out, as llama.cpp's converter leaves it out."""
    tiny = Tiny("gemma3", tmp_path)
    adapter = tiny.adapter("text", rank=4)
    expected = read_adapter(adapter, tiny.base)
    vision = "base_model.model.model.vision_tower.vision_model.encoder.layers.0.self_attn.q_proj"

    def multimodal(tensors):
        renamed = {k.replace("model.model.layers.", "model.model.language_model.layers.")
                   .replace(".weight", ".default.weight"): v for k, v in tensors.items()}
        # Of other types, so that they lie before and after the factors in the file.
        return {**renamed, f"{vision}.lora_A.weight": np.ones((3, 5), np.float64),
                f"{vision}.lora_B.weight": np.ones((7, 3), np.int8)}

    lora_fixtures.rewrite_tensors(adapter, multimodal)
    read = read_adapter(adapter, tiny.base)
    assert read.lora.keys() == expected.lora.keys()
    np.testing.assert_array_equal(read.lora["blk.6.ffn_up"].b, expected.lora["blk.6.ffn_up"].b)
    assert ("skipped", "2 tensors of a vision tower (Lila runs the text model)") in describe_adapter(adapter)


# --- gates -------------------------------------------------------------------------------

@pytest.mark.parametrize("bias_shape", [None, (), (1,), (3,)])
@pytest.mark.parametrize("shared", [True, False])
def test_gate(llama, shared, bias_shape):
    n, dim = llama.base.n_layers, llama.base.dim
    rng = np.random.default_rng(0)
    weight = rng.standard_normal(dim if shared else (n, dim)).astype(np.float32)
    gate = {"lila_gate.weight": weight}
    if bias_shape is not None:
        gate["lila_gate.bias"] = np.arange(1, 1 + int(np.prod(bias_shape)), dtype=np.float32).reshape(bias_shape)
    adapter = llama.adapter(f"gate-{shared}-{bias_shape}", rank=4, gate=gate)
    forms = [adapter] + ([llama.gguf_lora(adapter)] if bias_shape != () else [])  # GGUF has no 0-D tensor
    for path in forms:
        read = read_adapter(path, llama.base).gate
        assert read.shared == shared
        assert read.weight.shape == (n, dim) and read.weight.dtype == np.float32
        np.testing.assert_array_equal(read.weight, np.broadcast_to(weight, (n, dim)))
        expected_bias = {None: [0, 0, 0], (): [1, 1, 1], (1,): [1, 1, 1], (3,): [1, 2, 3]}[bias_shape]
        np.testing.assert_array_equal(read.bias, np.float32(expected_bias))
    row = dict(describe_adapter(adapter))["gate"]
    assert row.startswith("shared (64)" if shared else "per layer (3 x 64)")


# --- what is refused ---------------------------------------------------------------------

def refused(path, base: Base, *says: str, names: Path | None = None) -> str:
    """The one-line message, which names `path` (or the file `names`)."""
    with pytest.raises(AdapterError) as caught:
        read_adapter(path, base)
    message = str(caught.value)
    assert "\n" not in message and str(names or path) in message, message
    for word in says:
        assert word in message, message
    return message


@pytest.fixture(scope="module")
def pristine(llama) -> Path:
    return llama.adapter("pristine", rank=4)


@pytest.fixture
def broken(pristine, tmp_path) -> Path:
    """A copy of a good adapter, to break."""
    return Path(shutil.copytree(pristine, tmp_path / "adapter"))


def edit_config(adapter: Path, **changes) -> None:
    config = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps({**config, **changes}))


Q_A = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
Q_B = Q_A.replace("lora_A", "lora_B")
K_A = Q_A.replace("q_proj", "k_proj")
K_B = K_A.replace("lora_A", "lora_B")

CONFIG_CASES = {
    "IA3": (dict(peft_type="IA3"), "'IA3' is not supported"),
    "no peft_type": (dict(peft_type=None), "no peft_type"),
    "DoRA": (dict(use_dora=True), "DoRA"),
    "lora_bias": (dict(lora_bias=True), "lora_bias"),
    "QALoRA": (dict(use_qalora=True), "QALoRA"),
    "modules_to_save": (dict(modules_to_save=["lm_head"]), "modules_to_save"),
    "layer_replication": (dict(layer_replication=[[0, 2], [1, 3]]), "layer replication"),
    "aLoRA": (dict(alora_invocation_tokens=[1, 2]), "activated LoRA"),
    "bias": (dict(bias="all"), "biases"),
    "rank 0 declared": (dict(r=0), "r should be"),
    "rank a string": (dict(r="4"), "r should be"),
    "alpha NaN": (dict(lora_alpha=float("nan")), "lora_alpha should be"),
    "bad pattern": (dict(rank_pattern={"q_proj(": 4}), "not a valid regular expression"),
    "bad pattern value": (dict(alpha_pattern={"q_proj": "x"}), "alpha_pattern 'q_proj'"),
    "pattern repeating a group": (dict(rank_pattern={"(a|.)*z": 4}), "repeats a group"),
    "pattern of many repeats": (dict(alpha_pattern={".*.*.*z": 4}), "more than 2 repeats"),
    "declared rank differs": (dict(r=8), "rank 4, but the config gives"),
    "pattern rank differs": (dict(rank_pattern={"q_proj": 2}), "blk.0.attn_q: rank 4"),
}


@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_config_refused(broken, llama, case):
    changes, says = CONFIG_CASES[case]
    edit_config(broken, **changes)
    refused(broken, llama.base, "adapter_config.json" if "rank" not in says else "safetensors", says)


def _with(**tensors):
    return lambda held: {**held, **tensors}


def _without(*names):
    return lambda held: {k: v for k, v in held.items() if k not in names}


def _renamed(old, new):
    return lambda held: {k.replace(old, new): v for k, v in held.items()}


def _changed(name, values):
    return lambda held: {**held, name: values(held[name])}


def _nan(values):
    values = values.copy()
    values[1, 2] = np.nan
    return values


TENSOR_CASES = {
    "NaN": (_changed(Q_A, _nan), "NaN or infinite"),
    "Inf": (_changed(K_B, lambda v: v * np.float32(np.inf)), "NaN or infinite"),
    "B beyond fp16": (_changed(Q_B, lambda v: v + np.float32(1e5)), "beyond fp16's range"),
    "rank 0": (_with(**{Q_A: np.zeros((0, 64), np.float32), Q_B: np.zeros((64, 0), np.float32)}),
               "rank 0"),
    "wrong in": (_changed(Q_A, lambda v: np.ones((4, 65), np.float32)), "65 projection"),
    "wrong out": (_changed(Q_B, lambda v: np.ones((65, 4), np.float32)), "65 x 64 projection"),
    "ranks differ": (_changed(Q_B, lambda v: np.ones((64, 5), np.float32)), "should be (rank, in)"),
    "1-D factor": (_changed(Q_A, lambda v: v.reshape(-1)), "should be (rank, in)"),
    "layer past the model": (_renamed("layers.2.", "layers.9."), "layer 9, but the model has 3"),
    "A without B": (_without(Q_B), "no matching B"),
    "B without A": (_without(Q_A), "no matching A"),
    "lm_head": (_with(**{"base_model.model.lm_head.lora_A.weight": np.ones((4, 64), np.float32)}),
                "adapts 'lm_head'"),
    "embeddings": (_with(**{"base_model.model.model.embed_tokens.lora_embedding_A": np.ones((4, 10), np.float32)}),
                   "adapts 'embed_tokens'"),
    "DoRA magnitude": (_with(**{Q_A.replace("lora_A.weight", "lora_magnitude_vector"): np.ones(64, np.float32)}),
                       "DoRA"),
    "unknown tensor": (_with(**{"something.else": np.ones(3, np.float32)}), "'something.else'"),
    "a name too long": (_with(**{"x" * 5000: np.ones(3, np.float32)}), "5000 characters long"),
    "a projection elsewhere": (_renamed("model.model.layers.1.", "model.encoder.layers.1."),
                               "unexpected tensor 'base_model.model.encoder.layers.1"),
    "integer type": (_changed(Q_A, lambda v: v.astype(np.int32)), "type I32"),
    "nothing": (lambda held: {}, "holds no LoRA factors"),
    "two A for one projection": (_with(**{Q_A.replace(".weight", ".default.weight"): np.ones((4, 64), np.float32)}),
                                 "two tensors for the same factor"),
    "gate weight shape": (_with(**{"lila_gate.weight": np.ones(65, np.float32)}), "lila_gate.weight has shape (65,)"),
    "gate per layer shape": (_with(**{"lila_gate.weight": np.ones((4, 64), np.float32)}), "(4, 64)"),
    "gate bias shape": (_with(**{"lila_gate.weight": np.ones(64, np.float32),
                                 "lila_gate.bias": np.ones(2, np.float32)}), "lila_gate.bias has shape (2,)"),
    "gate bias alone": (_with(**{"lila_gate.bias": np.ones(3, np.float32)}), "no lila_gate.weight"),
    "gate NaN": (_with(**{"lila_gate.weight": np.full(64, np.nan, np.float32)}), "NaN"),
}


@pytest.mark.parametrize("case", list(TENSOR_CASES))
def test_tensors_refused(broken, llama, case):
    change, says = TENSOR_CASES[case]
    lora_fixtures.rewrite_tensors(broken, change)
    refused(broken, llama.base, "adapter_model.safetensors", says)


def test_rank_over_what_the_projection_allows(broken, llama):
    edit_config(broken, rank_pattern={r"layers\.0\.self_attn\.k_proj": 40})
    lora_fixtures.rewrite_tensors(broken, _with(**{K_A: np.ones((40, 64), np.float32),
                                                   K_B: np.ones((32, 40), np.float32)}))
    refused(broken, llama.base, "blk.0.attn_k: rank 40 is larger than the projection's 32 x 64")


def test_too_many_tensors(broken, llama, monkeypatch):
    monkeypatch.setattr(peft_files, "MAX_TENSORS", 40)
    refused(broken, llama.base, "holds 42 tensors")


def test_random_damage_is_one_line(pristine, llama, tmp_path):
    """Bytes of the config, the safetensors header or a GGUF LoRA overwritten at random:
    an adapter that still reads, or one AdapterError line, never another exception."""
    rng = np.random.default_rng(0)
    files = {name: (pristine / name).read_bytes() for name in ("adapter_config.json", "adapter_model.safetensors")}
    files["adapter.gguf"] = llama.gguf_lora(pristine).read_bytes()
    header_end = 8 + struct.unpack("<Q", files["adapter_model.safetensors"][:8])[0]
    outcomes = set()
    for case in range(300):
        target = tmp_path / f"case{case}"
        target.mkdir()
        for name, data in files.items():
            (target / name).write_bytes(data)
        name = list(files)[case % 3]
        data = bytearray(files[name])
        end = header_end if name == "adapter_model.safetensors" else len(data)
        for at in rng.integers(0, end, rng.integers(1, 6)):
            data[at] = rng.integers(0, 256)
        (target / name).write_bytes(bytes(data))
        path = target / "adapter.gguf" if name == "adapter.gguf" else target
        try:
            read_adapter(path, llama.base)
            outcomes.add("read")
        except AdapterError as e:
            assert "\n" not in str(e)
            outcomes.add("refused")
    assert outcomes == {"read", "refused"}


def test_shapes_refused_before_any_data_is_read(broken, llama, monkeypatch):
    lora_fixtures.rewrite_tensors(broken, _changed(Q_A, lambda v: np.ones((4, 65), np.float32)))
    monkeypatch.setattr(peft_files._Data, "read", lambda *args: pytest.fail("data read"))
    refused(broken, llama.base, "65 projection")


def _header(header, data: bytes = b"", length: int | None = None) -> bytes:
    body = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(body) if length is None else length) + body + data


HOSTILE = {
    "empty": b"",
    "shorter than its length": b"\x10\x00\x00",
    "header length past the end": _header({}, length=1 << 40),
    "header length 2**64-1": _header({}, length=(1 << 64) - 1),
    "garbage JSON": _header(b"{not json at all"),
    "JSON not an object": _header(b"[1, 2, 3]"),
    "invalid UTF-8": _header(b'{"\xff": 1}'),
    "offsets past the end": _header({Q_A: {"dtype": "F32", "shape": [4, 64], "data_offsets": [0, 1024]}},
                                    b"\0" * 16),
    "huge shape": _header({Q_A: {"dtype": "F32", "shape": [1 << 40, 1 << 40], "data_offsets": [0, 16]}},
                          b"\0" * 16),
    "shape and offsets disagree": _header({Q_A: {"dtype": "F32", "shape": [1 << 20, 64], "data_offsets": [0, 16]}},
                                          b"\0" * 16),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_safetensors(broken, llama, case):
    (broken / "adapter_model.safetensors").write_bytes(HOSTILE[case])
    refused(broken, llama.base, "adapter_model.safetensors")
    with pytest.raises(AdapterError):
        describe_adapter(broken)


def test_files_missing_or_unreadable(broken, llama, tmp_path):
    refused(tmp_path / "nowhere", llama.base, "no such file")
    refused(tmp_path, llama.base, "without adapter_config.json")
    (broken / "adapter_config.json").write_bytes(b"{\xff")
    refused(broken, llama.base, "not valid JSON")
    (broken / "adapter_config.json").write_text("[]")
    refused(broken, llama.base, "not a JSON object")
    (broken / "adapter_config.json").write_text("[" * 100_000 + "]" * 100_000)
    refused(broken, llama.base, "adapter_config.json")
    (broken / "adapter_config.json").write_text("{}" + " " * (1 << 20))
    refused(broken, llama.base, "larger than")
    (broken / "adapter_config.json").unlink()
    refused(broken / "adapter_model.safetensors", llama.base, "no adapter_config.json", names=broken)
    shutil.copy(llama.directory / "pristine" / "adapter_config.json", broken)
    (broken / "adapter_model.safetensors").rename(broken / "adapter_model.bin")
    refused(broken, llama.base, "only adapter_model.bin")
    (broken / "adapter_model.bin").unlink()
    refused(broken, llama.base, "no adapter_model.safetensors")


# --- GGUF LoRA refused -------------------------------------------------------------------

def _gguf(path: Path, arch: str, tensors: dict, **keys) -> Path:
    writer = gguf.GGUFWriter(str(path), arch)
    metadata = {"general.type": "adapter", "adapter.type": "lora", **keys}
    add_metadata(writer, {key: value for key, value in metadata.items() if value is not None})
    for name, (values, dtype) in tensors.items():
        writer.add_tensor(name, gguf.quants.quantize(values, dtype), raw_dtype=dtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _q_factors(a=None, b=None, dtype=T.F32):
    a = np.ones((4, 64), np.float32) if a is None else a
    b = np.ones((64, 4), np.float32) if b is None else b
    return {"blk.0.attn_q.weight.lora_a": (a, dtype), "blk.0.attn_q.weight.lora_b": (b, dtype)}


GGUF_CASES = {
    "another architecture": (dict(arch="qwen2"), "for 'qwen2', but the model is 'llama'"),
    "not an adapter": (dict(keys={"general.type": "model"}), "not an adapter"),
    "no general.type": (dict(keys={"general.type": None}), "not an adapter"),
    "control vector": (dict(keys={"adapter.type": "control_vector"}), "'control_vector' is not supported"),
    "aLoRA": (dict(keys={"adapter.alora.invocation_tokens": [1, 2]}), "activated LoRA"),
    "token_embd": (dict(tensors={"token_embd.weight.lora_a": (np.ones((4, 64), np.float32), T.F32)}),
                   "adapts 'token_embd'"),
    "output": (dict(tensors={"output.weight.lora_b": (np.ones((64, 4), np.float32), T.F32)}), "adapts 'output'"),
    "norm": (dict(tensors={"blk.0.attn_norm.weight": (np.ones(64, np.float32), T.F32)}), "'blk.0.attn_norm.weight'"),
    "Q4_0": (dict(tensors=_q_factors(a=np.ones((4, 64), np.float32), dtype=T.Q4_0) | {
        "blk.0.attn_q.weight.lora_b": (np.ones((64, 32), np.float32), T.F32)}), "type Q4_0"),
    "NaN": (dict(tensors=_q_factors(b=np.full((64, 4), np.nan, np.float32))), "NaN"),
    "wrong out": (dict(tensors=_q_factors(b=np.ones((63, 4), np.float32))), "63 x 64 projection"),
    "layer past the model": (dict(tensors={k.replace("blk.0", "blk.3"): v for k, v in _q_factors().items()}),
                             "layer 3"),
    "A without B": (dict(tensors={"blk.0.attn_q.weight.lora_a": (np.ones((4, 64), np.float32), T.F32)}),
                    "no matching B"),
}


@pytest.mark.parametrize("case", list(GGUF_CASES))
def test_gguf_refused(llama, tmp_path, case):
    spec, says = GGUF_CASES[case]
    path = _gguf(tmp_path / "adapter.gguf", spec.get("arch", "llama"), spec.get("tensors", _q_factors()),
                 **{"adapter.lora.alpha": 8.0, **spec.get("keys", {})})
    refused(path, llama.base, says)


def test_gguf_alpha_zero_or_missing_means_scale_one(llama, tmp_path):
    for alpha in (0.0, None):
        path = _gguf(tmp_path / f"alpha-{alpha}.gguf", "llama", _q_factors(), **{"adapter.lora.alpha": alpha})
        assert read_adapter(path, llama.base).lora["blk.0.attn_q"].scale == 1.0


def test_gguf_damaged(llama, pristine, tmp_path):
    data = llama.gguf_lora(pristine).read_bytes()
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(data[: len(data) // 2])
    refused(truncated, llama.base, "truncated")
    refused(llama.model.path, llama.base, "not an adapter")


# --- lila info ---------------------------------------------------------------------------

def info(capsys, path) -> dict[str, str]:
    assert lila_main(["info", str(path)]) == 0
    rows = {}
    for line in capsys.readouterr().out.splitlines():
        key, _, value = line.partition("  ")
        rows[key.strip()] = value.strip()
    return rows


def test_lila_info(llama, capsys):
    adapter = llama.adapter("info", rank=8, targets=("q_proj", "down_proj"), rank_pattern={"q_proj": 4},
                            gate={"lila_gate.weight": np.ones(64, np.float32)})
    peft_rows = info(capsys, adapter)
    gguf_rows = info(capsys, llama.gguf_lora(adapter, T.Q8_0))
    for rows in (peft_rows, gguf_rows):
        assert rows["ranks"] == "4, 8"
        assert rows["target modules"] == "attn_q, ffn_down"
        assert rows["layers"] == "3 (0-2)"
        assert rows["gate"] == "shared (64), no bias"
        assert rows["alpha / scale"] == "alpha 16, rank 4: scale 4; alpha 16, rank 8: scale 2"
    assert peft_rows["format"] == "PEFT LoRA (safetensors, F32)" and peft_rows["architecture"] == "not declared"
    assert gguf_rows["format"] == "GGUF LoRA (F16, Q8_0)" and gguf_rows["architecture"] == "llama"
    assert peft_rows["parameters"] == gguf_rows["parameters"] == f"{3 * (4 * (64 + 64) + 8 * (96 + 64)):,}"


def test_lila_info_on_a_broken_adapter(broken, capsys):
    edit_config(broken, use_dora=True)
    assert lila_main(["info", str(broken)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "DoRA" in err and "\n" not in err


def test_describe_names_the_base_the_config_names(broken):
    edit_config(broken, base_model_name_or_path="org/model")
    assert dict(describe_adapter(broken))["architecture"] == "not declared (trained on org/model)"
