"""The GGUF reader against the gguf package's reader, on generated files and the shipped model."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

import gguf
import gguf.quants as ref
from gguf_mutations import base_file_bytes, put, write_base_file
from lila.errors import LilaError, ModelFormatError
from lila.formats import gguf as reader
from lila.formats.gguf import GGMLType, GGUFFile, TensorInfo
from lila.store import default_model_path


MODEL = default_model_path()


def plain(value):
    """Metadata as gguf's ReaderField.contents() gives it: lists instead of arrays."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def assert_same_as_gguf(f: GGUFFile, path: Path, *, nested_ok: bool = False) -> None:
    r = gguf.GGUFReader(path)
    fields = {k: v for k, v in r.fields.items() if not k.startswith("GGUF.")}
    assert list(f.metadata) == list(fields)
    for key, field in fields.items():
        ours = plain(f.metadata[key])
        if nested_ok and isinstance(ours, list) and ours and isinstance(ours[0], list):
            ours = [x for inner in ours for x in inner]  # gguf flattens nested arrays
        assert ours == field.contents(), key
    assert f.version == r.fields["GGUF.version"].contents()
    assert f.alignment == r.alignment and f.data_offset == r.data_offset
    assert list(f.tensors) == [t.name for t in r.tensors]
    for t in r.tensors:
        info = f.tensors[t.name]
        assert info.shape == tuple(reversed(t.shape.tolist()))
        assert int(info.ggml_type) == int(t.tensor_type)
        assert (info.offset, info.nbytes) == (t.data_offset, t.n_bytes)
        want = ref.dequantize(t.data, t.tensor_type).reshape(info.shape)
        got = f.tensor(t.name)
        assert got.dtype == np.float32 and got.shape == info.shape
        assert np.array_equal(got.view(np.uint32), want.astype(np.float32).view(np.uint32)), t.name


# --- generated files -------------------------------------------------------------------

ALL_SUPPORTED = [
    ("t.f32", GGMLType.F32, (3, 4)),
    ("t.f16", GGMLType.F16, (2, 3, 5)),
    ("t.bf16", GGMLType.BF16, (7,)),
    ("t.q4_0", GGMLType.Q4_0, (3, 64)),
    ("t.q4_1", GGMLType.Q4_1, (5, 32)),
    ("t.q5_0", GGMLType.Q5_0, (1, 96)),
    ("t.q5_1", GGMLType.Q5_1, (2, 2, 32)),
    ("t.q8_0", GGMLType.Q8_0, (3, 32)),
    ("t.q2_k", GGMLType.Q2_K, (3, 256)),
    ("t.q3_k", GGMLType.Q3_K, (1, 512)),
    ("t.q4_k", GGMLType.Q4_K, (2, 256)),
    ("t.q5_k", GGMLType.Q5_K, (3, 256)),
    ("t.q6_k", GGMLType.Q6_K, (4, 256)),
]


@pytest.fixture(scope="module")
def all_types_file(tmp_path_factory) -> Path:
    return write_base_file(tmp_path_factory.mktemp("gguf"), tensors=ALL_SUPPORTED)


def test_generated_file_matches_gguf_reader(all_types_file):
    with GGUFFile.open(all_types_file) as f:
        assert_same_as_gguf(f, all_types_file, nested_ok=True)
        assert f.unsupported_tensors() == []


def test_metadata_value_kinds(all_types_file):
    with GGUFFile.open(all_types_file) as f:
        m = f.metadata
        assert m["general.architecture"] == "llama" and m["general.name"] == "mutation base"
        assert m["test.u32a"] == 7 and m["test.i8"] == -3 and m["test.u64"] == 2**40
        assert m["test.f32"] == 0.5 and m["test.f64"] == -1.25
        assert m["test.flag"] is True
        assert m["tokenizer.ggml.tokens"] == ["<s>", "hello", "wörld", "☃", ""]
        scores = m["tokenizer.ggml.scores"]
        assert isinstance(scores, np.ndarray) and scores.dtype == np.float32 and scores.tolist() == [0, -1, -2, -3, -4]
        nested = m["test.nested"]
        assert isinstance(nested, list) and [x.tolist() for x in nested] == [[1, 2], [3]]
        assert type(m["general.alignment"]) is int


def test_tensor_table_is_numpy_order(all_types_file):
    with GGUFFile.open(all_types_file) as f:
        info = f.tensors["t.q4_0"]
        assert isinstance(info, TensorInfo)
        assert info.shape == (3, 64) and info.ggml_type is GGMLType.Q4_0
        assert info.nbytes == 3 * 2 * 18 and info.offset % f.alignment == 0
        assert f.tensors["t.f16"].shape == (2, 3, 5)
        assert list(f.tensors) == [name for name, _, _ in ALL_SUPPORTED]


def test_tensor_bytes_are_views_into_the_map(all_types_file):
    with GGUFFile.open(all_types_file) as f:
        raw = f.tensor_bytes("t.q8_0")
        assert raw.dtype == np.uint8 and raw.size == f.tensors["t.q8_0"].nbytes
        assert not raw.flags.owndata and not raw.flags.writeable
        assert np.shares_memory(raw, f.tensor_bytes("t.q8_0"))
        assert np.shares_memory(f.tensor("t.f32"), raw.base)  # F32 is not copied either
        with open(all_types_file, "rb") as fh:
            fh.seek(f.tensors["t.q8_0"].offset)
            assert fh.read(raw.size) == raw.tobytes()


def test_close_with_views_outstanding(all_types_file):
    f = GGUFFile.open(all_types_file)
    kept = f.tensor_bytes("t.q4_k")
    copy = kept.copy()
    f.close()
    f.close()  # idempotent
    assert np.array_equal(kept, copy)  # the map lives as long as the view
    with pytest.raises(LilaError, match="closed"):
        f.tensor("t.q4_k")


def test_missing_tensor_name(all_types_file):
    with GGUFFile.open(all_types_file) as f, pytest.raises(ModelFormatError, match="no tensor 'nope'"):
        f.tensor("nope")


def test_version_2_and_custom_alignment(tmp_path):
    data = put(base_file_bytes(alignment=64), 4, "I", 2)
    path = tmp_path / "v2.gguf"
    path.write_bytes(data)
    with GGUFFile.open(path) as f:
        assert f.version == 2 and f.alignment == 64 and f.data_offset % 64 == 0
        assert all(t.offset % 64 == 0 for t in f.tensors.values())
        assert_same_as_gguf(f, path, nested_ok=True)


def test_default_alignment_without_key(tmp_path):
    # The writer always writes general.alignment when asked; rename the key to drop it.
    data = base_file_bytes()
    at = data.index(b"general.alignment")
    path = tmp_path / "noalign.gguf"
    path.write_bytes(data[:at] + b"general.alignmenT" + data[at + 17:])
    with GGUFFile.open(path) as f:
        assert f.alignment == 32 and "general.alignmenT" in f.metadata


def test_metadata_object_budget(tmp_path, monkeypatch):
    path = write_base_file(tmp_path)
    monkeypatch.setattr(reader, "MAX_METADATA_OBJECTS", 4)
    with pytest.raises(ModelFormatError, match="tokenizer.ggml.tokens.*more than 4 strings"):
        GGUFFile.open(path)


def test_strings_with_nul_bytes(tmp_path):
    data = base_file_bytes()
    at = data.index(b"hello")
    path = tmp_path / "nul.gguf"
    path.write_bytes(data[:at] + b"he\0lo" + data[at + 5:])
    with GGUFFile.open(path) as f:
        assert f.metadata["tokenizer.ggml.tokens"][1] == "he\0lo"


# --- opening things that are not GGUF files ---------------------------------------------

def open_error(path) -> str:
    with pytest.raises(LilaError) as info:
        GGUFFile.open(path)
    msg = str(info.value)
    assert "\n" not in msg and str(path) in msg
    return msg


def test_open_errors(tmp_path):
    assert "no such file" in open_error(tmp_path / "missing.gguf")
    assert "directory" in open_error(tmp_path)
    (tmp_path / "empty.gguf").write_bytes(b"")
    assert "empty" in open_error(tmp_path / "empty.gguf")
    (tmp_path / "text.gguf").write_text("hello, I am not a model\n")
    assert "not a GGUF file" in open_error(tmp_path / "text.gguf")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_open_fifo_does_not_hang(tmp_path):
    os.mkfifo(tmp_path / "pipe")
    assert "not a regular file" in open_error(tmp_path / "pipe")


AS_NOBODY = """
import os, sys
from lila.errors import LilaError
from lila.formats.gguf import GGUFFile
os.setgid(65534)
os.setuid(65534)
try:
    GGUFFile.open(sys.argv[1])
except LilaError as e:
    print(e)
"""


def test_open_permission_denied():
    with tempfile.TemporaryDirectory() as directory:
        os.chmod(directory, 0o711)   # anyone reaches the file; its mode lets no one read it
        path = write_base_file(Path(directory))
        path.chmod(0)
        if os.geteuid() != 0:
            assert "permission denied" in open_error(path)
        else:   # root reads anything: ask from a child that gives root up
            r = subprocess.run([sys.executable, "-c", AS_NOBODY, str(path)],
                               capture_output=True, text=True, timeout=60)
            assert r.returncode == 0, r.stderr
            assert r.stdout.strip() == f"{path}: permission denied", r.stdout


# --- the shipped model ------------------------------------------------------------------

def test_shipped_model_matches_gguf_reader():
    with GGUFFile.open(MODEL) as f:
        assert f.metadata["general.architecture"] == "llama"
        assert f.metadata["llama.block_count"] == 30
        assert len(f.metadata["tokenizer.ggml.tokens"]) == 49152
        assert len(f.tensors) == 272
        assert f.tensors["token_embd.weight"].shape == (49152, 576)
        assert f.tensors["token_embd.weight"].ggml_type is GGMLType.Q8_0
        assert f.tensors["blk.0.ffn_down.weight"].shape == (576, 1536)
        assert f.unsupported_tensors() == []
        assert_same_as_gguf(f, MODEL)


def test_shipped_model_is_mapped_not_copied():
    with GGUFFile.open(MODEL) as f:
        emb = f.tensor_bytes("token_embd.weight")
        assert not emb.flags.owndata and not emb.flags.writeable
        assert np.shares_memory(emb, f.tensor_bytes("blk.0.attn_q.weight").base)
        assert f.metadata["tokenizer.ggml.token_type"].dtype == np.int32

