"""Comparing two conditions on the same prompts: paired tests, intervals and the "no effect" rule.

Conditions of one run share their prompts, so differences are judged pairwise: McNemar's exact test for a
change in a rate, Newcombe's interval for the paired difference of two proportions, and a two one-sided
tests (TOST) rule with an equivalence margin fixed before the run for any "no effect" claim. Continuous
metrics (quality, KL, perplexity) get percentile bootstrap intervals, and so do their differences between
two conditions: :func:`paired_difference` and :func:`paired_perplexity_difference` resample the shared
prompts (or corpus passages) as pairs, so the interval carries the correlation between the conditions
instead of treating them as independent samples. Agreement between two judges is Cohen's kappa.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from neurogate.errors import ConfigError
from neurogate.evaluation.statistics import wilson_interval
from neurogate.settings import Record

EQUIVALENCE_MARGIN = 0.10
"""The default equivalence margin: a difference in a rate within +-10 points counts as "no effect"."""

Verdict = Literal["effect", "no effect", "inconclusive"]


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value from the discordant pairs (a binomial test of ``only_a`` against
    ``only_a + only_b`` fair coin flips). 1.0 when there are no discordant pairs."""
    if only_a < 0 or only_b < 0:
        raise ConfigError(f"discordant counts must be >= 0, got {only_a} and {only_b}")
    n = only_a + only_b
    if n == 0:
        return 1.0
    k = min(only_a, only_b)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def _newcombe(a: int, b: int, c: int, d: int, z: float) -> tuple[float, float]:
    """Newcombe's (1998, method 10) interval for ``p2 - p1`` where ``p1 = (a + b) / n`` is the first
    condition's rate and ``p2 = (a + c) / n`` the second's; ``a`` both, ``b`` only first, ``c`` only
    second, ``d`` neither. The two Wilson intervals are combined with the correlation between the
    conditions, continuity-corrected as Newcombe recommends."""
    n = a + b + c + d
    p1, p2 = (a + b) / n, (a + c) / n
    l1, u1 = wilson_interval(a + b, n, z)
    l2, u2 = wilson_interval(a + c, n, z)
    denom = (a + b) * (c + d) * (a + c) * (b + d)
    cross = a * d - b * c
    corrected = cross - n / 2 if cross > n / 2 else min(cross, 0)
    phi = corrected / math.sqrt(denom) if denom > 0 else 0.0
    theta = p2 - p1
    lower = math.sqrt(max(0.0, (p2 - l2) ** 2 - 2 * phi * (p2 - l2) * (u1 - p1) + (u1 - p1) ** 2))
    upper = math.sqrt(max(0.0, (u2 - p2) ** 2 - 2 * phi * (u2 - p2) * (p1 - l1) + (p1 - l1) ** 2))
    return max(-1.0, theta - lower), min(1.0, theta + upper)


@dataclass(frozen=True)
class PairedRates(Record):
    """Two rates measured on the same ``n`` prompts: ``diff = rate_b - rate_a`` with its 95% interval,
    McNemar's exact p-value, and the verdict of the equivalence rule at ``margin``."""

    n: int
    both: int
    only_a: int
    only_b: int
    neither: int
    diff: float
    low: float
    high: float
    p_value: float
    margin: float
    verdict: Verdict

    def __str__(self) -> str:
        return (
            f"{100 * self.diff:+.0f} pts [{100 * self.low:+.0f}, {100 * self.high:+.0f}], "
            f"McNemar p={self.p_value:.2g}, {self.verdict}"
        )


def compare_rates(
    a: Sequence[bool], b: Sequence[bool], *, margin: float = EQUIVALENCE_MARGIN, alpha: float = 0.05
) -> PairedRates:
    """Compare hits ``a`` and ``b`` on the same prompts (``a[i]``, ``b[i]``: prompt i was a hit).

    Verdict: ``"effect"`` when McNemar's p < ``alpha`` and the 95% interval excludes 0; ``"no effect"`` when
    the 90% interval (two one-sided tests at ``alpha``) lies inside ``[-margin, margin]``; else
    ``"inconclusive"``.
    """
    if len(a) != len(b):
        raise ConfigError(f"paired comparison needs equal lengths, got {len(a)} and {len(b)}")
    if not a:
        raise ConfigError("paired comparison needs at least one prompt")
    if not 0 < margin < 1:
        raise ConfigError(f"the equivalence margin must be in (0, 1), got {margin}")
    both = sum(1 for x, y in zip(a, b, strict=True) if x and y)
    only_a = sum(1 for x, y in zip(a, b, strict=True) if x and not y)
    only_b = sum(1 for x, y in zip(a, b, strict=True) if y and not x)
    neither = len(a) - both - only_a - only_b
    low, high = _newcombe(both, only_a, only_b, neither, 1.959964)
    low90, high90 = _newcombe(both, only_a, only_b, neither, 1.644854)
    p = mcnemar_exact(only_a, only_b)
    verdict: Verdict = "inconclusive"
    if p < alpha and (low > 0 or high < 0):
        verdict = "effect"
    elif -margin <= low90 and high90 <= margin:
        verdict = "no effect"
    return PairedRates(
        len(a),
        both,
        only_a,
        only_b,
        neither,
        (only_b - only_a) / len(a),
        low,
        high,
        p,
        margin,
        verdict,
    )


@dataclass(frozen=True)
class Estimate(Record):
    """A mean with its 95% percentile-bootstrap interval (``n`` values; NaN values are left out)."""

    value: float
    low: float
    high: float
    n: int

    def format(self, digits: int = 3) -> str:
        if not self.n:
            return "-"
        return f"{self.value:.{digits}f} [{self.low:.{digits}f}-{self.high:.{digits}f}]"


def bootstrap(
    values: Sequence[Any],
    *,
    statistic: Callable[[Sequence[Any]], float] | None = None,
    resamples: int = 2000,
    seed: int = 0,
) -> Estimate:
    """``statistic`` of ``values`` (default: the mean of the finite numbers) with a 95% percentile
    bootstrap interval over resampled items, seeded so the same values always give the same interval."""
    if statistic is None:
        items: list[Any] = [float(v) for v in values if v is not None and math.isfinite(v)]
        stat: Callable[[Sequence[Any]], float] = lambda xs: sum(xs) / len(xs)  # noqa: E731
    else:
        items, stat = list(values), statistic
    if not items:
        return Estimate(math.nan, math.nan, math.nan, 0)
    rng = random.Random(seed)
    n = len(items)
    draws = sorted(stat([items[rng.randrange(n)] for _ in range(n)]) for _ in range(resamples))
    low = draws[int(0.025 * (resamples - 1))]
    high = draws[math.ceil(0.975 * (resamples - 1))]
    return Estimate(stat(items), low, high, n)


def _percentiles(draws: np.ndarray, value: float, n: int) -> Estimate:
    """``value`` with the 2.5th and 97.5th percentiles of the finite ``draws`` (NaN when fewer than half
    of them are finite: most resamples had nothing to measure)."""
    finite = np.sort(draws[np.isfinite(draws)])
    if len(finite) < max(1, len(draws) // 2):
        return Estimate(value, math.nan, math.nan, n)
    low = float(finite[int(0.025 * (len(finite) - 1))])
    high = float(finite[math.ceil(0.975 * (len(finite) - 1))])
    return Estimate(value, low, high, n)


def paired_difference(
    a: Sequence[float | None], b: Sequence[float | None], *, resamples: int = 2000, seed: int = 0
) -> Estimate:
    """The mean of ``b[i] - a[i]`` over the items both conditions measured (a ``None`` or non-finite value
    on either side drops the pair) with a 95% percentile bootstrap interval over resampled pairs, seeded.
    ``a`` and ``b`` hold one value per shared item (prompt) in the same order."""
    if len(a) != len(b):
        raise ConfigError(f"a paired difference needs equal lengths, got {len(a)} and {len(b)}")
    diffs = np.array(
        [
            float(y) - float(x)
            for x, y in zip(a, b, strict=True)
            if x is not None and y is not None and math.isfinite(x) and math.isfinite(y)
        ]
    )
    n = len(diffs)
    if not n:
        return Estimate(math.nan, math.nan, math.nan, 0)
    rows = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    return _percentiles(diffs[rows].mean(axis=1), float(diffs.mean()), n)


def paired_perplexity_difference(
    a: Sequence[tuple[float, int]], b: Sequence[tuple[float, int]], *, resamples: int = 2000, seed: int = 0
) -> Estimate:
    """``perplexity(b) - perplexity(a)`` where each side holds one ``(summed NLL, tokens)`` per shared item
    and perplexity is exp(total NLL / total tokens), with a 95% percentile bootstrap interval over
    resampled items (both sides drawn together), seeded. Items with no tokens on either side are left
    out, so both perplexities are read on the same items."""
    if len(a) != len(b):
        raise ConfigError(f"a paired difference needs equal lengths, got {len(a)} and {len(b)}")
    kept = [(x, y) for x, y in zip(a, b, strict=True) if x[1] > 0 and y[1] > 0]
    n = len(kept)
    if not n:
        return Estimate(math.nan, math.nan, math.nan, 0)
    nll = np.array([[x[0], y[0]] for x, y in kept], dtype=np.float64)
    tokens = np.array([[x[1], y[1]] for x, y in kept], dtype=np.float64)

    def difference(rows: np.ndarray) -> np.ndarray:
        ppl = np.exp(nll[rows].sum(axis=-2) / tokens[rows].sum(axis=-2))
        return ppl[..., 1] - ppl[..., 0]

    rows = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    return _percentiles(difference(rows), float(difference(np.arange(n))), n)


def cohen_kappa(a: Sequence[str], b: Sequence[str]) -> float:
    """Cohen's kappa between two labelings of the same items (1 = perfect, 0 = chance); NaN when chance
    agreement is already perfect (every item has one label under both)."""
    if len(a) != len(b) or not a:
        raise ConfigError("kappa needs two labelings of the same, non-empty items")
    n = len(a)
    observed = sum(1 for x, y in zip(a, b, strict=True) if x == y) / n
    labels = set(a) | set(b)
    expected = sum((a.count(lab) / n) * (b.count(lab) / n) for lab in labels)
    if expected >= 1.0:
        return math.nan
    return (observed - expected) / (1 - expected)
