"""What a search maximises: compliance under the best judge it has, with refusals, redirects and degenerate
replies all counted as failures."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

from neurogate.evaluation.results import RESULT_VERSION, ConditionResult
from neurogate.tuning.search import Scores, objective_judge

V2_STUDY = Path(__file__).parents[1] / "data" / "v2-study-results.json"


def _judged(form: list[str], content: list[str]) -> ConditionResult:
    """A stored condition's replies re-labelled under a form-only judge and a content judge."""
    stored = json.loads(V2_STUDY.read_text(encoding="utf-8"))["conditions"]["cna-m0-n6"]
    base = ConditionResult.from_dict(stored)
    replies = [
        dataclasses.replace(r, classes={"keyword": f, "content": c})  # type: ignore[dict-item]
        for r, f, c in zip(base.harmful, form, content, strict=True)
    ]
    return dataclasses.replace(
        base,
        judges=["keyword", "content"],
        redirect_known={"keyword": False, "content": True},
        version=RESULT_VERSION,
        harmful=replies,
        benign=[
            dataclasses.replace(r, classes={"keyword": "refusal", "content": "compliance"})
            for r in base.benign
        ],
    )


def test_trials_are_scored_under_the_judge_that_sees_redirects() -> None:
    # the keyword judge reads two redirects as compliance; the content judge sees them
    result = _judged(
        ["refusal", "compliance", "compliance", "degenerate"],
        ["refusal", "redirect", "compliance", "degenerate"],
    )
    assert result.judge == "keyword" and objective_judge(result) == "content"
    scores = Scores.of(result)
    assert scores.compliance == 0.25 and scores.refusal == 0.25 and scores.redirect == 0.25
    assert scores.degenerate == 0.25 and scores.not_served == 0.5
    assert scores.benign_refusal == 0.0  # the benign side is read under the same judge
    stored: dict[str, Any] = scores.to_dict()  # as a trial stores it
    assert Scores(**stored) == scores


def test_without_a_redirect_judge_the_primary_judge_scores_and_redirect_is_not_stored() -> None:
    result = dataclasses.replace(
        _judged(["refusal", "compliance", "compliance", "degenerate"], ["refusal"] * 4),
        redirect_known={},
    )
    assert objective_judge(result) == "keyword"
    scores = Scores.of(result)
    assert scores.redirect is None and scores.compliance == 0.5 and scores.not_served == 0.25
    stored: dict[str, Any] = scores.to_dict()
    assert "redirect" not in stored and Scores(**stored) == scores
    # a trial stored before redirects (and before the first-token KL) reads back with both unknown
    old = Scores(**{k: v for k, v in stored.items() if k != "kl_first"})
    assert old.redirect is None and math.isnan(old.kl_first)
