"""A condition's numbers as table rows: headline rates under the primary judge with Wilson intervals,
continuous metrics with bootstrap intervals, and each judge's rates side by side. Shared by the CLI and the
report, so both print the same numbers the same way."""

from __future__ import annotations

from collections.abc import Sequence

from neurogate.evaluation.metrics import perplexity_of
from neurogate.evaluation.paired import Estimate, bootstrap
from neurogate.evaluation.results import ConditionResult, Metrics


def metrics(r: ConditionResult) -> Metrics:
    """Bootstrap estimates of a condition's continuous metrics (seeded: the same result, the same
    intervals). Perplexity is over reply tokens of the harmful prompts; corpus perplexity over the
    capability corpus; KL over benign prompts."""
    nlls = [(x.nll, x.nll_tokens) for x in r.harmful if x.nll_tokens]
    return Metrics(
        quality=bootstrap([x.quality for x in r.harmful]),
        perplexity=bootstrap(nlls, statistic=perplexity_of),
        kl_first=bootstrap(r.kl_first),
        kl_mean=bootstrap(r.kl_mean),
        corpus_perplexity=bootstrap(r.corpus_nll, statistic=perplexity_of),
    )


def _est(e: Estimate, digits: int = 3) -> str:
    return e.format(digits)


COLUMNS = (
    "condition",
    "neurons",
    "refusal % [95% CI]",
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
                str(r.compliance),
                str(r.degenerate),
                _est(m.quality),
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
    return ["condition", *[f"{j}: refusal / compliance" for j in judges]]


def judge_rows(results: Sequence[ConditionResult]) -> list[list[str]]:
    """Each condition's refusal and compliance under every judge that classified it."""
    out = []
    for r in results:
        cells = [f"{r.rates(j)['refusal']} / {r.rates(j)['compliance']}" for j in r.judges]
        out.append([r.label, *cells])
    return out
