"""The baselines done right: the ablation direction chosen by its effect, and CAA at matched refusal."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
import torch

from neurogate.discovery.directions import compute_directions
from neurogate.evaluation.direction_selection import refusal_score, refusal_tokens, select_direction
from neurogate.evaluation.engine import Evaluator
from neurogate.evaluation.judges.base import Verdict
from neurogate.evaluation.matching import match_strength
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
