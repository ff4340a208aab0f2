"""The experiments' decision rules: the base-vs-instruct verdict and the random control's interval check."""

from __future__ import annotations

import pytest

from neurogate.evaluation.experiments import random_conditions, sparsity_conditions, verdict, within_ci
from neurogate.evaluation.results import ConditionResult
from neurogate.evaluation.statistics import Rate, rate_of, wilson_interval


def _result(refusal: Rate, key: str = "cna-m0") -> ConditionResult:
    return ConditionResult(
        key=key,
        label=key,
        kind="cna",
        scale="multiplier",
        value=0.0,
        group="test",
        n_neurons=None,
        refusal=refusal,
        quality=1.0,
        perplexity=None,
        kl_first=None,
        kl_mean=None,
        benign_refusal=None,
        benign_quality=None,
        tokens_per_s=0.0,
        seconds=0.0,
        intervention={},
    )


def _of(k: int, n: int) -> ConditionResult:
    return _result(rate_of([1.0] * k + [0.0] * (n - k)))


def _disjoint(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[1] < b[0] or b[1] < a[0]


@pytest.mark.parametrize("share", [0.0, 0.3, 1.0])
def test_verdict_is_behaviour_when_the_intervals_separate(share: float) -> None:
    # 19/20 vs 1/20: the 95% intervals do not touch, in either direction, whatever the changed share
    assert _disjoint(wilson_interval(19, 20), wilson_interval(1, 20))
    assert verdict(_of(19, 20), _of(1, 20), share) == "behaviour"
    assert verdict(_of(1, 20), _of(19, 20), share) == "behaviour"


@pytest.mark.parametrize(
    ("base", "steered"),
    [
        ((10, 20), (10, 20)),  # no change in rate at all
        ((10, 20), (8, 20)),  # a small move, intervals overlap widely
        ((15, 20), (8, 20)),  # the point estimate leaves the baseline's interval, but the intervals overlap
    ],
)
def test_verdict_is_not_behaviour_while_the_intervals_overlap(
    base: tuple[int, int], steered: tuple[int, int]
) -> None:
    assert not _disjoint(wilson_interval(*base), wilson_interval(*steered))
    b, s = _of(*base), _of(*steered)
    assert verdict(b, s, 0.5) == "content"  # half the replies changed: content, at the threshold
    assert verdict(b, s, 1.0) == "content"
    assert verdict(b, s, 0.49) == "none"
    assert verdict(b, s, 0.0) == "none"


def test_within_ci_is_inclusive_at_both_ends_and_false_outside() -> None:
    base = _result(Rate(5, 10, 0.2, 0.8))
    inside = [Rate(2, 10, 0.0, 1.0), Rate(5, 10, 0.0, 1.0), Rate(8, 10, 0.0, 1.0)]
    outside = [Rate(1, 10, 0.0, 1.0), Rate(9, 10, 0.0, 1.0), Rate(0, 10, 0.0, 1.0)]
    assert all(within_ci(base, _result(r)) for r in inside)
    assert not any(within_ci(base, _result(r)) for r in outside)
    # only the other condition's point estimate counts, not its own interval
    assert not within_ci(base, _result(Rate(9, 10, 0.1, 0.95)))
    # with Wilson intervals: 12/20 sits inside 10/20's interval, 5/20 and 15/20 do not
    assert within_ci(_of(10, 20), _of(12, 20))
    assert not within_ci(_of(10, 20), _of(5, 20)) and not within_ci(_of(10, 20), _of(15, 20))


def test_experiment_conditions_are_named_on_the_multiplier_scale() -> None:
    sparse = sparsity_conditions([3, 30])
    assert [c.key for c in sparse] == ["cna-m0-n3", "cna-m0-n30"]
    assert all(c.group == "sparsity" and not c.benign for c in sparse)
    randoms = random_conditions([0, 1], multiplier=0.5)
    assert [c.key for c in randoms] == ["random-m0.5-seed0", "random-m0.5-seed1"]
    assert all(c.group == "random" for c in randoms)
