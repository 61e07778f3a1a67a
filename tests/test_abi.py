"""The kernel ABI has one source, native/include/lila_kernels.h, and everything reads it
from there: the build's reading agrees with the C compiler's and with the GGUF format,
every family and the numba backend implement every type in it, and the executor's own
report of the kernels an op calls is complete and is what the loader checks.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kernel_reference import family_params
from lila.executor import numba_kernels
from lila.formats.quants import BLOCK_SIZE, TYPE_SIZE, GGMLType
from lila.native import abi, build, library

FAMILIES = family_params()

# Prints each row of LILA_WEIGHT_TYPES as the C preprocessor expands it, then lila_q8's
# layout as the C compiler lays it out.
C_PROGRAM = r"""
#include <stddef.h>
#include <stdio.h>
#include "lila_kernels.h"
#define PRINT_ROW(NAME, name, id, values, bytes, kernels, ...) \
    printf("%s %d %d %d %s\n", #NAME, id, values, bytes, #kernels);
int main(void)
{
    LILA_WEIGHT_TYPES(PRINT_ROW, 0)
    printf("q8 %zu %zu %zu %zu %d\n", offsetof(lila_q8, d), offsetof(lila_q8, s),
           offsetof(lila_q8, qs), sizeof(lila_q8), (int)LILA_NTYPES);
    return 0;
}
"""


def test_the_build_reads_the_header_as_the_c_compiler_does(tmp_path):
    source = tmp_path / "abi.c"
    source.write_text(C_PROGRAM)
    subprocess.run(["cc", "-std=c11", "-I", str(build.NATIVE / "include"), str(source), "-o",
                    str(tmp_path / "abi")], check=True, capture_output=True)
    lines = subprocess.run([str(tmp_path / "abi")], check=True, capture_output=True,
                           text=True).stdout.split("\n")
    rows = [line.split() for line in lines if line and not line.startswith("q8 ")]
    assert [(name, int(id), int(v), int(b), k) for name, id, v, b, k in rows] == build.weight_types()
    seen = {t.name: (int(t), w.block_values, w.block_bytes, w.matmul) for t, w in abi.WEIGHT_TYPES.items()}
    assert seen == {name: (int(id), int(v), int(b), k == "MATMUL") for name, id, v, b, k in rows}
    q8 = next(line.split()[1:] for line in lines if line.startswith("q8 "))
    d, s, qs, size, ntypes = map(int, q8)
    assert (abi.Q8_DTYPE.fields["d"][1], abi.Q8_DTYPE.fields["s"][1],
            abi.Q8_DTYPE.fields["qs"][1], abi.Q8_DTYPE.itemsize) == (d, s, qs, size)
    assert abi.NTYPES == ntypes and abi.Q8_VALUES == 32


def test_a_source_tree_without_the_build_reads_the_same_constants(monkeypatch):
    """Where the build has not written lila/native/_ffi.py (a source checkout, a machine
    with no compiler), abi parses the headers itself: its constants read the same."""
    names = ("LILA_NAMESPACES", "LILA_GATE_FLOOR_LOG2", "LILA_LORA_TRANSPOSED_RANK")
    built = [abi._constant(name) for name in names]
    monkeypatch.setattr(abi, "ffi", build.declarations())
    assert [abi._constant(name) for name in names] == built


def test_the_abi_types_are_the_gguf_formats():
    """Type ids and blocks as the GGUF reader (lila.formats.quants, from ggml) knows them."""
    for t, w in abi.WEIGHT_TYPES.items():
        assert (w.block_values, w.block_bytes) == (BLOCK_SIZE[t], TYPE_SIZE[t]), t.name
        assert int(t) < abi.NTYPES
    assert abi.MATMUL_TYPES <= set(abi.WEIGHT_TYPES)
    assert {GGMLType.F32, GGMLType.F16} <= set(abi.WEIGHT_TYPES) - abi.MATMUL_TYPES


def test_the_abi_include_for_the_assembly_states_the_layout():
    text = build.abi_include(build.declarations())
    for field in ("d", "s", "qs"):
        assert f"#define LILA_Q8_{field.upper()} {abi.Q8_DTYPE.fields[field][1]}\n" in text
    assert f"#define LILA_Q8_BYTES {abi.Q8_DTYPE.itemsize}\n" in text
    for t, w in abi.WEIGHT_TYPES.items():
        assert f"#define LILA_{t.name}_BLOCK_BYTES {w.block_bytes}\n" in text


def test_numba_has_a_kernel_for_every_matmul_type():
    assert numba_kernels.missing_kernels() == []
    assert numba_kernels.MATMUL_TYPES == {int(t) for t in abi.MATMUL_TYPES}


# --- the executor's report of the kernels an op calls -----------------------------------------

def op(native, **fields):
    """A lila_op with the given fields (parts: a list of dicts) and its keepalives."""
    cdata = native.ffi.new("lila_op *")
    for key, value in fields.items():
        if key == "parts":
            for i, part in enumerate(value):
                for k, v in part.items():
                    setattr(cdata.parts[i], k, v)
        else:
            setattr(cdata, key, value)
    return cdata


def matmul(native, wtype: GGMLType, width: int = 64, row_bytes: int | None = None, **fields):
    info = abi.WEIGHT_TYPES.get(wtype)
    if row_bytes is None:
        row_bytes = width // info.block_values * info.block_bytes
    return op(native, kind=native.lib.LILA_OP_MATMUL, nb=width // 32, n_parts=1,
              parts=[{"wtype": int(wtype), "row_bytes": row_bytes, "rows": 4}], **fields)


def test_the_executor_names_the_kernels_of_an_op():
    native = library()
    names = lambda slots: sorted(native.entry_name(s) for s in slots)   # noqa: E731
    assert names(native.op_kernels(matmul(native, GGMLType.Q4_K, width=256))) == \
        ["gemm[Q4_K]", "gemv[Q4_K]"]
    lib = native.lib
    glu = op(native, kind=lib.LILA_OP_MATMUL, nb=2, n_parts=2, flags=lib.LILA_GLU_GELU,
             parts=[{"wtype": 8, "row_bytes": 68, "rows": 4}, {"wtype": 2, "row_bytes": 36, "rows": 4}])
    assert names(native.op_kernels(glu)) == ["gelu_mul", "gemm[Q4_0]", "gemm[Q8_0]",
                                             "gemv[Q4_0]", "gemv[Q8_0]"]
    assert names(native.op_kernels(matmul(native, GGMLType.Q8_0, flags=lib.LILA_ACCUMULATE))) == \
        ["add", "gemm[Q8_0]", "gemv[Q8_0]"]
    bias = native.ffi.new("float[4]")
    biased = op(native, kind=lib.LILA_OP_MATMUL, nb=2, n_parts=1,
                parts=[{"wtype": 8, "row_bytes": 68, "rows": 4, "bias": bias}])
    assert names(native.op_kernels(biased)) == ["add", "gemm[Q8_0]", "gemv[Q8_0]"]
    rope = op(native, kind=lib.LILA_OP_ROPE, flags=lib.LILA_NEOX)
    assert names(native.op_kernels(rope)) == ["rope_neox"]
    attention = op(native, kind=lib.LILA_OP_ATTENTION, heads=4, kv_heads=2)
    assert names(native.op_kernels(attention)) == ["attn_scores", "attn_values", "softmax", "to_f16"]


@pytest.mark.parametrize("case", ["type without kernels", "type out of range", "negative type",
                                  "rows of the wrong size", "width not whole blocks",
                                  "GLU of one part", "four parts", "unknown kind", "heads"])
def test_the_executor_refuses_an_op_it_cannot_run(case):
    native, lib = library(), library().lib
    bad = {
        "type without kernels": lambda: matmul(native, GGMLType.Q8_1, row_bytes=72),
        "type out of range": lambda: op(native, kind=lib.LILA_OP_EMBED, wtype=abi.NTYPES,
                                        width=32, table_row_bytes=34),
        "negative type": lambda: op(native, kind=lib.LILA_OP_EMBED, wtype=-1, width=32,
                                    table_row_bytes=34),
        "rows of the wrong size": lambda: matmul(native, GGMLType.Q4_0, row_bytes=37),
        "width not whole blocks": lambda: matmul(native, GGMLType.Q4_K, width=64, row_bytes=36),
        "GLU of one part": lambda: matmul(native, GGMLType.Q8_0, flags=lib.LILA_GLU_SILU),
        "four parts": lambda: op(native, kind=lib.LILA_OP_MATMUL, nb=2, n_parts=4),
        "unknown kind": lambda: op(native, kind=99),
        "heads": lambda: op(native, kind=lib.LILA_OP_ATTENTION, heads=3, kv_heads=2),
    }[case]()
    assert native.op_kernels(bad) is None
    program = native.ffi.new("lila_program *", {"ops": bad, "n_ops": 1, "max_batch": 1,
                                                "n_ctx": 8, "kernels": base_table(native)})
    assert lib.lila_create(program, 1) == native.ffi.NULL


def base_table(native):
    """The table of the architecture's first family (every CPU of it runs that one)."""
    return next(t for t in map(native.kernels, ("avx2", "neon")) if t is not None)


def test_the_executor_refuses_a_table_without_a_kernel_it_needs():
    native = library()
    full = base_table(native)
    table = native.ffi.new("lila_kernels *", full[0])
    table.gemm[int(GGMLType.Q8_0)] = native.ffi.NULL
    ops = matmul(native, GGMLType.Q8_0)
    program = native.ffi.new("lila_program *", {"ops": ops, "n_ops": 1, "max_batch": 1,
                                                "n_ctx": 8, "kernels": table})
    assert native.lib.lila_create(program, 1) == native.ffi.NULL
    table.gemm[int(GGMLType.Q8_0)] = full.gemm[int(GGMLType.Q8_0)]
    ctx = native.lib.lila_create(program, 1)
    assert ctx != native.ffi.NULL
    native.lib.lila_destroy(ctx)


ARCHITECTURES = ["llama", "qwen2", "qwen3", "gemma3"]


@pytest.fixture(scope="module", params=ARCHITECTURES)
def tiny_model(request, tmp_path_factory) -> Path:
    import hf_gguf
    return hf_gguf.build(request.param, tmp_path_factory.mktemp(request.param)).path


@pytest.mark.parametrize("family", FAMILIES)
def test_a_table_of_only_the_reported_kernels_runs_the_model(tiny_model, family):
    """Every kernel the executor calls is one it reports: with every other entry of the
    table emptied, prefill, decode and last-row-only logits are unchanged (a call through
    an empty entry would crash the process, so the model runs in its own)."""
    result = subprocess.run([sys.executable, __file__, str(tiny_model), family],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr[-3000:]}"
    assert result.stdout.strip() == "same logits", result.stdout


def _run_with_reported_kernels_only(path: str, family: str) -> None:
    from lila.executor.native import NativeBackend
    from lila.formats.gguf import GGUFFile
    from lila.models import describe
    native = library()
    ids = np.arange(1, 13) * 7 % 200

    def run() -> list[np.ndarray]:
        gguf = GGUFFile.open(Path(path))
        backend = NativeBackend(describe(gguf).plan, gguf, n_ctx=32, max_batch=8, family=family,
                                threads=2)
        outputs = [backend.forward(ids[:8], 0, all_logits=True), backend.forward(ids[8:10], 8)]
        outputs += [backend.forward(ids[i:i + 1], i, all_logits=True) for i in range(10, 12)]
        return outputs, set(backend.kernel_names())

    want, used = run()
    full = native.kernels(family)
    only = native.ffi.new("lila_kernels *")
    only.name = full.name
    pointer = native.ffi.sizeof("void *")
    slots = native.ffi.cast("void **", only)
    assert native.ffi.offsetof("lila_kernels", "name") == 0   # then only kernels follow
    for offset in range(pointer, native.ffi.sizeof("lila_kernels"), pointer):
        if native.entry_name(offset) in used:
            slots[offset // pointer] = native.kernel_at(full, offset)
    native.kernels = lambda name: only
    got, _ = run()
    same = all(np.array_equal(a, b) for a, b in zip(want, got))
    print("same logits" if same else "different logits")


if __name__ == "__main__":
    _run_with_reported_kernels_only(*sys.argv[1:])
