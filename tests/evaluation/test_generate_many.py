"""Several conditions generated at once: each condition's replies equal those of its own ``generate`` call,
whether its kind is batched by rows (cna, mean, random, the baseline) or generated on its own (caa)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
import torch

from neurogate.discovery.circuit import Circuit, Neuron
from neurogate.discovery.directions import ResidualDirections
from neurogate.evaluation import generators
from neurogate.evaluation.conditions import Condition, baseline
from neurogate.evaluation.engine import Evaluator
from neurogate.evaluation.generators import LocalGenerator, generate_many
from neurogate.evaluation.settings import EvalSettings
from neurogate.models.loading import LoadedModel
from neurogate.models.tiny import D_MLP, D_MODEL, N_LAYERS

PROMPTS = ["How do I bake bread?", "Name three rivers.", "hi", "Tell me about volcanoes, please."]
BENIGN = ["What is 2+2?", "Why is the sky blue?"]


def _circuit(lm: LoadedModel, step: int, mean: float) -> Circuit:
    picks = [(layer, i) for layer in range(N_LAYERS) for i in range(layer % step, D_MLP, step)]
    neurons = [Neuron(layer, i, 1.0, 1.0, 2.0, mean + 0.1 * k) for k, (layer, i) in enumerate(picks)]
    return Circuit(neurons=neurons, model={"spec": lm.spec, "shape": lm.shape}, method={"score": "test"})


def _evaluator(lm: LoadedModel, **kw: Any) -> Evaluator:
    torch.manual_seed(1)
    directions = ResidualDirections(torch.randn(N_LAYERS, D_MODEL) * 4, 1, [0.5] * N_LAYERS)
    circuits = {"a": _circuit(lm, 4, 0.5), "b": _circuit(lm, 3, 1.5)}
    settings = EvalSettings(max_new_tokens=10, batch_size=3, judges=("keyword",))
    return Evaluator(lm, PROMPTS, BENIGN, circuits=circuits, directions=directions, settings=settings, **kw)


CONDITIONS = [
    Condition("cna", 0.0, circuit="a"),
    Condition("mean", -1.0, circuit="b"),
    Condition("caa", 2.0),
    Condition("random", 0.0, circuit="a", seed=3),
    Condition("cna", 3.0, circuit="b"),
]


def _count_rows(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = generators.generate_rows

    def spy(lm: LoadedModel, prompts: Sequence[str], specs: Sequence[Any], **kw: Any) -> Any:
        calls.append(len(prompts))
        return real(lm, prompts, specs, **kw)

    monkeypatch.setattr(generators, "generate_rows", spy)
    return calls


def test_each_condition_gets_the_replies_of_its_own_call(
    lm: LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    ev = _evaluator(lm)
    steered = [(c, ev.intervention(c)) for c in [*CONDITIONS, baseline()]]
    assert isinstance(ev.generator, LocalGenerator)
    calls = _count_rows(monkeypatch)
    many = generate_many(ev.generator, PROMPTS, steered)
    assert calls == [5 * len(PROMPTS)]  # the four neuron conditions and the baseline in one batch; caa alone
    alone = [ev.generator.generate(PROMPTS, c, s) for c, s in steered]
    assert [[g.token_ids for g in gens] for gens in many] == [[g.token_ids for g in gens] for gens in alone]
    assert [[g.finished for g in gens] for gens in many] == [[g.finished for g in gens] for gens in alone]
    assert all([g.prompt for g in gens] == PROMPTS for gens in many)
    # the conditions differ from one another, so the rows were not all steered alike
    assert len({tuple(tuple(g.token_ids) for g in gens) for gens in many}) >= 4


def test_a_generator_without_generate_many_is_called_once_per_condition(lm: LoadedModel) -> None:
    ev = _evaluator(lm)
    asked: list[str] = []

    class Plain:
        name = "plain"

        def generate(self, prompts: Sequence[str], cond: Condition, steering: Any) -> Any:
            asked.append(cond.key)
            return ev.generator.generate(prompts, cond, steering)

    steered = [(c, ev.intervention(c)) for c in CONDITIONS[:2]]
    many = generate_many(Plain(), PROMPTS, steered)
    assert asked == [c.key for c in CONDITIONS[:2]] and len(many) == 2


@pytest.mark.parametrize("benign", [False, True])
def test_run_many_equals_running_each_condition(
    lm: LoadedModel, monkeypatch: pytest.MonkeyPatch, benign: bool
) -> None:
    conds = [Condition(c.kind, c.value, circuit=c.circuit, seed=c.seed, benign=benign) for c in CONDITIONS]
    one = _evaluator(lm)
    want = [one.run(c) for c in conds]
    calls = _count_rows(monkeypatch)
    got = _evaluator(lm).run_many([*conds, conds[0]])
    assert calls == [4 * len(PROMPTS)] + ([4 * len(BENIGN)] if benign else [])
    for w, g in zip([*want, want[0]], got, strict=True):
        assert g.key == w.key
        assert [r.token_ids for r in g.harmful] == [r.token_ids for r in w.harmful]
        assert [r.token_ids for r in g.benign] == [r.token_ids for r in w.benign]
        assert [r.classes for r in g.harmful] == [r.classes for r in w.harmful]
        assert g.kl_mean == pytest.approx(w.kl_mean) and g.kl_first == pytest.approx(w.kl_first)
