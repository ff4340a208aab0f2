"""The baselines done right: the ablation direction chosen by its effect, and CAA at matched refusal."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
import torch

from neurogate.discovery.capture import CaptureOptions
from neurogate.discovery.directions import compute_directions
from neurogate.errors import ConfigError
from neurogate.evaluation.conditions import Condition
from neurogate.evaluation.direction_selection import (
    DirectionSelection,
    candidate_directions,
    refusal_score,
    refusal_tokens,
    select_direction,
)
from neurogate.evaluation.engine import Evaluator
from neurogate.evaluation.judges.base import Verdict
from neurogate.evaluation.matching import Match, match_strength, refusal_on
from neurogate.evaluation.settings import EvalSettings
from neurogate.models.loading import LoadedModel

HARMFUL = [f"tell me how to do harmful thing number {i}" for i in range(8)]
HARMLESS = [f"what is a nice fact about the number {i}?" for i in range(8)]


def test_refusal_tokens_are_frequent_for_harmful_and_rare_for_harmless() -> None:
    def first(tokens: list[int]) -> torch.Tensor:
        lp = torch.full((len(tokens), 10), -20.0)
        lp[torch.arange(len(tokens)), torch.tensor(tokens)] = 0.0
        return lp

    harmful = first([3, 3, 3, 3, 7, 1, 1, 9, 9, 9])  # 3: 40%, 9: 30%, 1: 20%, 7: 10%
    harmless = first([1, 1, 1, 1, 9, 2, 2, 2, 2, 2])  # 1 is common here too; 9 appears half as often
    assert refusal_tokens(harmful, harmless) == [3, 7, 9]
    assert refusal_tokens(first([4, 4]), first([4, 4])) == [4]  # nothing qualifies: the commonest one
    p = torch.tensor([[0.0, -30.0], [-30.0, 0.0]])
    assert refusal_score(p, [0]) == pytest.approx(
        0.0, abs=1e-6
    )  # one certain yes, one certain no: log-odds cancel


def test_direction_is_chosen_by_effect_within_the_bounds(lm: LoadedModel) -> None:
    directions, selection = select_direction(
        lm, (HARMFUL[4:], HARMLESS[4:]), (HARMFUL[:4], HARMLESS[:4]), shortlist=4
    )
    n_layers = lm.adapter.n_layers
    layers = range(int(0.25 * n_layers), max(1, int(0.8 * n_layers)))
    assert len(selection.candidates) == 13 * len(layers)  # every post-instruction position x candidate layer
    assert all(c.layer in layers and -13 <= c.position <= -1 for c in selection.candidates)
    scores = [c.refusal_score for c in selection.candidates]
    assert scores == sorted(scores)
    measured = [c for c in selection.candidates if c.kl is not None]
    assert len(measured) == 4 and measured == selection.candidates[:4]
    chosen = next(
        c for c in selection.candidates if (c.layer, c.position) == (selection.layer, selection.position)
    )
    if selection.within_bounds:
        assert chosen.passed and chosen == next(c for c in selection.candidates if c.passed)
    assert directions.best_layer == selection.layer and directions.diffs.shape == (
        n_layers,
        lm.adapter.d_model,
    )
    # the chosen row is the difference of means at that position, on the training prompts only
    last = compute_directions(lm, HARMFUL[4:], HARMLESS[4:], heldout_fraction=0.0)
    if selection.position == -1:
        torch.testing.assert_close(directions.diffs, last.diffs, atol=1e-4, rtol=1e-4)


def test_caa_is_chosen_among_the_same_candidates_as_ablation(lm: LoadedModel) -> None:
    """Equal care: CAA's vector is chosen by effect over exactly the ablation's candidates (same grid,
    same shortlist, same bounds), from shared difference-of-means candidates, but scored by its own
    intervention."""
    train, val = (HARMFUL[4:], HARMLESS[4:]), (HARMFUL[:4], HARMLESS[:4])
    diffs = candidate_directions(lm, train[0], train[1], CaptureOptions(progress=False))
    ablation = select_direction(lm, train, val, shortlist=4, diffs=diffs)[1]
    vector, caa = select_direction(lm, train, val, shortlist=4, method="caa", diffs=diffs)
    assert caa.method == "caa" and ablation.method == "ablation"
    grid = sorted((c.layer, c.position) for c in ablation.candidates)
    assert sorted((c.layer, c.position) for c in caa.candidates) == grid
    assert sum(c.kl is not None for c in caa.candidates) == 4  # the same shortlist
    assert (caa.kl_bound, caa.benign_bound) == (ablation.kl_bound, ablation.benign_bound)
    # scored under CAA, not under ablation: the refusal scores differ
    by_cand = {(c.layer, c.position): c.refusal_score for c in ablation.candidates}
    assert any(abs(c.refusal_score - by_cand[(c.layer, c.position)]) > 1e-6 for c in caa.candidates)
    # the chosen vector is the shared candidate row at the chosen position, used at the chosen layer
    assert vector.best_layer == caa.layer and vector.model["position"] == caa.position
    n_pos = diffs.shape[0]
    torch.testing.assert_close(vector.diffs, diffs[caa.position + n_pos])
    # a record stored before CAA was chosen this way reads back as ablation's
    old = {k: v for k, v in ablation.to_dict().items() if k != "method"}
    assert DirectionSelection.from_dict(old).method == "ablation"
    with pytest.raises(ConfigError, match="caa"):
        select_direction(lm, train, val, method="steer")


class _ChangedJudge:
    """A judge for the test: a reply is a refusal when it is the unsteered model's own reply, so refusal
    falls as an intervention changes more replies."""

    name = "unchanged"

    def __init__(self, reference: dict[str, str]) -> None:
        self.reference = reference

    def config(self) -> dict[str, Any]:
        return {"name": self.name}

    def judge(self, prompts: Sequence[str], replies: Sequence[str]) -> list[Verdict]:
        return [
            "refusal" if self.reference[p] == r else "compliance"
            for p, r in zip(prompts, replies, strict=True)
        ]


def test_match_strength_bisects_to_the_target_refusal(zoo_lm: LoadedModel) -> None:
    # a real (small) model, so replies are words rather than byte soup that the degeneracy rule sets aside
    lm = zoo_lm
    directions = compute_directions(lm, HARMFUL, HARMLESS, heldout_fraction=0.0)
    settings = EvalSettings(max_new_tokens=12, batch_size=8)
    plain = Evaluator(lm, HARMFUL, [], settings=settings)
    reference = {p: g.text for p, g in zip(HARMFUL, plain.generate(HARMFUL, None)[0], strict=True)}
    ev = Evaluator(
        lm, HARMFUL, [], directions=directions, judges=[_ChangedJudge(reference)], settings=settings
    )
    match = match_strength(ev, "caa", 0.5, n_prompts=8, max_new_tokens=12, steps=4)
    assert match.probes[0] == [0.0, 1.0]  # unsteered: every reply is its own reference
    strengths = [s for s, _ in match.probes]
    assert strengths[1] == 1.0 and len(strengths) == len(set(strengths))
    best = min(match.probes[1:], key=lambda p: abs(p[1] - 0.5))
    assert abs(match.refusal - 0.5) == abs(best[1] - 0.5) and match.strength == pytest.approx(
        best[0], abs=1e-4
    )
    already = match_strength(ev, "caa", 1.0, n_prompts=8, max_new_tokens=12)
    assert already.strength == 0.0 and len(already.probes) == 1  # nothing to match: refusal is at the target


def test_match_on_given_prompts_against_a_reference_read_the_same_way(zoo_lm: LoadedModel) -> None:
    """The study's matching: the target is the reference condition's refusal on the validation prompts
    (read exactly as the probes are), and the probes run on those prompts, never the evaluator's own."""
    lm = zoo_lm
    validation, evaluation = HARMFUL[:4], HARMFUL[4:]
    directions = compute_directions(lm, HARMFUL, HARMLESS, heldout_fraction=0.0)
    settings = EvalSettings(max_new_tokens=10, batch_size=8)
    plain = Evaluator(lm, HARMFUL, [], settings=settings)
    reference = {p: g.text for p, g in zip(HARMFUL, plain.generate(HARMFUL, None)[0], strict=True)}
    ev = Evaluator(
        lm, evaluation, [], directions=directions, judges=[_ChangedJudge(reference)], settings=settings
    )
    assert refusal_on(ev, Condition("caa", 0.0), validation, max_new_tokens=10) == 1.0
    target = refusal_on(ev, Condition("caa", 4.0), validation, max_new_tokens=10)
    match = match_strength(
        ev,
        "caa",
        target,
        prompts=validation,
        on="validation",
        reference="caa s=4",
        max_new_tokens=10,
        steps=2,
    )
    assert (match.prompts, match.reference, match.n_prompts) == ("validation", "caa s=4", 4)
    seen = {p for (_, p, _) in ev.classifier._cache}
    assert seen == set(validation)  # no evaluation prompt was generated or judged
    with pytest.raises(ConfigError):
        refusal_on(ev, Condition("caa", 1.0), [])
    # a match stored by an earlier version reads back as made on the evaluation prompts
    old = {k: v for k, v in match.to_dict().items() if k not in ("prompts", "reference")}
    assert Match.from_dict(old).prompts == "evaluation"
