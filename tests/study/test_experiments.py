"""The experiments' decision rules: the base-vs-instruct verdict, and how experiment conditions are named."""

from __future__ import annotations

import pytest

from neurogate.evaluation.paired import compare_rates
from neurogate.study.experiments import sparsity_conditions, verdict


def _pairs(only_base: int, only_steered: int, both: int, neither: int) -> tuple[list[bool], list[bool]]:
    base = [True] * only_base + [False] * only_steered + [True] * both + [False] * neither
    steered = [False] * only_base + [True] * only_steered + [True] * both + [False] * neither
    return base, steered


@pytest.mark.parametrize("share", [0.0, 0.3, 1.0])
def test_verdict_is_behaviour_when_refusal_changes_on_the_same_prompts(share: float) -> None:
    # 12 prompts stop being refused and none start: McNemar p = 2 / 2**12, far below 0.05, both directions
    assert verdict(compare_rates(*_pairs(12, 0, 4, 4)), share) == "behaviour"
    assert verdict(compare_rates(*_pairs(0, 12, 4, 4)), share) == "behaviour"


@pytest.mark.parametrize(
    ("only_base", "only_steered"),
    [
        (0, 0),  # no prompt changed its class
        (3, 1),  # a small, insignificant net change
        (5, 5),  # many changes that cancel out: the rate is unchanged
    ],
)
def test_verdict_is_content_or_none_when_refusal_does_not_change(only_base: int, only_steered: int) -> None:
    change = compare_rates(*_pairs(only_base, only_steered, 10, 10))
    assert change.p_value >= 0.05
    assert verdict(change, 0.5) == "content"  # half the replies changed: content, at the threshold
    assert verdict(change, 1.0) == "content"
    assert verdict(change, 0.49) == "none"
    assert verdict(change, 0.0) == "none"


def test_experiment_conditions_are_named_on_the_multiplier_scale() -> None:
    sparse = sparsity_conditions([3, 30])
    assert [c.key for c in sparse] == ["cna-m0-n3", "cna-m0-n30"]
    assert all(c.group == "sparsity" and not c.benign for c in sparse)
    assert [c.key for c in sparsity_conditions([5], multiplier=0.5)] == ["cna-m0.5-n5"]
