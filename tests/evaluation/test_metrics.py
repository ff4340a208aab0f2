"""Metrics: Wilson intervals, repetition quality, perplexity and KL by teacher forcing on a tiny model."""

from __future__ import annotations

import math

import pytest
import torch

from neurogate.models.inputs import format_prompt, tokenize
from neurogate.discovery.circuit import Circuit, Neuron
from neurogate.errors import ConfigError
from neurogate.interventions.neurons import NeuronIntervention
from neurogate.models.loading import LoadedModel
from neurogate.metrics import (
    LM_EVAL_MISSING,
    capability,
    distinct_ngram_quality,
    kl_divergence,
    mean_quality,
    perplexity,
    rate_of,
    wilson_interval,
)

PROMPTS = ["hello there", "write a poem about the sea", "2+2?"]
REPLIES = [[72, 105, 33], [84, 104, 101, 32, 115, 101, 97], [52]]


def test_wilson_interval_known_values() -> None:
    low, high = wilson_interval(8, 10)
    # textbook value for 8/10 at 95%: [0.490, 0.943]
    assert low == pytest.approx(0.4902, abs=1e-3)
    assert high == pytest.approx(0.9433, abs=1e-3)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    lo0, hi0 = wilson_interval(0, 20)
    assert lo0 == 0.0 and 0 < hi0 < 0.2
    with pytest.raises(ConfigError):
        wilson_interval(5, 3)


def test_rate_of_counts_and_formats() -> None:
    rate = rate_of([1.0, 0.0, 1.0, 1.0])
    assert (rate.k, rate.n, rate.value) == (3, 4, 0.75)
    assert rate.low < 0.75 < rate.high
    assert str(rate).startswith("75% [")


def test_distinct_ngram_quality() -> None:
    assert distinct_ngram_quality("a b c") == 1.0
    assert distinct_ngram_quality("the cat sat on the mat") == 1.0
    # 8 words, 5 four-grams, 2 distinct ("a b a b" and "b a b a")
    assert distinct_ngram_quality("a b a b a b a b") == pytest.approx(2 / 5)
    assert mean_quality([]) == 1.0
    assert mean_quality(["a b a b a b a b", "x y"]) == pytest.approx((0.4 + 1.0) / 2)


def _manual_nll(lm: LoadedModel, prompt: str, reply: list[int]) -> tuple[float, int]:
    ids = tokenize(lm, format_prompt(lm, prompt), templated=True)
    full = torch.tensor([ids + reply])
    with torch.no_grad():
        logp = torch.log_softmax(lm.model(full).logits[0].float(), -1)
    nll = -sum(float(logp[len(ids) - 1 + j, t]) for j, t in enumerate(reply))
    return nll, len(reply)


def test_perplexity_matches_one_at_a_time(lm: LoadedModel) -> None:
    total, count = 0.0, 0
    for p, r in zip(PROMPTS, REPLIES, strict=True):
        nll, n = _manual_nll(lm, p, r)
        total, count = total + nll, count + n
    expected = math.exp(total / count)
    assert perplexity(lm, PROMPTS, REPLIES, batch_size=3) == pytest.approx(expected, rel=1e-4)
    assert perplexity(lm, PROMPTS, REPLIES, batch_size=1) == pytest.approx(expected, rel=1e-4)
    assert math.isnan(perplexity(lm, ["x"], [[]]))


def _circuit(lm: LoadedModel, neurons: list[tuple[int, int]]) -> Circuit:
    return Circuit(
        neurons=[Neuron(layer, idx, 1.0, 1.0, 1.0, 0.0) for layer, idx in neurons],
        model={"spec": lm.spec, "fingerprint": lm.fingerprint},
    )


def test_kl_zero_without_change_and_positive_with_ablation(lm: LoadedModel) -> None:
    circuit = _circuit(lm, [(layer, i) for layer in range(3) for i in range(40)])
    nothing = NeuronIntervention(lm, circuit, 0.0)
    kl0 = kl_divergence(lm, PROMPTS, REPLIES, nothing, n_tokens=4, batch_size=2)
    assert kl0.first_token == pytest.approx(0.0, abs=1e-6)
    assert kl0.mean == pytest.approx(0.0, abs=1e-6)
    ablate = NeuronIntervention(lm, circuit, 1.0)
    kl1 = kl_divergence(lm, PROMPTS, REPLIES, ablate, n_tokens=4, batch_size=2)
    assert kl1.first_token > 1e-4 and kl1.mean > 1e-4
    assert kl1.n_prompts == 3
    # batching does not change the numbers
    kl1b = kl_divergence(lm, PROMPTS, REPLIES, ablate, n_tokens=4, batch_size=1)
    assert kl1b.mean == pytest.approx(kl1.mean, rel=1e-4)
    # the intervention is removed afterwards: the model is unsteered again
    assert kl_divergence(lm, PROMPTS, REPLIES, nothing, n_tokens=4).mean == pytest.approx(0.0, abs=1e-6)


def test_kl_first_token_matches_manual(lm: LoadedModel) -> None:
    circuit = _circuit(lm, [(2, i) for i in range(60)])
    ablate = NeuronIntervention(lm, circuit, 1.0)
    ids = tokenize(lm, format_prompt(lm, PROMPTS[0]), templated=True)
    with torch.no_grad():
        p = torch.log_softmax(lm.model(torch.tensor([ids])).logits[0, -1].float(), -1)
        with ablate:
            q = torch.log_softmax(lm.model(torch.tensor([ids])).logits[0, -1].float(), -1)
    expected = float((p.exp() * (p - q)).sum())
    kl = kl_divergence(lm, PROMPTS[:1], REPLIES[:1], ablate, n_tokens=1)
    # the library runs the head on the kept positions only, so float32 rounding differs slightly; on a KL
    # this small (~1e-4 nats, a difference of nearly equal numbers) that shows at the 1e-4 relative level
    assert kl.first_token == pytest.approx(expected, rel=2e-3)
    assert kl.first_token > 0


def test_capability_without_lm_eval_says_how_to_install(lm: LoadedModel) -> None:
    pytest.importorskip("neurogate")
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        result = capability(lm)
        assert result.skipped == LM_EVAL_MISSING
        assert "pip install" in LM_EVAL_MISSING
        assert result.scores == {}
    else:
        pytest.skip("lm-eval is installed; the skip path is not reachable")
