"""The memory fabric on tiny random models of every architecture, on every backend.

The oracle is transformers in fp32: peft's own LoRA layers for adapters with a constant
scale, and for gated adapters the formula y = W x + sum_n g_n s_n B_n (A_n x),
g_n = sigmoid(w_n . x̂ + b_n) (0 below 1/1024), evaluated with hooks on the base model (x̂: the output of
the layer's input_layernorm).

Bounds: the reference backend (fp32 throughout) agrees to rounding. The quantized
backends (8-bit activations, Q8_0 adapters) stay within 3x the normalised error they have
on the base model plus 5e-3: random adapters on random models move activations where a
last-bit change flips 8-bit codes, and the error ranges over 0.002-0.012 with the seed
alone. The numba and native backends, which quantize alike, agree to 1e-3.
"""
from __future__ import annotations

import copy
import threading

import numpy as np
import pytest
import torch

import hf_gguf
import lora_fixtures
from kernel_reference import nmse, runnable_families
import lila
from lila.errors import LilaError
from lila.hardware.backends import BACKENDS as ALL_BACKENDS, NATIVE
from lila.native.abi import GATE_FLOOR

ARCHS = ["llama", "qwen2", "qwen3", "gemma3"]
RANKS = [4, 8, 16, 32]
# every backend this machine runs (the native ones with their best kernel table;
# test_native_models runs every table on adapters too)
NATIVE_BACKENDS = [b.name for b in ALL_BACKENDS
                   if b.name in NATIVE and any(f.startswith(b.family) for f in runnable_families())]
BACKENDS = ["reference", "numba", *NATIVE_BACKENDS]
IDS = list(range(5, 45))
# nmse bound of the quantized backends against transformers, on the base model
BASE_BOUND = 5e-3


@pytest.fixture(scope="module", params=ARCHS)
def tiny(request, tmp_path_factory):
    return hf_gguf.build(request.param, tmp_path_factory.mktemp(request.param))


def hf_logits(model) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor([IDS])).logits[0].float().numpy()


def check(actual: np.ndarray, expected: np.ndarray, backend: str, base_error: float) -> None:
    """base_error: the backend's nmse against transformers on the base model."""
    if backend == "reference":
        np.testing.assert_allclose(actual, expected, atol=2e-4 * np.abs(expected).max())
    else:
        assert nmse(actual, expected) < 3 * base_error + 5e-3, backend


def base_error(model, tiny: hf_gguf.TinyModel) -> float:
    error = nmse(model.logits(IDS), hf_logits(tiny.model))
    assert error < BASE_BOUND
    return error


@pytest.mark.parametrize("rank", RANKS)
def test_every_backend_matches_transformers_and_peft(tiny, rank, tmp_path):
    """All seven projections adapted; after unload, the base model bit for bit."""
    adapter = lora_fixtures.peft_adapter(tiny, tmp_path / "lora", rank=rank, alpha=2 * rank,
                                         seed=rank)
    adapted = hf_logits(lora_fixtures.peft_model(tiny, adapter))
    assert nmse(adapted, hf_logits(tiny.model)) > 0.1   # the adapter matters
    results = {}
    for backend in BACKENDS:
        model = lila.load(tiny.path, backend=backend, n_ctx=64)
        before = model.logits(IDS)
        error = base_error(model, tiny)
        model.fabric.load("skill", adapter)
        results[backend] = model.logits(IDS)
        check(results[backend], adapted, backend, error)
        model.fabric.unload("skill")
        assert np.array_equal(model.logits(IDS), before), backend
    for backend in NATIVE_BACKENDS:
        assert nmse(results[backend], results["numba"]) < 1e-3, backend


def gated_oracle(tiny: hf_gguf.TinyModel, adapters: list[tuple[dict, float, tuple | None]]) -> np.ndarray:
    """Logits of the base transformers model with each adapter added as the formula says.
    adapters: (peft state dict of lora_A/lora_B tensors, s, (w, b) or None)."""
    model = copy.deepcopy(tiny.model)
    layers = model.model.layers
    x_hat: dict[int, torch.Tensor] = {}
    handles = []
    for i, layer in enumerate(layers):
        handles.append(layer.input_layernorm.register_forward_hook(
            lambda _m, _inp, out, i=i: x_hat.__setitem__(i, out)))
        for path, module in [(f"self_attn.{p}", getattr(layer.self_attn, p))
                             for p in ("q_proj", "k_proj", "v_proj", "o_proj")] + \
                            [(f"mlp.{p}", getattr(layer.mlp, p)) for p in ("gate_proj", "up_proj", "down_proj")]:
            prefix = f"base_model.model.model.layers.{i}.{path}"

            def hook(_m, inputs, out, i=i, prefix=prefix):
                x = inputs[0]
                for tensors, scale, gate in adapters:
                    a, b = tensors.get(prefix + ".lora_A.weight"), tensors.get(prefix + ".lora_B.weight")
                    if a is None:
                        continue
                    g = 1.0
                    if gate is not None:
                        w, bias = gate
                        g = torch.sigmoid(x_hat[i] @ torch.tensor(w[i]) + float(bias[i]))[..., None]
                        g = torch.where(g < GATE_FLOOR, 0.0, g)
                    out = out + g * scale * ((x @ torch.tensor(a).T) @ torch.tensor(b).T)
                return out
            handles.append(module.register_forward_hook(hook))
    try:
        return hf_logits(model)
    finally:
        for h in handles:
            h.remove()


def test_gates_follow_the_formula(tiny, tmp_path):
    """Three namespaces at once: gated per layer, gated with one vector for all layers
    (from the adapter file), and a constant negative scale; adapters on different subsets
    of the projections, of different ranks."""
    from safetensors.numpy import load_file
    cfg = tiny.model.config
    layers, dim = cfg.num_hidden_layers, cfg.hidden_size
    rng = np.random.default_rng(1)
    per_layer = (rng.normal(0, 0.3, (layers, dim)).astype(np.float32), rng.normal(0, 1, layers).astype(np.float32))
    shared = rng.normal(0, 0.3, dim).astype(np.float32)
    specs = [("persona", 8, ("q_proj", "v_proj", "down_proj"), 0.7),
             ("user", 16, ("k_proj", "o_proj", "gate_proj", "up_proj"), 1.0),
             ("session", 4, lora_fixtures.SEVEN, -1.5)]
    paths = {}
    for i, (ns, rank, targets, _) in enumerate(specs):
        gate = {"lila_gate.weight": shared, "lila_gate.bias": np.float32([0.25])} if ns == "user" else None
        paths[ns] = lora_fixtures.peft_adapter(tiny, tmp_path / ns, rank=rank, alpha=rank,
                                               targets=targets, seed=10 + i, gate=gate)
    tensors = {ns: load_file(paths[ns] / lora_fixtures.WEIGHTS) for ns in paths}
    expected = gated_oracle(tiny, [
        (tensors["persona"], 0.7, per_layer),
        (tensors["user"], 1.0, (np.tile(shared, (layers, 1)), np.full(layers, 0.25))),
        (tensors["session"], -1.5, None)])
    for backend in BACKENDS:
        model = lila.load(tiny.path, backend=backend, n_ctx=64)
        error = base_error(model, tiny)
        for ns, _, _, scale in specs:
            model.fabric.load(ns, paths[ns], scale=scale)
        model.fabric.set_gate("persona", *per_layer)
        assert [n.gate for n in model.fabric.namespaces] == ["set", None, None, "file", None]
        check(model.logits(IDS), expected, backend, error)


@pytest.mark.parametrize("backend", NATIVE_BACKENDS)
def test_fused_and_split_adapters_agree(tiny, backend, tmp_path):
    """The adapters in the matmul ops, and in ops of their own after them: the same sums,
    so the same logits to rounding, for prefill and for decode, on 1 and 3 threads."""
    adapter = lora_fixtures.peft_adapter(tiny, tmp_path / "lora", rank=16, alpha=32)
    results = []
    for fuse in (True, False):
        for threads in (1, 3):
            model = lila.load(tiny.path, backend=backend, n_ctx=64, threads=threads,
                              fuse_adapters=fuse)
            model.fabric.load("domain", adapter)
            prefill = model.logits(IDS)
            completion = model.generate(IDS[:10], max_tokens=8, greedy=True, ignore_eos=True)
            results.append((prefill, completion.text() and completion.tokens))
    for prefill, tokens in results[1:]:
        assert nmse(prefill, results[0][0]) < 1e-5
        assert tokens == results[0][1]


@pytest.mark.parametrize("ranks", [(1,), (5, 2), (16,), (9, 8), (16, 16, 1)])
def test_stacked_ranks_of_every_width(ranks, tmp_path):
    """A projection's stacked rank decides the form of its B (lila_lora): transposed up to
    LILA_LORA_TRANSPOSED_RANK (16), rows of the rank padded to whole blocks beyond. Both
    forms and their edges, prefill and a decode step, on thread counts that split the rows
    at odd places, against the fp32 reference; and the same bits on any thread count, for
    each output row is one thread's sum."""
    tiny = hf_gguf.build("qwen2", tmp_path)
    paths = [lora_fixtures.peft_adapter(tiny, tmp_path / f"lora{i}", rank=rank, alpha=2 * rank,
                                        seed=i) for i, rank in enumerate(ranks)]
    results = {}
    for backend, threads in [("reference", 1), ("numba", 1), *((b, t) for b in NATIVE_BACKENDS for t in (1, 2, 3))]:
        model = lila.load(tiny.path, backend=backend, n_ctx=64, threads=threads)
        error = base_error(model, tiny)
        for namespace, path in zip(["persona", "skill", "domain"], paths):
            model.fabric.load(namespace, path)
        results[backend, threads] = (model.logits(IDS), model.logits(IDS[:1]), error)
    reference = results.pop(("reference", 1))
    for (backend, threads), (prefill, decode, error) in results.items():
        assert nmse(prefill, reference[0]) < 3 * error + 5e-3, backend
        assert nmse(decode, reference[1]) < 3 * error + 5e-3, backend
        assert nmse(prefill, results["numba", 1][0]) < 1e-3, backend
        if backend != "numba":
            np.testing.assert_array_equal(prefill, results[backend, 1][0])
            np.testing.assert_array_equal(decode, results[backend, 1][1])


def test_a_change_is_not_mixed_with_cached_tokens(tmp_path):
    """A prompt's keys and values computed before an adapter loaded are not reused after."""
    tiny = hf_gguf.build("llama", tmp_path)
    adapter = lora_fixtures.peft_adapter(tiny, tmp_path / "lora", rank=8, alpha=64)
    model = lila.load(tiny.path, n_ctx=64)
    base = model.generate(IDS, max_tokens=6, greedy=True, ignore_eos=True)
    base_tokens = base.text() and base.tokens
    model.fabric.load("skill", adapter)
    again = model.generate(IDS, max_tokens=6, greedy=True, ignore_eos=True)
    again.text()
    assert again.stats.cached_tokens == 0
    fresh = lila.load(tiny.path, n_ctx=64)
    fresh.fabric.load("skill", adapter)
    expected = fresh.generate(IDS, max_tokens=6, greedy=True, ignore_eos=True)
    assert again.tokens == (expected.text() and expected.tokens) != base_tokens


def test_generations_in_threads_match_one_at_a_time(tmp_path):
    tiny = hf_gguf.build("qwen2", tmp_path)
    model = lila.load(tiny.path, n_ctx=64)
    model.fabric.load("user", lora_fixtures.peft_adapter(tiny, tmp_path / "a", rank=8, alpha=32))
    model.fabric.set_gate("user", np.full(tiny.model.config.hidden_size, 0.05, np.float32), 0.5)
    prompts = [IDS[i:i + 12] for i in range(6)]

    def run(prompt):
        return model.generate(prompt, max_tokens=8, greedy=True, ignore_eos=True)

    alone = [(c.text(), c.tokens)[1] for c in map(run, prompts)]
    together: dict[int, list[int]] = {}

    def worker(i):
        c = run(prompts[i])
        c.text()
        together[i] = c.tokens
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [together[i] for i in range(len(prompts))] == alone


def test_memory_is_accounted(tmp_path):
    tiny = hf_gguf.build("llama", tmp_path)
    model = lila.load(tiny.path, n_ctx=64)
    assert model.fabric.memory == 0
    info = model.fabric.load("persona", lora_fixtures.peft_adapter(tiny, tmp_path / "a", rank=8))
    cfg = tiny.model.config
    shapes = [(cfg.hidden_size, cfg.hidden_size)] * 2 + [(cfg.hidden_size // 2, cfg.hidden_size)] * 2 \
        + [(cfg.intermediate_size, cfg.hidden_size)] * 2 + [(cfg.hidden_size, cfg.intermediate_size)]
    # A in Q8_0 (34 bytes per 32 values) and B in fp16, for each projection of each layer
    per_layer = sum(8 * (n_in // 32 * 34 + n_out * 2) for n_out, n_in in shapes)
    assert info.memory == cfg.num_hidden_layers * per_layer
    assert model.fabric.memory > info.memory      # and the stacked B and scratch
    assert (info.ranks, len(info.modules)) == ((8,), 7)
    model.fabric.unload("persona")
    assert model.fabric.memory == 0 and not model.fabric.namespaces[0].loaded


def test_bad_calls_leave_the_model_as_it_was(tmp_path):
    tiny = hf_gguf.build("llama", tmp_path)
    adapter = lora_fixtures.peft_adapter(tiny, tmp_path / "a", rank=4)
    other = hf_gguf.build("qwen3", tmp_path)   # other shapes
    wrong_shapes = lora_fixtures.peft_adapter(other, tmp_path / "q3", rank=4)
    nan = lora_fixtures.peft_adapter(tiny, tmp_path / "nan", rank=4)
    lora_fixtures.rewrite_tensors(nan, lambda t: {k: v * np.nan for k, v in t.items()})
    model = lila.load(tiny.path, n_ctx=64)
    model.fabric.load("skill", adapter)
    before = model.logits(IDS)
    dim = tiny.model.config.hidden_size
    calls = [
        lambda: model.fabric.load("skill", wrong_shapes),
        lambda: model.fabric.load("skill", nan),
        lambda: model.fabric.load("skill", tiny.path),            # a model, not an adapter
        lambda: model.fabric.load("nowhere", adapter),
        lambda: model.fabric.load("skill", tmp_path / "missing"),
        lambda: model.fabric.load("skill", adapter, scale=float("nan")),
        lambda: model.fabric.load(3, adapter),
        lambda: model.fabric.set_scale("persona", 1.0),           # empty namespace
        lambda: model.fabric.set_scale("skill", "2"),
        lambda: model.fabric.set_gate("skill", np.zeros(dim + 1)),
        lambda: model.fabric.set_gate("skill", np.zeros(dim), np.zeros(7)),
        lambda: model.fabric.set_gate("skill", np.full(dim, np.inf)),
        lambda: model.fabric.set_gate("skill", "not numbers"),
        lambda: model.fabric.unload("nowhere"),
    ]
    for call in calls:
        with pytest.raises(LilaError) as error:
            call()
        assert "\n" not in str(error.value)
    assert np.array_equal(model.logits(IDS), before)


@pytest.mark.parametrize("names", [[], ["a"] * 2, ["a", "b c"], list("abcdef"), "abc", [1]])
def test_namespace_names_are_checked(tmp_path, names):
    tiny = hf_gguf.build("llama", tmp_path)
    with pytest.raises(LilaError):
        lila.load(tiny.path, n_ctx=64, namespaces=names)


def test_namespace_names_are_the_callers(tmp_path):
    tiny = hf_gguf.build("llama", tmp_path)
    model = lila.load(tiny.path, n_ctx=64, namespaces=["work", "home"])
    model.fabric.load("home", lora_fixtures.peft_adapter(tiny, tmp_path / "a", rank=4))
    assert [(n.name, n.loaded) for n in model.fabric.namespaces] == [("work", False), ("home", True)]


@pytest.mark.parametrize("dtype", ["F32", "F16", "Q8_0"])
def test_gguf_lora_and_peft_forms_give_the_same_outputs(tiny, dtype, tmp_path):
    import gguf
    peft_dir = lora_fixtures.peft_adapter(tiny, tmp_path / "lora", rank=8, alpha=16)
    gguf_file = lora_fixtures.gguf_lora(peft_dir, tiny, tmp_path / "lora.gguf",
                                        dtype=gguf.GGMLQuantizationType[dtype])
    model = lila.load(tiny.path, n_ctx=64)
    model.fabric.load("skill", peft_dir)
    from_peft = model.logits(IDS)
    info = model.fabric.load("skill", gguf_file)
    assert info.format == "gguf"
    from_gguf = model.logits(IDS)
    if dtype == "F32":    # the same values, packed alike
        assert np.array_equal(from_gguf, from_peft)
    else:   # rounded once more, which the random gemma3 amplifies most (see the top)
        assert nmse(from_gguf, from_peft) < 5e-3


def test_a_shut_gate_leaves_the_base_model_bit_for_bit(tiny, tmp_path):
    adapter = lora_fixtures.peft_adapter(tiny, tmp_path / "lora", rank=8, alpha=16)
    dim = tiny.model.config.hidden_size
    for backend in BACKENDS:
        model = lila.load(tiny.path, backend=backend, n_ctx=64)
        base = model.logits(IDS)
        model.fabric.load("skill", adapter)
        model.fabric.set_gate("skill", np.zeros(dim, np.float32), -7.0)   # sigmoid: 9e-4
        assert np.array_equal(model.logits(IDS), base), backend
        model.fabric.set_gate("skill", np.zeros(dim, np.float32), -6.0)   # 2.5e-3: open
        assert not np.array_equal(model.logits(IDS), base), backend
