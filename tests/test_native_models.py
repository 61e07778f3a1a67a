"""The native backend on whole models in every weight type it runs, against the numpy
reference backend on the same file, for every kernel family this machine can run.

The models are small synthetic llamas written by bench/synthetic_gguf.py (a real GGUF
layout and SmolLM2's vocabulary, random weights). Nothing here needs torch, so
`make test-arm64` runs this file under qemu too: it is the whole-model proof of the NEON
kernels and of the executor's threads on ARM64.

Bounds (normalised MSE of logits, kernel_reference.nmse): native vs reference < 1e-3 (only
the 8-bit activations and the fp16 K/V cache differ; F16 weights run as Q8_0), for prefill
and for token-by-token decode (the GEMM and the GEMV): the two cannot be held closer to each
other than that, because a last-bit difference in a sum can move an 8-bit activation code
in the next layer. Thread counts change nothing. The same holds with the memory fabric's
adapters (Q8_0 in the native backend, fp32 in the reference), fused or in ops of their own.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from kernel_reference import family_params, nmse
from lila.executor.native import NativeBackend
from lila.executor.reference import ReferenceBackend
from lila.formats.gguf import GGUFFile
from lila.models import describe
from lila.store import default_model_path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import synthetic_gguf  # noqa: E402

FAMILIES = family_params()
# Q4_K and Q6_K need rows that are multiples of 256; the gemv/gemm split needs > 1 token.
SHAPES = synthetic_gguf.Shapes(dim=256, layers=2, ffn=512, heads=4, kv_heads=2, head_dim=64,
                               rope_base=10000.0, rms_eps=1e-5, context=128, tied=True)
TYPES = ["q4_0", "q4_1", "q5_0", "q8_0", "q4_k", "q6_k", "f16"]
IDS = np.random.default_rng(7).integers(0, 49152, 12)
DECODED = 4     # the last tokens, fed one at a time


@pytest.fixture(scope="module", params=TYPES)
def model(request, tmp_path_factory):
    """(path, reference logits of IDS) for one weight type."""
    path = tmp_path_factory.mktemp("synthetic") / f"llama-{request.param}.gguf"
    args = argparse.Namespace(type=request.param, embed_type=None, output_type=None, seed=0,
                              tokenizer_from=default_model_path())
    synthetic_gguf.write_model(path, SHAPES, request.param, args, pool_elements=1 << 16)
    with GGUFFile.open(path) as gguf:
        reference = ReferenceBackend(describe(gguf).plan, gguf, n_ctx=64, max_batch=16)
        expected = reference.forward(IDS, 0, all_logits=True)
    return path, expected


def native(path: Path, family: str, threads: int, **options) -> NativeBackend:
    gguf = GGUFFile.open(path)
    return NativeBackend(describe(gguf).plan, gguf, n_ctx=64, max_batch=16, family=family,
                         threads=threads, **options)


@pytest.mark.parametrize("family", FAMILIES)
def test_prefill_and_decode_match_the_reference(model, family):
    path, expected = model
    backend = native(path, family, threads=2)
    prefill = backend.forward(IDS, 0, all_logits=True)
    assert nmse(prefill, expected) < 1e-3
    backend = native(path, family, threads=2)
    split = len(IDS) - DECODED
    steps = [backend.forward(IDS[:split], 0, all_logits=True)]
    steps += [backend.forward(IDS[i:i + 1], i, all_logits=True) for i in range(split, len(IDS))]
    assert nmse(np.concatenate(steps), expected) < 1e-3


@pytest.mark.parametrize("family", FAMILIES)
def test_threads_change_nothing(model, family):
    path, _ = model
    one = native(path, family, threads=1).forward(IDS, 0, all_logits=True)
    for threads in (2, 3):
        assert np.array_equal(native(path, family, threads).forward(IDS, 0, all_logits=True),
                              one), f"{threads} threads"


# -- the memory fabric ---------------------------------------------------------------------

def adapter(rank: int, seed: int, every: int = 1) -> SimpleNamespace:
    """Random LoRAs on every `every`-th projection of SHAPES, shaped as
    lila.fabric.adapter.Adapter (read here without the reader, which needs safetensors)."""
    rng = np.random.default_rng(seed)
    q, kv, d, f = SHAPES.heads * SHAPES.head_dim, SHAPES.kv_heads * SHAPES.head_dim, SHAPES.dim, SHAPES.ffn
    shapes = {"attn_q": (q, d), "attn_k": (kv, d), "attn_v": (kv, d), "attn_output": (d, q),
              "ffn_gate": (f, d), "ffn_up": (f, d), "ffn_down": (d, f)}
    lora = {}
    for layer in range(SHAPES.layers):
        for module, (n_out, n_in) in list(shapes.items())[layer % every::every]:
            lora[f"blk.{layer}.{module}"] = SimpleNamespace(
                a=rng.normal(0, n_in ** -0.5, (rank, n_in)).astype(np.float32),
                b=rng.normal(0, 0.05, (n_out, rank)).astype(np.float32), scale=2.0)
    return SimpleNamespace(lora=lora)


def gate(seed: int) -> SimpleNamespace:
    rng = np.random.default_rng(seed)
    return SimpleNamespace(weight=rng.normal(0, 0.05, (SHAPES.layers, SHAPES.dim)).astype(np.float32),
                           bias=np.float32([0.5, -0.5]))


def with_adapters(backend) -> None:
    """Three namespaces: a gated rank 8 on every projection, a rank 16 on every other one
    with a negative scale, a gated rank 4 on every third."""
    from lila.fabric.packing import Active
    active = [Active(0, backend.pack_adapter(adapter(8, 1)), 1.0, gate(2)),
              Active(2, backend.pack_adapter(adapter(16, 3, every=2)), -0.5, None),
              Active(4, backend.pack_adapter(adapter(4, 4, every=3)), 1.5, gate(5))]
    backend.use_adapters(backend.prepare_adapters(active))


@pytest.fixture(scope="module")
def adapted(tmp_path_factory):
    """(path of the Q4_0 model, its reference logits of IDS with and without adapters)"""
    path = tmp_path_factory.mktemp("synthetic") / "llama-q4_0.gguf"
    args = argparse.Namespace(type="q4_0", embed_type=None, output_type=None, seed=0,
                              tokenizer_from=default_model_path())
    synthetic_gguf.write_model(path, SHAPES, "q4_0", args, pool_elements=1 << 16)
    with GGUFFile.open(path) as gguf:
        reference = ReferenceBackend(describe(gguf).plan, gguf, n_ctx=64, max_batch=16)
        base = reference.forward(IDS, 0, all_logits=True)
        with_adapters(reference)
        return path, base, reference.forward(IDS, 0, all_logits=True)


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "split"])
@pytest.mark.parametrize("family", FAMILIES)
def test_adapters_match_the_reference(adapted, family, fused):
    """The fabric's adapters in the matmul ops (or in ops of their own), for prefill and
    decode, on any number of threads; emptied, the base model bit for bit."""
    path, base, expected = adapted
    assert nmse(expected, base) > 0.05          # the adapters matter
    results = []
    for threads in (1, 3):
        backend = native(path, family, threads, fuse_adapters=fused)
        ops = backend._program.struct.ops
        kinds = [ops[i].kind for i in range(backend._program.struct.n_ops)]
        lib = backend.native.lib
        # fused, adapters keep the QKV, gate+up+GLU and residual fusions; split, they cost
        # an op after each adapted matmul
        assert kinds.count(lib.LILA_OP_LORA) == (0 if fused else 4 * SHAPES.layers)
        assert kinds.count(lib.LILA_OP_GLU) == (0 if fused else SHAPES.layers)
        without = backend.forward(IDS, 0, all_logits=True)
        with_adapters(backend)
        prefill = backend.forward(IDS, 0, all_logits=True)
        assert nmse(prefill, expected) < 1e-3
        split = len(IDS) - DECODED
        steps = [backend.forward(IDS[:split], 0, all_logits=True)]
        steps += [backend.forward(IDS[i:i + 1], i, all_logits=True) for i in range(split, len(IDS))]
        assert nmse(np.concatenate(steps), expected) < 1e-3
        backend.use_adapters(backend.prepare_adapters([]))
        assert np.array_equal(backend.forward(IDS, 0, all_logits=True), without)
        results.append(prefill)
    assert np.array_equal(results[0], results[1])
