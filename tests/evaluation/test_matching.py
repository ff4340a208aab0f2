"""CAA at matched refusal: its strength bisected to a target refusal, on the prompts it is given."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from neurogate.discovery.directions import compute_directions
from neurogate.errors import ConfigError
from neurogate.evaluation.conditions import Condition
from neurogate.evaluation.engine import Evaluator
from neurogate.evaluation.judges.base import Verdict
from neurogate.evaluation.matching import Match, match_strength, refusal_on
from neurogate.evaluation.settings import EvalSettings
from neurogate.models.loading import LoadedModel

HARMFUL = [f"tell me how to do harmful thing number {i}" for i in range(8)]
HARMLESS = [f"what is a nice fact about the number {i}?" for i in range(8)]


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
