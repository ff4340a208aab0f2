"""A condition's numbers as table rows: headline rates under the primary judge with Wilson intervals,
continuous metrics with bootstrap intervals, and each judge's rates side by side. Shared by the CLI and the
report, so both print the same numbers the same way.

Every rate here is a judge's reading alone: it names its judge and says it is uncalibrated
(:func:`judged_by`), and a redirect rate a judge could not measure reads :data:`NA` with the reason
(:func:`redirect_note`), never 0%."""

from __future__ import annotations

import math
from collections.abc import Sequence

from neurogate.evaluation.metrics import MATCHED_WORDS, matched_quality, perplexity_of
from neurogate.evaluation.paired import (
    Estimate,
    bootstrap,
    paired_difference,
    paired_perplexity_difference,
)
from neurogate.evaluation.results import ConditionResult, Metrics

#: Said beside every rate that comes from a judge with no hand-labelled audit behind it.
UNCALIBRATED = "judge only, uncalibrated"
#: The cell of a rate that was not measured (a redirect under a judge that cannot tell them apart).
NA = "n/a"


def judged_by(judge: str) -> str:
    """Where a rate comes from, e.g. ``"keyword judge only, uncalibrated"``."""
    return f"{judge} judge only, uncalibrated"


def rate_cell(r: ConditionResult, cls: str, judge: str | None = None, *, benign: bool = False) -> str:
    """One class's rate under ``judge`` (default: the primary one) with its interval, or :data:`NA` where
    it was not measured."""
    rate = r.rates(judge, benign=benign).get(cls)
    return NA if rate is None else str(rate)


def redirect_note(results: Sequence[ConditionResult], judge: str | None = None) -> str | None:
    """Why redirect reads n/a for some of ``results`` under ``judge`` (default: each one's primary judge),
    or ``None`` when every one measured it."""
    reasons: dict[str, int] = {}
    for r in results:
        name = judge or r.judge
        why = r.redirect_unknown(name) if name in r.judges else None
        if why is not None:
            reasons[why] = reasons.get(why, 0) + 1
    if not reasons:
        return None
    parts = "; ".join(f"{why} ({n} of {len(results)} conditions)" for why, n in reasons.items())
    return (
        f"redirect: {NA}, not measured: {parts}. There a redirect (the requested form with content that "
        "works against the request or replaces it) counts as whatever the judge called it, mostly "
        "compliance, so compliance may include replies that do not serve the request."
    )


def quality_values(r: ConditionResult, judge: str | None = None) -> list[float | None]:
    """Per harmful prompt, the reply's quality when it counts, else ``None``.

    The rule, like with like: a reply counts when ``judge`` (default: the primary one) calls it compliant
    and it has at least :data:`MATCHED_WORDS` words, and its quality is the distinct 4-gram ratio of those
    first words (:func:`matched_quality`). Refusals (short, never repetitive), redirects and degenerate
    replies (counted by their own rates) are left out, and every counted reply is read at the same length,
    so a condition that complies more is not marked down for writing longer answers."""
    name = judge or r.judge
    return [matched_quality(x.text) if x.is_("compliance", name) else None for x in r.harmful]


#: The quality rule in a few words, for tables' captions and notes.
QUALITY_RULE = (
    f"quality: distinct word 4-grams / all 4-grams over the first {MATCHED_WORDS} words of each compliant "
    f"reply with at least {MATCHED_WORDS} words (n = how many), so conditions are compared like with like"
)


def metrics(r: ConditionResult) -> Metrics:
    """Bootstrap estimates of a condition's continuous metrics (seeded: the same result, the same
    intervals). Quality follows :func:`quality_values` (compliant replies at matched length); perplexity
    is over reply tokens of the harmful prompts; corpus perplexity over the capability corpus; KL over
    benign prompts."""
    nlls = [(x.nll, x.nll_tokens) for x in r.harmful if x.nll_tokens]
    return Metrics(
        quality=bootstrap(quality_values(r)),
        perplexity=bootstrap(nlls, statistic=perplexity_of),
        kl_first=bootstrap(r.kl_first),
        kl_mean=bootstrap(r.kl_mean),
        corpus_perplexity=bootstrap(r.corpus_nll, statistic=perplexity_of),
    )


_NONE = Estimate(math.nan, math.nan, math.nan, 0)


def differences(a: ConditionResult, b: ConditionResult) -> Metrics:
    """Each continuous metric of ``b`` minus ``a``'s, paired on what both conditions share (95% percentile
    bootstrap over resampled pairs, seeded): quality and reply perplexity per harmful prompt (quality on
    the prompts where both replies count by :func:`quality_values`), KL per benign prompt, corpus
    perplexity per passage. A metric whose items do not line up (other prompts, or one side not measured)
    reads as not measured (``n = 0``)."""
    same = [x.prompt for x in a.harmful] == [x.prompt for x in b.harmful]
    nll_a = [(x.nll, x.nll_tokens) for x in a.harmful]
    nll_b = [(x.nll, x.nll_tokens) for x in b.harmful]

    def lined_up(x: Sequence[object], y: Sequence[object]) -> bool:
        return bool(x) and len(x) == len(y)

    return Metrics(
        quality=paired_difference(quality_values(a), quality_values(b)) if same else _NONE,
        perplexity=paired_perplexity_difference(nll_a, nll_b) if same else _NONE,
        kl_first=paired_difference(a.kl_first, b.kl_first) if lined_up(a.kl_first, b.kl_first) else _NONE,
        kl_mean=paired_difference(a.kl_mean, b.kl_mean) if lined_up(a.kl_mean, b.kl_mean) else _NONE,
        corpus_perplexity=(
            paired_perplexity_difference(a.corpus_nll, b.corpus_nll)
            if lined_up(a.corpus_nll, b.corpus_nll)
            else _NONE
        ),
    )


def signed(e: Estimate, digits: int = 3) -> str:
    """A difference with its interval, signs shown (``+0.012 [-0.003, +0.027]``), and the pairs it rests
    on; ``-`` where it was not measured."""
    if not e.n or not math.isfinite(e.value):
        return "-"
    if not (math.isfinite(e.low) and math.isfinite(e.high)):
        return f"{e.value:+.{digits}f} (n={e.n})"
    return f"{e.value:+.{digits}f} [{e.low:+.{digits}f}, {e.high:+.{digits}f}] (n={e.n})"


DIFFERENCE_COLUMNS = ("comparison", "quality", "reply ppl", "KL first", "KL mean", "corpus ppl")


def difference_row(label: str, a: ConditionResult, b: ConditionResult) -> list[str]:
    """One row of :data:`DIFFERENCE_COLUMNS`: ``b`` minus ``a`` on every continuous metric."""
    d = differences(a, b)
    return [
        label,
        signed(d.quality),
        signed(d.perplexity, 2),
        signed(d.kl_first),
        signed(d.kl_mean),
        signed(d.corpus_perplexity, 2),
    ]


def _est(e: Estimate, digits: int = 3) -> str:
    return e.format(digits)


COLUMNS = (
    "condition",
    "neurons",
    "refusal % [95% CI]",
    "redirect %",
    "compliance %",
    "degenerate %",
    "quality",
    "reply ppl",
    "KL first",
    "KL mean",
    "benign refusal %",
    "corpus ppl",
    "tokens/s",
)


def rows(results: Sequence[ConditionResult]) -> list[list[str]]:
    """One row per condition (see :data:`COLUMNS`), rates under each result's primary judge."""
    out = []
    for r in results:
        m = metrics(r)
        out.append(
            [
                r.label,
                "-" if r.n_neurons is None else str(r.n_neurons),
                str(r.refusal),
                rate_cell(r, "redirect"),
                str(r.compliance),
                str(r.degenerate),
                _est(m.quality) + ("" if not m.quality.n else f" n={m.quality.n}"),
                _est(m.perplexity, 2),
                _est(m.kl_first),
                _est(m.kl_mean),
                "-" if r.benign_refusal is None else str(r.benign_refusal),
                _est(m.corpus_perplexity, 2),
                f"{r.tokens_per_s:.1f}",
            ]
        )
    return out


def judge_columns(judges: Sequence[str]) -> list[str]:
    return ["condition", *[f"{j}: refusal / redirect / compliance" for j in judges]]


def judge_rows(results: Sequence[ConditionResult]) -> list[list[str]]:
    """Each condition's refusal, redirect (:data:`NA` where not measured) and compliance under every judge
    that classified it."""
    out = []
    for r in results:
        cells = [
            " / ".join(rate_cell(r, c, j) for c in ("refusal", "redirect", "compliance")) for j in r.judges
        ]
        out.append([r.label, *cells])
    return out
