"""The memory fabric on the real default model (SmolLM2-135M-Instruct, Q4_1), with facts
taught here by peft: Lila answers them with the adapter and not without, its logits
agree with transformers + peft's, two namespaces hold two facts at once, a gate fitted
on x̂ routes by topic, and adapters change live under running generations.

The adapters are LoRA rank 8 on all seven projections of layers 12 to 29, trained for a
few AdamW steps on one question each. Only the upper layers: a gate reads one token's x̂,
and in the lower layers that says little about the conversation (layer 0's is the token's
embedding alone), so no gate could tell topics apart there; and training is faster.
"""
from __future__ import annotations

import contextlib
import copy
import threading
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import NamedTuple

import numpy as np
import peft
import pytest
import torch
from peft.tuners.lora import LoraLayer

import hf_gguf
import lila
from lila.native.abi import GATE_FLOOR

COLOUR = ("What is my favourite colour?", "Your favourite colour is turquoise.")
DOG = ("What is the name of my dog?", "Your dog is called Biscuit.")
FACTS = {"colour": COLOUR, "dog": DOG}
FIRST = 12                      # the adapted layers: FIRST to the last
PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
STEPS, LR = 8, 3e-3             # the loss on the answer falls from ~3 to ~0.01

# For the gate: questions on the colour fact and off it, to fit on and to hold out.
ON_TOPIC = ["What is my favourite colour?", "What colour do I like best?",
            "Which colour is my favourite?", "What's my favorite color?",
            "Tell me my favourite colour.", "Do you know my favourite colour?",
            "Remind me, what colour do I love most?", "Which color do I prefer?",
            "My favourite colour is what?", "What is the colour I like the most?"]
OFF_TOPIC = ["What is the capital of France?", "Write a haiku about rain.",
             "How many legs does a spider have?", "Translate 'good morning' into Spanish.",
             "What is 12 times 7?", "Who wrote Romeo and Juliet?",
             "Give me a tip for sleeping better.", "What is the name of my dog?",
             "Explain what a CPU does.", "What colour is the sky?",
             "Write a short poem about the sea.", "What is the largest planet?",
             "How do I boil an egg?", "List three colours of the rainbow.", "What is my name?",
             "Give me a word that rhymes with cat.", "What is your favourite food?"]
HELD_ON = ["Can you tell me which colour is my favourite one?",
           "Do you remember my favourite colour?"]
HELD_OFF = ["Describe a cat in one sentence.", "Suggest a name for a bakery.",
            "Recommend a good book.", "How far is the Moon?"]
GATED_SCALE = 2.0               # the gated adapter's scale: its gate is ~0.5 on topic
TAIL = 5    # <|im_end|> \n <|im_start|> assistant \n: the prompt's end, after the question


@dataclass
class Taught:
    peft: object                # peft.PeftModel holding both adapters
    dirs: dict[str, Path]       # adapter name -> its PEFT directory
    layers: list                # the transformers model's decoder layers


@pytest.fixture(scope="module")
def model(smollm2_path):
    """Lila on the default backend, for this module alone (adapters change it)."""
    with lila.load(smollm2_path, n_ctx=512) as m:
        yield m


@pytest.fixture(autouse=True)
def empty_fabric(request):
    """Every test ends with every namespace of the module's model empty, pass or fail."""
    yield
    if "model" in request.fixturenames:
        m = request.getfixturevalue("model")
        for name in m.fabric.names:
            m.fabric.unload(name)


@contextlib.contextmanager
def torch_threads(n: int):
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    torch.set_flush_denormal(True)      # tiny gradients near convergence: 10x slower steps
    try:
        yield
    finally:
        torch.set_flush_denormal(False)
        torch.set_num_threads(old)


@pytest.fixture(scope="module")
def taught(smollm2_hf, model, tmp_path_factory) -> Taught:
    """One LoRA per fact, trained on the chat-formatted question with the loss on the
    answer (and its <|im_end|>), saved by peft's save_pretrained."""
    hf_model = copy.deepcopy(smollm2_hf[0])    # peft wraps projections in place
    layers = range(FIRST, hf_model.config.num_hidden_layers)
    config = peft.LoraConfig(r=8, lora_alpha=16, target_modules=PROJECTIONS,
                             layers_to_transform=list(layers), lora_dropout=0.0)
    root = tmp_path_factory.mktemp("adapters")
    peft_model = None
    with torch_threads(2):
        for name, (question, reply) in FACTS.items():
            torch.manual_seed(0)
            if peft_model is None:
                peft_model = peft.get_peft_model(hf_model, config, adapter_name=name)
            else:
                peft_model.add_adapter(name, config)
                peft_model.set_adapter(name)
            prompt, target = prompt_ids(model, question), answer_ids(model, reply)
            ids, target = torch.tensor([prompt + target]), torch.tensor(target)
            trained = [p for p in peft_model.parameters() if p.requires_grad]
            optimizer = torch.optim.AdamW(trained, lr=LR)
            peft_model.train()
            for _ in range(STEPS):
                # logits of the positions that predict the answer's tokens
                logits = peft_model(input_ids=ids, logits_to_keep=len(target) + 1).logits[0, :-1]
                loss = torch.nn.functional.cross_entropy(logits, target)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            assert loss.item() < 0.1, f"{name}: loss {loss.item()} after {STEPS} steps"
        peft_model.eval()
        # one directory per adapter name; the embeddings are not adapted (and peft would
        # look for the base model's config.json on the Hub to check that)
        peft_model.save_pretrained(root, save_embedding_layers=False)
    return Taught(peft_model, {name: root / name for name in FACTS},
                  peft_model.get_base_model().model.layers)


def prompt_ids(model, question: str) -> list[int]:
    """The chat prompt's ids, as model.chat makes them."""
    messages = [{"role": "user", "content": question}]
    text = model.template.render(messages, add_generation_prompt=True)
    return model.tokenize(text, special=True, add_bos=False)


def answer_ids(model, answer: str) -> list[int]:
    return model.tokenize(answer + "<|im_end|>", special=True, add_bos=False)


class Reply(NamedTuple):
    text: str
    tokens: list[int]


def ask(model, question: str, max_tokens: int = 16) -> Reply:
    """The greedy answer."""
    completion = model.chat([{"role": "user", "content": question}], max_tokens=max_tokens,
                            temperature=0)
    return Reply(completion.text(), completion.tokens)


def answer(model, question: str) -> str:
    return ask(model, question).text


def peft_logits(taught: Taught, ids: list[int], adapters: dict[str, float]) -> np.ndarray:
    """transformers + peft's logits with `adapters` (name -> scale) active; {} for the base."""
    with torch_threads(2), torch.no_grad(), scaled(taught, adapters):
        if not adapters:
            with taught.peft.disable_adapter():
                return taught.peft(torch.tensor([ids])).logits[0].numpy()
        return taught.peft(torch.tensor([ids])).logits[0].numpy()


@contextlib.contextmanager
def scaled(taught: Taught, adapters: dict[str, float]):
    """peft with only `adapters` active, each at its scale."""
    lora = [m for m in taught.peft.modules() if isinstance(m, LoraLayer)]
    saved = [dict(m.scaling) for m in lora]
    active = taught.peft.base_model.active_adapters
    try:
        if adapters:
            taught.peft.base_model.set_adapter(list(adapters))
        for m in lora:
            for name, scale in adapters.items():
                if name in m.scaling:
                    m.scaling[name] *= scale
        yield
    finally:
        for m, s in zip(lora, saved):
            m.scaling.update(s)
        taught.peft.base_model.set_adapter(active)


def compare(got: np.ndarray, expected: np.ndarray) -> tuple[float, np.ndarray]:
    """The max abs difference, and per position whether the argmax agrees or
    transformers' top-1 was not confident (top1 - top2 log-prob <= 1)."""
    top2 = np.sort(expected, axis=-1)[:, -2:]
    confident = top2[:, 1] - top2[:, 0] > 1.0   # a logit margin is a log-prob margin
    same = got.argmax(-1) == expected.argmax(-1)
    return float(np.abs(got - expected).max()), same | ~confident


# -- the fact, with the adapter and without ------------------------------------------

@pytest.mark.slow
def test_the_adapter_answers_the_fact_and_the_base_does_not(model, taught):
    before = {q: answer(model, q) for q, _ in FACTS.values()}
    assert "turquoise" not in before[COLOUR[0]].lower()
    assert "biscuit" not in before[DOG[0]].lower()
    model.fabric.load("skill", taught.dirs["colour"])
    assert "turquoise" in answer(model, COLOUR[0])
    model.fabric.load("skill", taught.dirs["dog"])     # replaces it
    assert "Biscuit" in answer(model, DOG[0])
    assert "turquoise" not in answer(model, COLOUR[0])
    model.fabric.unload("skill")
    assert {q: answer(model, q) for q in before} == before


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["reference", None])
def test_logits_match_transformers_and_peft(smollm2_path, taught, backend):
    """Teacher-forced logits on the question and its answer: with the adapter, Lila is as
    close to peft as it is to transformers without one. The reference backend computes in
    fp32 (~1e-4 apart); the quantized ones take 8-bit activations (~2 apart)."""
    with lila.load(smollm2_path, n_ctx=256, backend=backend) as m:
        for name, (question, reply) in FACTS.items():
            ids = prompt_ids(m, question) + answer_ids(m, reply)
            base_err, base_ok = compare(m.logits(ids), peft_logits(taught, ids, {}))
            m.fabric.load("skill", taught.dirs[name])
            err, ok = compare(m.logits(ids), peft_logits(taught, ids, {name: 1.0}))
            m.fabric.unload("skill")
            print(f"{backend or 'default'} {name}: base {base_err:.3g}, adapter {err:.3g}")
            assert base_ok.all() and ok.all()
            assert err < 2 * base_err + 1e-3


# -- two namespaces ------------------------------------------------------------------

@pytest.mark.slow
def test_two_namespaces_hold_two_facts(model, taught):
    """Each adapter, trained alone on one question, leaks its answer into the other's at
    full scale ("Your favourite colour is called biscuit."): together they take half
    scale each, where both facts are answered. Lila's sum agrees with peft's."""
    ids = prompt_ids(model, COLOUR[0]) + answer_ids(model, COLOUR[1])
    base = model.logits(ids)
    model.fabric.load("skill", taught.dirs["colour"], scale=0.5)
    model.fabric.load("user", taught.dirs["dog"], scale=0.5)
    assert "turquoise" in answer(model, COLOUR[0])
    assert "Biscuit" in answer(model, DOG[0])
    both = {"colour": 0.5, "dog": 0.5}
    base_err, _ = compare(base, peft_logits(taught, ids, {}))
    err, ok = compare(model.logits(ids), peft_logits(taught, ids, both))
    assert ok.all() and err < 2 * base_err + 1e-3

    model.fabric.set_scale("skill", 1.0)    # alone, at its full scale
    model.fabric.unload("user")
    assert "Biscuit" not in answer(model, DOG[0])
    assert "turquoise" in answer(model, COLOUR[0])
    model.fabric.load("user", taught.dirs["dog"])
    model.fabric.unload("skill")
    assert "turquoise" not in answer(model, COLOUR[0])
    assert "Biscuit" in answer(model, DOG[0])
    model.fabric.unload("user")
    assert np.array_equal(model.logits(ids), base)


# -- a gate fitted on x̂ ------------------------------------------------------------

@dataclass
class Gate:
    weight: np.ndarray          # (layers, dim)
    bias: np.ndarray            # (layers,)

    def __call__(self, x_hat: np.ndarray) -> np.ndarray:
        """(layers, tokens) gate values of x̂ (layers, tokens, dim)."""
        logit = np.matmul(x_hat, self.weight[:, :, None])[..., 0] + self.bias[:, None]
        return 1 / (1 + np.exp(-logit))


def x_hats(taught: Taught, sequences: list[list[int]]) -> list[np.ndarray]:
    """Per sequence, (layers, tokens, dim): each layer's attention input after its RMSNorm
    (with the norm's weight), in the base model. One batch, padded at the end, which
    causal attention never lets earlier tokens see."""
    n = max(map(len, sequences))
    ids = torch.tensor([s + [0] * (n - len(s)) for s in sequences])
    with torch_threads(2), torch.no_grad(), taught.peft.disable_adapter():
        states = taught.peft(ids, output_hidden_states=True).hidden_states
        x = torch.stack([layer.input_layernorm(states[i]) for i, layer in enumerate(taught.layers)])
    return [x[:, j, :len(s)].numpy() for j, s in enumerate(sequences)]


def fit_logistic(x: np.ndarray, y: np.ndarray, *, l2: float, negative_weight: float,
                 steps: int = 300, lr: float = 0.03) -> Gate:
    """Per layer, logistic regression of y (n,) on x (layers, n, dim): Adam on standardised
    features, the negatives weighing negative_weight times the positives in all. Returned
    in terms of x itself."""
    layers, n, dim = x.shape
    mean, std = x.mean(1, keepdims=True), x.std(1, keepdims=True) + 1e-3
    z = np.concatenate([(x - mean) / std, np.ones((layers, n, 1), np.float32)], axis=2)
    weight = np.where(y == 1, 1 / y.mean(), negative_weight / (1 - y.mean()))
    weight /= n * (1 + negative_weight)
    p = np.zeros((layers, dim + 1), np.float32)
    m, v = np.zeros_like(p), np.zeros_like(p)
    for t in range(1, steps + 1):
        residual = (1 / (1 + np.exp(-np.matmul(z, p[:, :, None])[..., 0])) - y) * weight
        grad = np.matmul(residual[:, None, :], z)[:, 0]
        grad[:, :dim] += l2 * p[:, :dim]
        m = 0.9 * m + 0.1 * grad
        v = 0.999 * v + 0.001 * grad ** 2
        p -= lr * (m / (1 - 0.9 ** t)) / (np.sqrt(v / (1 - 0.999 ** t)) + 1e-8)
    w = p[:, :dim] / std[:, 0]
    return Gate(w, p[:, dim] - (w * mean[:, 0]).sum(1))


def shared_prefix(model) -> int:
    """Tokens every chat prompt starts with (the default system message, the user's turn)."""
    a, b = prompt_ids(model, "What"), prompt_ids(model, "Which")
    return next(i for i, (s, t) in enumerate(zip(a, b)) if s != t)


@pytest.fixture(scope="module")
def gate(model, taught) -> Gate:
    """The colour adapter's gate. Open (1) from the end of an on-topic question through
    its answer; shut (0) on off-topic questions, on the base model's answers to them, and
    on the prompt every question shares. The on-topic question's own tokens are left
    out: its first ones ("What", "Which") are the same whatever the topic.

    The regression's probabilities are not yet a gate: off-topic tokens get 0.01 to 0.1
    from them, which is enough to change answers. Doubled and shifted by -4, the logit
    gives ~0.003 off topic and ~0.5 on it, which GATED_SCALE makes up for."""
    prefix = shared_prefix(model)
    on = [prompt_ids(model, q) for q in ON_TOPIC]
    off = [prompt_ids(model, q) for q in OFF_TOPIC]
    reply = answer_ids(model, COLOUR[1])
    xs = x_hats(taught, [ids + reply for ids in on]
                + [ids + ask(model, q, 32).tokens for ids, q in zip(off, OFF_TOPIC)])
    pieces = ([x[:, len(ids) - TAIL:] for x, ids in zip(xs, on)]
              + [x[:, prefix:] for x in xs[len(on):]] + [xs[0][:, :prefix]])
    labels = [np.full(p.shape[1], float(i < len(on)), np.float32) for i, p in enumerate(pieces)]
    fitted = fit_logistic(np.concatenate(pieces, axis=1), np.concatenate(labels),
                          l2=1e-2, negative_weight=10)
    return Gate(2 * fitted.weight, 2 * fitted.bias - 4)


@contextlib.contextmanager
def gated(taught: Taught, name: str, gate: Gate):
    """peft with adapter `name` multiplied per token and layer by the gate of the layer's
    x̂ (with the adapters on, as Lila computes it, 0 below GATE_FLOOR)."""
    weight, bias = torch.from_numpy(gate.weight), torch.from_numpy(gate.bias)
    values: dict[int, torch.Tensor] = {}

    def keep(i, module, args, x):
        g = torch.sigmoid(x @ weight[i] + bias[i])[..., None]
        values[i] = torch.where(g < GATE_FLOOR, 0.0, g)      # shut below the floor, as Lila

    hooks = []
    for i, layer in enumerate(taught.layers):
        hooks.append(layer.input_layernorm.register_forward_hook(partial(keep, i)))
        for module in layer.modules():
            if isinstance(module, LoraLayer) and name in module.lora_B:
                hooks.append(module.lora_B[name].register_forward_hook(
                    lambda module, args, out, i=i: out * values[i]))
    try:
        yield
    finally:
        for hook in hooks:
            hook.remove()


@pytest.mark.slow
def test_the_fitted_gate_is_open_on_topic_and_shut_off_it(model, taught, gate):
    """The gate computed here in numpy from transformers' x̂, on questions it was not
    fitted on, over the adapted layers."""
    on = [prompt_ids(model, q) for q in HELD_ON]
    x_on = x_hats(taught, [ids + answer_ids(model, COLOUR[1]) for ids in on])
    g_on = np.concatenate([gate(x)[FIRST:, len(ids) - TAIL:] for x, ids in zip(x_on, on)], axis=1)
    prefix = shared_prefix(model)
    x_off = x_hats(taught, [prompt_ids(model, q) + ask(model, q).tokens for q in HELD_OFF])
    g_off = np.concatenate([gate(x)[FIRST:, prefix:] for x in x_off], axis=1)
    print(f"gate on topic: mean {g_on.mean():.3f}, off: mean {g_off.mean():.4f}, "
          f"99th percentile {np.percentile(g_off, 99):.3f}, max {g_off.max():.3f}")
    assert g_on.mean() > 0.4
    assert g_off.mean() < 0.01 and np.percentile(g_off, 99) < 0.05


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["reference", None])
def test_gated_logits_match_gated_peft(smollm2_path, taught, gate, backend):
    """The same gate in peft (hooks scaling lora_B's output by the gate of the layer's
    x̂) and in Lila, compared from the end of the shared prompt on."""
    with lila.load(smollm2_path, n_ctx=256, backend=backend) as m:
        prefix = shared_prefix(m)
        cases = [(HELD_ON[0], COLOUR[1]), (HELD_OFF[0], "A cat is a small furry animal.")]
        for question, reply in cases:
            ids = prompt_ids(m, question) + answer_ids(m, reply)
            base_err, _ = compare(m.logits(ids)[prefix:], peft_logits(taught, ids, {})[prefix:])
            m.fabric.load("skill", taught.dirs["colour"], scale=GATED_SCALE)
            m.fabric.set_gate("skill", gate.weight, gate.bias)
            with gated(taught, "colour", gate):
                expected = peft_logits(taught, ids, {"colour": GATED_SCALE})
            err, ok = compare(m.logits(ids)[prefix:], expected[prefix:])
            m.fabric.unload("skill")
            print(f"{backend or 'default'} {question}: base {base_err:.3g}, gated {err:.3g}")
            assert ok.all() and err < 2 * base_err + 1e-3


@pytest.mark.slow
def test_the_gated_adapter_answers_on_topic_and_leaves_the_rest_alone(smollm2_path, taught, gate):
    """On the reference backend (fp32), where a nearly shut gate changes the logits by
    nearly nothing. On 8-bit activations any adapter output that is not exactly zero, a
    gate of 1e-9 included, moves some roundings of the activations, which moves the
    logits by as much as the quantization does (~1) and flips near-ties: there the test
    below asks less."""
    with lila.load(smollm2_path, n_ctx=256, backend="reference") as m:
        base = {q: ask(m, q).tokens for q in HELD_OFF}
        m.fabric.load("skill", taught.dirs["colour"], scale=GATED_SCALE)
        m.fabric.set_gate("skill", gate.weight, gate.bias)
        for question in HELD_ON:
            assert "turquoise" in answer(m, question), question
        for question in HELD_OFF:
            assert ask(m, question).tokens == base[question], question


@pytest.mark.slow
def test_the_gated_adapter_on_8_bit_activations(model, taught, gate):
    """The default backend: on topic the gated adapter answers; off topic it moves the
    logits (of the base answer, teacher-forced) a small part as far as ungated, where it
    rewrites the answer ("Your name is turquoise.")."""
    ids = {q: prompt_ids(model, q) + ask(model, q).tokens for q in HELD_OFF}
    base = {q: model.logits(i) for q, i in ids.items()}
    model.fabric.load("skill", taught.dirs["colour"], scale=GATED_SCALE)
    ungated = {q: np.abs(model.logits(i) - base[q]).max() for q, i in ids.items()}
    model.fabric.set_gate("skill", gate.weight, gate.bias)
    for question in HELD_ON:
        assert "turquoise" in answer(model, question), question
    for question, i in ids.items():
        err = np.abs(model.logits(i) - base[question]).max()
        print(f"{question} gated {err:.3g}, ungated {ungated[question]:.3g}")
        assert 4 * err < ungated[question], question
        assert "turquoise" not in answer(model, question)


# -- live changes --------------------------------------------------------------------

@pytest.mark.slow
def test_adapters_change_under_a_running_generation(model, taught):
    """A 40-token generation in a thread while the main thread loads, swaps and unloads
    adapters: it completes, and once every namespace is empty the answer is the base's."""
    question = "Tell me a story about a dragon."
    before = ask(model, question).tokens
    completion = model.chat([{"role": "user", "content": question}], max_tokens=40,
                            temperature=0, ignore_eos=True)
    started, errors = threading.Event(), []

    def run():
        try:
            for _ in completion:
                started.set()
                time.sleep(0.01)    # a reader that takes its time: changes land mid-way
        except BaseException as e:  # noqa: BLE001 -- reported below
            errors.append(e)
        finally:
            started.set()

    thread = threading.Thread(target=run)
    thread.start()
    started.wait()
    rounds = 0
    while thread.is_alive() or rounds == 0:
        model.fabric.load("skill", taught.dirs["colour"])
        if rounds == 0:
            assert thread.is_alive()        # the change lands mid-generation
        model.fabric.load("skill", taught.dirs["dog"])      # a swap
        model.fabric.load("user", taught.dirs["colour"], scale=0.5)
        model.fabric.unload("skill")
        model.fabric.unload("user")
        rounds += 1
    thread.join()
    assert not errors
    assert len(completion.tokens) == 40 and completion.finish_reason == "length"
    assert not any(ns.loaded for ns in model.fabric.namespaces)
    assert ask(model, question).tokens == before


def test_scale_zero_changes_hammered_under_generating_threads(tmp_path):
    """One thread loads, gates, rescales and unloads an adapter at scale 0 (a coefficient
    of exactly 0) for 2 s, while two threads generate again and again: every generation
    gives the tokens it gives alone, with no adapter. The tiny model (3 layers), so that
    many generations overlap many changes."""
    tiny = hf_gguf.build("llama", tmp_path)
    config = peft.LoraConfig(r=8, lora_alpha=16, target_modules=PROJECTIONS,
                             init_lora_weights=False)
    lora = peft.get_peft_model(tiny.model, config)      # random A and B
    lora.save_pretrained(tmp_path / "lora", save_embedding_layers=False)
    start = hf_gguf.FIRST_SPECIAL + 1      # <|im_start|>
    prompts = [[start, *range(40, 48)], [start, *range(100, 105)]]
    with lila.load(tiny.path, n_ctx=64) as m:
        def generate(prompt):
            completion = m.generate(prompt, max_tokens=12, greedy=True, ignore_eos=True)
            completion.text()
            return completion.tokens

        solo = [generate(p) for p in prompts]
        base = m.logits(prompts[0])
        m.fabric.load("user", tmp_path / "lora")
        assert [generate(p) for p in prompts] != solo     # the adapter does something
        m.fabric.set_scale("user", 0.0)
        assert np.array_equal(m.logits(prompts[0]), base)
        m.fabric.unload("user")

        stop, errors, runs = threading.Event(), [], [0, 0, 0]
        rng = np.random.default_rng(0)
        dim = m.fabric.base.dim

        def hammer():
            while not stop.is_set():
                m.fabric.load("user", tmp_path / "lora", scale=0.0)
                m.fabric.set_gate("user", rng.normal(size=dim), 1.0)
                m.fabric.set_scale("user", 0.0)
                m.fabric.set_gate("user", None)
                m.fabric.unload("user")
                runs[2] += 1

        def generating(k):
            while not stop.is_set():
                tokens = generate(prompts[k])
                if tokens != solo[k]:
                    errors.append((k, tokens))
                runs[k] += 1

        def guarded(f, *args):
            try:
                f(*args)
            except BaseException as e:  # noqa: BLE001 -- reported below
                errors.append(e)
                stop.set()

        threads = [threading.Thread(target=guarded, args=a) for a in
                   [(hammer,), (generating, 0), (generating, 1)]]
        for t in threads:
            t.start()
        time.sleep(2)
        stop.set()
        for t in threads:
            t.join()
        print("generations", runs[:2], "change rounds", runs[2])
        assert not errors
        assert min(runs) >= 5
        assert not any(ns.loaded for ns in m.fabric.namespaces)
        assert [generate(p) for p in prompts] == solo
