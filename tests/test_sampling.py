"""The sampler against straightforward references: each filter alone, the whole chain,
and the frequencies of actual draws."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lila.errors import LilaError
from lila.generation.sampling import (Sampler, SamplingParams, apply_repeat_penalty,
                                      min_p_mask, nucleus, softmax, top_k_ids)

RNG = np.random.default_rng(1234)


def random_logits(n: int, scale: float = 3.0) -> np.ndarray:
    return (RNG.standard_normal(n) * scale).astype(np.float32)


# ---- independent references: plain loops and full sorts ----

def ref_penalty(logits, history, penalty, last_n):
    out = [float(v) for v in logits]
    window = history if last_n < 0 else history[len(history) - last_n:] if last_n else []
    for t in set(window):
        out[t] = out[t] / penalty if out[t] > 0 else out[t] * penalty
    return out


def ref_chain(logits, history, p: SamplingParams) -> dict[int, float]:
    """llama.cpp's chain, one filter after another over a fully sorted candidate list."""
    x = ref_penalty(logits, list(history), p.repeat_penalty, p.repeat_last_n)
    order = sorted(range(len(x)), key=lambda i: -x[i])
    if p.top_k > 0:
        order = order[:p.top_k]

    def probs(ids):
        m = max(x[i] for i in ids)
        e = [math.exp(x[i] - m) for i in ids]
        total = sum(e)
        return [v / total for v in e]

    if p.top_p < 1:
        total, cut = 0.0, len(order)
        for n, q in enumerate(probs(order), 1):
            total += q
            if total >= p.top_p:
                cut = n
                break
        order = order[:cut]
    if p.min_p > 0:
        pr = probs(order)
        order = [i for i, q in zip(order, pr) if q >= p.min_p * pr[0]]
    m = max(x[i] for i in order)
    e = [math.exp((x[i] - m) / p.temperature) for i in order]
    total = sum(e)
    return {i: v / total for i, v in zip(order, e)}


# ---- each filter ----

@pytest.mark.parametrize("last_n", [0, 1, 5, 64, -1])
@pytest.mark.parametrize("penalty", [1.3, 0.7, 1.0])
def test_repeat_penalty_matches_reference(last_n, penalty):
    logits = random_logits(200)
    history = list(RNG.integers(0, 200, size=100))
    before = logits.copy()
    ours = apply_repeat_penalty(logits, history, penalty, last_n)
    np.testing.assert_allclose(ours, ref_penalty(logits, history, penalty, last_n), rtol=1e-6)
    np.testing.assert_array_equal(logits, before)   # the caller's logits are untouched


def test_repeat_penalty_counts_each_token_once():
    logits = np.array([2.0, -2.0, 1.0], np.float32)
    out = apply_repeat_penalty(logits, [0, 0, 0, 1, 1], 2.0, 64)
    np.testing.assert_allclose(out, [1.0, -4.0, 1.0])


def test_history_outside_vocabulary_is_an_error():
    with pytest.raises(LilaError, match="outside the vocabulary"):
        apply_repeat_penalty(random_logits(10), [3, 10], 1.1, 64)


@pytest.mark.parametrize("k", [1, 5, 40, 999, 1000, 5000, 0])
def test_top_k_matches_torch(k):
    logits = random_logits(1000)
    expected = torch.topk(torch.from_numpy(logits), min(k, 1000) if k else 1000).indices
    assert set(top_k_ids(logits, k).tolist()) == set(expected.tolist())


@pytest.mark.parametrize("top_p", [0.01, 0.3, 0.9, 0.95, 0.999, 1.0])
def test_nucleus_matches_reference(top_p):
    for n in (10, 1000, 20000):
        probs = softmax(random_logits(n).astype(np.float64))
        sorted_probs, order = torch.sort(torch.from_numpy(probs), descending=True)
        cumulative = torch.cumsum(sorted_probs, 0)
        cut = int((cumulative < top_p).sum()) + 1 if top_p < 1 else n
        assert sorted(nucleus(probs, top_p).tolist()) == sorted(order[:min(cut, n)].tolist())


@pytest.mark.parametrize("min_p", [0.0, 0.05, 0.2, 1.0])
def test_min_p_matches_reference(min_p):
    logits = random_logits(500).astype(np.float64)
    probs = softmax(logits)
    expected = [q >= min_p * probs.max() for q in probs]
    assert min_p_mask(logits, min_p).tolist() == expected


# ---- the whole chain ----

CONFIGS = [SamplingParams(),
           SamplingParams(top_k=0),
           SamplingParams(top_k=0, min_p=0.0),
           SamplingParams(top_k=0, min_p=0.0, top_p=1.0, temperature=1.3),
           SamplingParams(top_k=5, top_p=0.5, min_p=0.0, temperature=0.3),
           SamplingParams(top_k=100, top_p=1.0, min_p=0.3),
           SamplingParams(repeat_penalty=1.5, repeat_last_n=8, temperature=2.0),
           SamplingParams(top_k=1)]


@pytest.mark.parametrize("params", CONFIGS, ids=range(len(CONFIGS)))
def test_chain_matches_sequential_reference(params):
    for scale in (0.5, 3.0, 10.0):
        logits = random_logits(3000, scale)
        history = list(RNG.integers(0, 3000, size=40))
        ids, probs = Sampler(params).distribution(logits, history)
        expected = ref_chain(logits, history, params)
        assert ids.tolist() == sorted(expected)
        np.testing.assert_allclose(probs, [expected[i] for i in ids.tolist()], rtol=1e-6)


def test_draws_follow_the_distribution():
    """Chi-square goodness of fit of 10k seeded draws against the chain's probabilities."""
    logits = random_logits(1000, 1.0)
    sampler = Sampler(SamplingParams(top_k=12, top_p=0.9, min_p=0.02, temperature=1.2, seed=7))
    ids, probs = sampler.distribution(logits, [])
    draws = 10000
    counts = dict.fromkeys(ids.tolist(), 0)
    for _ in range(draws):
        counts[sampler.sample(logits, [])] += 1   # a token outside the survivors: KeyError
    expected = probs * draws
    chi2 = sum((counts[i] - e) ** 2 / e for i, e in zip(ids.tolist(), expected))
    df = len(ids) - 1
    # Wilson-Hilferty: the chi-square quantile for p = 0.999 (z = 3.09).
    bound = df * (1 - 2 / (9 * df) + 3.09 * math.sqrt(2 / (9 * df))) ** 3
    assert 2 <= df and chi2 < bound


def test_same_seed_same_tokens():
    logits = [random_logits(500, 1.0) for _ in range(50)]

    def run(seed):
        sampler = Sampler(SamplingParams(seed=seed, top_k=0, min_p=0.0))
        return [sampler.sample(x, []) for x in logits]

    assert run(42) == run(42)
    assert run(42) != run(43)


def test_greedy_is_argmax_after_the_penalty():
    logits = random_logits(500)
    top = int(np.argmax(logits))
    assert Sampler(SamplingParams(greedy=True)).sample(logits, []) == top
    assert Sampler(SamplingParams(temperature=0.0)).sample(logits, []) == top
    penalized = Sampler(SamplingParams(greedy=True, repeat_penalty=1e9))
    assert penalized.sample(logits, [top]) == int(np.argsort(logits)[-2])


def test_masked_tokens_are_never_drawn():
    logits = random_logits(100)
    logits[::2] = -np.inf
    sampler = Sampler(SamplingParams(top_k=0, top_p=1.0, min_p=0.0, temperature=5.0, seed=0))
    assert all(sampler.sample(logits, []) % 2 == 1 for _ in range(300))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_and_inf_logits_are_errors(bad):
    logits = random_logits(100)
    logits[17] = bad
    for params in (SamplingParams(seed=0), SamplingParams(greedy=True)):
        with pytest.raises(LilaError, match="token 17"):
            Sampler(params).sample(logits, [])


def test_all_masked_is_an_error():
    with pytest.raises(LilaError, match="masked"):
        Sampler(SamplingParams()).sample(np.full(10, -np.inf, np.float32), [])


def test_ignore_eos_never_draws_an_end_token():
    logits = random_logits(100)
    ends = [int(i) for i in np.argsort(logits)[-2:]]   # the two most likely
    runner_up = int(np.argsort(logits)[-3])
    greedy = Sampler(SamplingParams(greedy=True, ignore_eos=True), eot_ids=ends)
    assert greedy.sample(logits, []) == runner_up
    sampler = Sampler(SamplingParams(top_k=0, top_p=1.0, min_p=0.0, temperature=5.0, seed=0,
                                     ignore_eos=True), eot_ids=ends)
    assert not set(ends) & {sampler.sample(logits, []) for _ in range(300)}
    ids, probs = sampler.distribution(logits, [])
    assert probs[np.isin(ids, ends)].sum() == 0
    # Without the flag the end tokens are ordinary candidates: the greedy pick is one.
    assert Sampler(SamplingParams(greedy=True), eot_ids=ends).sample(logits, []) == ends[-1]
    with pytest.raises(LilaError, match="masked"):
        Sampler(SamplingParams(ignore_eos=True), eot_ids=range(10)).sample(logits[:10], [])


def test_full_vocabulary_without_top_k():
    logits = random_logits(151_936, 2.0)
    params = SamplingParams(top_k=0, seed=3)
    ids, probs = Sampler(params).distribution(logits, [])
    expected = ref_chain(logits, [], params)
    assert ids.tolist() == sorted(expected)
    assert Sampler(params).sample(logits, []) in expected


@pytest.mark.parametrize("field,value", [
    ("temperature", -0.1), ("temperature", float("nan")), ("temperature", float("inf")),
    ("top_k", -1), ("top_k", 2.5), ("top_p", 0.0), ("top_p", 1.5), ("top_p", float("nan")),
    ("min_p", -0.01), ("min_p", 2.0), ("repeat_penalty", 0.0), ("repeat_last_n", -2),
    ("seed", -1), ("seed", "x"), ("greedy", "yes"), ("ignore_eos", 1)])
def test_nonsense_settings_are_errors(field, value):
    params = SamplingParams(**{field: value})
    with pytest.raises(LilaError, match=field):
        params.validated()
    with pytest.raises(LilaError):
        Sampler(params)
