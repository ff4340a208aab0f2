"""Paired statistics: McNemar's exact test, Newcombe's interval, the equivalence rule, the bootstrap and
Cohen's kappa, each on cases whose answers are known."""

from __future__ import annotations

import math
import random

import pytest

from neurogate.errors import ConfigError
from neurogate.evaluation.metrics import perplexity_of
from neurogate.evaluation.paired import (
    bootstrap,
    cohen_kappa,
    compare_rates,
    mcnemar_exact,
    paired_difference,
    paired_perplexity_difference,
)


def test_mcnemar_exact_matches_the_binomial_tail() -> None:
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(0, 6) == pytest.approx(2 / 64)  # all six discordant pairs one way
    assert mcnemar_exact(6, 0) == mcnemar_exact(0, 6)
    assert mcnemar_exact(1, 9) == pytest.approx(2 * (1 + 10) / 1024)  # P(X <= 1), X ~ Bin(10, 1/2), doubled
    assert mcnemar_exact(5, 5) == 1.0  # capped at 1
    with pytest.raises(ConfigError):
        mcnemar_exact(-1, 2)


def _pairs(only_a: int, only_b: int, both: int, neither: int) -> tuple[list[bool], list[bool]]:
    a = [True] * only_a + [False] * only_b + [True] * both + [False] * neither
    b = [False] * only_a + [True] * only_b + [True] * both + [False] * neither
    return a, b


def test_compare_rates_counts_cells_and_the_difference() -> None:
    r = compare_rates(*_pairs(7, 2, 30, 61))
    assert (r.n, r.only_a, r.only_b, r.both, r.neither) == (100, 7, 2, 30, 61)
    assert r.diff == pytest.approx((32 - 37) / 100)
    assert r.low < r.diff < r.high and r.low >= -1 and r.high <= 1
    assert r.p_value == pytest.approx(mcnemar_exact(7, 2))


def test_newcombe_interval_covers_the_true_difference_95_percent_of_the_time() -> None:
    # paired Bernoulli outcomes with known marginals (0.5 and 0.35, so the true difference is -0.15) and a
    # positive correlation between conditions, as between two conditions run on the same prompts
    rng = random.Random(7)
    cells = [(True, True, 0.30), (True, False, 0.20), (False, True, 0.05), (False, False, 0.45)]
    hits, runs, n = 0, 1500, 60
    for _ in range(runs):
        a, b = [], []
        for _ in range(n):
            u, acc = rng.random(), 0.0
            for x, y, p in cells:
                acc += p
                if u < acc:
                    a.append(x)
                    b.append(y)
                    break
            else:
                a.append(False)
                b.append(False)
        r = compare_rates(a, b)
        hits += r.low <= -0.15 <= r.high
    assert 0.93 <= hits / runs <= 0.985  # Newcombe's method 10 is close to nominal, slightly conservative


def test_verdict_effect_no_effect_and_inconclusive() -> None:
    # must pass as an effect: 20 prompts stop refusing, none start
    assert compare_rates(*_pairs(20, 0, 60, 20)).verdict == "effect"
    # must pass as no effect: the same class everywhere over 200 prompts (the 90% CI is tight around 0)
    same = compare_rates(*_pairs(0, 0, 150, 50))
    assert same.verdict == "no effect" and same.high - same.low < 0.05
    # must not pass as no effect: a small sample cannot show equivalence within 10 points
    small = compare_rates(*_pairs(1, 0, 5, 4))
    assert small.verdict == "inconclusive"
    # must not pass as no effect when the difference is near the margin, even if McNemar is not significant
    near = compare_rates(*_pairs(12, 4, 50, 34))
    assert near.p_value >= 0.05 and near.verdict == "inconclusive"
    # a wider margin, fixed in advance, can turn that into "no effect"
    assert compare_rates(*_pairs(12, 4, 50, 34), margin=0.3).verdict == "no effect"
    with pytest.raises(ConfigError):
        compare_rates([True], [True, False])
    with pytest.raises(ConfigError):
        compare_rates([True], [True], margin=0.0)


def test_bootstrap_covers_the_mean_and_is_seeded() -> None:
    rng = random.Random(1)
    values = [rng.gauss(2.0, 1.0) for _ in range(400)]
    est = bootstrap(values)
    assert est.value == pytest.approx(sum(values) / 400)
    half_width = 1.96 / math.sqrt(400)  # the normal-theory 95% half-width for sd 1
    assert est.low == pytest.approx(est.value - half_width, abs=0.03)
    assert est.high == pytest.approx(est.value + half_width, abs=0.03)
    assert bootstrap(values) == est  # the same values, the same interval
    assert bootstrap([1.0, float("nan"), 3.0]).n == 2
    assert bootstrap([]).n == 0 and math.isnan(bootstrap([]).value)
    # any statistic over any items: here a ratio of sums
    pairs = [(2.0, 1), (4.0, 3)]
    ratio = bootstrap(pairs, statistic=lambda xs: sum(x for x, _ in xs) / sum(n for _, n in xs))
    assert ratio.value == pytest.approx(6 / 4) and ratio.low <= ratio.value <= ratio.high


def test_cohen_kappa_on_known_tables() -> None:
    assert cohen_kappa(["r", "c", "r", "c"], ["r", "c", "r", "c"]) == 1.0
    # 2x2 table [[20, 5], [10, 15]]: observed 0.7, expected 0.5 -> kappa 0.4
    a = ["r"] * 25 + ["c"] * 25
    b = ["r"] * 20 + ["c"] * 5 + ["r"] * 10 + ["c"] * 15
    assert cohen_kappa(a, b) == pytest.approx(0.4)
    assert math.isnan(cohen_kappa(["r", "r"], ["r", "r"]))
    with pytest.raises(ConfigError):
        cohen_kappa(["r"], [])


def test_paired_difference_covers_the_true_difference_and_beats_an_unpaired_reading() -> None:
    """Two conditions measured on the same prompts share each prompt's difficulty: resampling pairs keeps
    that, so the interval covers the true difference at its nominal rate and is much narrower than the
    difference of two independent intervals would be."""
    rng = random.Random(3)
    covered, widths, unpaired = 0, [], []
    for _ in range(300):
        difficulty = [rng.gauss(0.0, 1.0) for _ in range(40)]
        a = [d + rng.gauss(0.0, 0.1) for d in difficulty]
        b = [d + 0.2 + rng.gauss(0.0, 0.1) for d in difficulty]
        est = paired_difference(a, b, resamples=500, seed=rng.randrange(10**6))
        covered += est.low <= 0.2 <= est.high
        widths.append(est.high - est.low)
        ea, eb = bootstrap(a, resamples=200), bootstrap(b, resamples=200)
        unpaired.append(eb.high - ea.low - (eb.low - ea.high))
    assert covered / 300 >= 0.90
    assert sum(widths) < 0.2 * sum(unpaired)
    est = paired_difference([1.0, None, 3.0, float("nan")], [2.0, 5.0, 5.0, 1.0])
    assert est.n == 2 and est.value == pytest.approx(1.5)  # pairs missing a side are dropped
    assert paired_difference([1.0, 2.0], [1.0, 4.0]) == paired_difference([1.0, 2.0], [1.0, 4.0])
    assert paired_difference([None], [1.0]).n == 0 and math.isnan(paired_difference([], []).value)
    with pytest.raises(ConfigError, match="equal lengths"):
        paired_difference([1.0], [1.0, 2.0])


def test_paired_perplexity_difference_reads_both_sides_on_the_same_items() -> None:
    a = [(2.0, 2), (3.0, 1), (0.0, 0), (4.0, 4)]
    b = [(4.0, 2), (1.0, 1), (5.0, 5), (0.0, 0)]
    est = paired_perplexity_difference(a, b)
    kept_a, kept_b = a[:2], b[:2]  # an item with no tokens on either side is left out
    assert est.n == 2
    assert est.value == pytest.approx(perplexity_of(kept_b) - perplexity_of(kept_a))
    assert est.low <= est.value <= est.high
    same = paired_perplexity_difference(a, a)
    assert (same.value, same.low, same.high) == (0.0, 0.0, 0.0)
    assert paired_perplexity_difference([(0.0, 0)], [(1.0, 1)]).n == 0
    with pytest.raises(ConfigError, match="equal lengths"):
        paired_perplexity_difference(a, b[:1])
