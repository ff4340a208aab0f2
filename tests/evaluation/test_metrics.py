"""Metrics: Wilson intervals, repetition quality, perplexity and KL by teacher forcing on a tiny model."""

from __future__ import annotations

import logging
import math
import sys
import types
from typing import Any

import pytest
import torch

from neurogate.discovery.circuit import Circuit, Neuron
from neurogate.errors import ConfigError
from neurogate.evaluation.capability import LM_EVAL_MISSING, capability
from neurogate.evaluation.metrics import (
    distinct_ngram_quality,
    kl_divergence,
    kl_reference,
    mean_quality,
    perplexity,
)
from neurogate.evaluation.statistics import Rate, rate_of, wilson_interval
from neurogate.models.inputs import format_prompt, tokenize
from neurogate.models.loading import LoadedModel
from neurogate.steering.neurons import NeuronScaling

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
    assert (rate.low, rate.high) == wilson_interval(3, 4)
    assert rate_of([0.5, 0.49, 0.9]).k == 2  # at or above the threshold counts
    assert Rate.from_dict(rate.to_dict()) == rate and rate.to_dict()["value"] == 0.75
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
        model={"spec": lm.spec, "shape": lm.shape},
    )


def test_kl_zero_without_change_and_positive_with_ablation(lm: LoadedModel) -> None:
    circuit = _circuit(lm, [(layer, i) for layer in range(3) for i in range(40)])
    nothing = NeuronScaling(lm, circuit, 1.0)  # m = 1: unchanged
    kl0 = kl_divergence(lm, PROMPTS, REPLIES, nothing, n_tokens=4, batch_size=2)
    assert kl0.first_token == pytest.approx(0.0, abs=1e-6)
    assert kl0.mean_token == pytest.approx(0.0, abs=1e-6) and kl0.mean == pytest.approx([0.0] * 3, abs=1e-6)
    ablate = NeuronScaling(lm, circuit, 0.0)  # m = 0: ablated
    kl1 = kl_divergence(lm, PROMPTS, REPLIES, ablate, n_tokens=4, batch_size=2)
    assert kl1.first_token > 1e-4 and min(kl1.mean) > 1e-4
    assert len(kl1.first) == len(kl1.mean) == 3 and kl1.n_tokens == 4
    # batching does not change the numbers (beyond float32 rounding, which on a KL this small, a difference
    # of nearly equal numbers, shows at the 1e-3 relative level)
    kl1b = kl_divergence(lm, PROMPTS, REPLIES, ablate, n_tokens=4, batch_size=1)
    assert kl1b.mean == pytest.approx(kl1.mean, rel=2e-3) and kl1b.first == pytest.approx(kl1.first, rel=2e-3)
    # the intervention is removed afterwards: the model is unsteered again
    assert kl_divergence(lm, PROMPTS, REPLIES, nothing, n_tokens=4).mean_token == pytest.approx(0.0, abs=1e-6)
    # a stored unsteered reference gives exactly the numbers of a fresh unsteered pass
    ref = kl_reference(lm, PROMPTS, REPLIES, n_tokens=4, batch_size=2)
    kl1r = kl_divergence(lm, PROMPTS, REPLIES, ablate, n_tokens=4, batch_size=2, reference=ref)
    assert kl1r == kl1
    # a reference for other replies or another length is refused, not silently misread
    with pytest.raises(ConfigError, match="KL reference"):
        kl_divergence(lm, PROMPTS, REPLIES, ablate, n_tokens=3, batch_size=2, reference=ref)
    with pytest.raises(ConfigError, match="KL reference"):
        kl_divergence(lm, PROMPTS[:2], REPLIES[:2], ablate, n_tokens=4, reference=ref)


def test_kl_first_token_matches_manual(lm: LoadedModel) -> None:
    circuit = _circuit(lm, [(2, i) for i in range(60)])
    ablate = NeuronScaling(lm, circuit, 0.0)  # m = 0: ablated
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


def test_capability_without_lm_eval_says_how_to_install(
    lm: LoadedModel, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # make lm-eval unimportable whether or not it is installed, so this path is always exercised
    monkeypatch.setitem(sys.modules, "lm_eval", None)
    monkeypatch.setitem(sys.modules, "lm_eval.models.huggingface", None)
    with caplog.at_level(logging.WARNING, logger="neurogate.evaluation.capability"):
        result = capability(lm)
    assert result.scores == {}
    assert result.skipped == LM_EVAL_MISSING
    assert "lm-eval is not installed" in result.skipped
    assert "pip install 'neurogate[eval]'" in result.skipped
    assert LM_EVAL_MISSING in caplog.text  # the reason is logged, not only returned


def test_capability_runs_lm_eval_under_the_steering(lm: LoadedModel, monkeypatch: pytest.MonkeyPatch) -> None:
    """With lm-eval importable (a stand-in here), the tasks run while the intervention is attached and
    the accuracy of each task is read back from lm-eval's results."""
    circuit = _circuit(lm, [(0, 1), (1, 2)])
    steering = NeuronScaling(lm, circuit, 0.0)
    calls: list[dict[str, Any]] = []
    hooks_seen: list[int] = []

    def hook_count() -> int:
        return sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in lm.model.modules())

    class FakeHFLM:
        def __init__(self, pretrained: Any, tokenizer: Any, batch_size: int) -> None:
            assert pretrained is lm.model and tokenizer is lm.tokenizer
            self.batch_size = batch_size

    def simple_evaluate(model: Any, tasks: list[str], limit: int | None) -> dict[str, Any]:
        calls.append({"batch_size": model.batch_size, "tasks": tasks, "limit": limit})
        hooks_seen.append(hook_count())
        return {"results": {"task_a": {"acc,none": 0.25}, "task_b": {"acc_norm,none": 0.75}, "task_c": {}}}

    lm_eval = types.ModuleType("lm_eval")
    lm_eval.simple_evaluate = simple_evaluate  # type: ignore[attr-defined]
    huggingface = types.ModuleType("lm_eval.models.huggingface")
    huggingface.HFLM = FakeHFLM  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "lm_eval", lm_eval)
    monkeypatch.setitem(sys.modules, "lm_eval.models", types.ModuleType("lm_eval.models"))
    monkeypatch.setitem(sys.modules, "lm_eval.models.huggingface", huggingface)
    result = capability(lm, steering, tasks=("task_a", "task_b"), limit=5, batch_size=2)
    assert result.skipped is None
    assert result.scores == {"task_a": 0.25, "task_b": 0.75}
    assert calls == [{"batch_size": 2, "tasks": ["task_a", "task_b"], "limit": 5}]
    assert hooks_seen == [2]  # the circuit's two layers were hooked while lm-eval ran
    assert hook_count() == 0
    assert capability(lm).scores == {"task_a": 0.25, "task_b": 0.75} and hooks_seen[-1] == 0
