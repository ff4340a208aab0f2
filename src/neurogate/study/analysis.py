"""The study's comparisons, computed from stored replies alone: each condition against the baseline on the
same prompts, each specificity control against the circuit, and how well the judges agree."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from itertools import combinations

from neurogate.evaluation.paired import PairedRates, cohen_kappa, compare_rates
from neurogate.evaluation.results import ConditionResult
from neurogate.study.results import Control


def refused(result: ConditionResult, judge: str) -> list[bool]:
    """Per harmful prompt, whether ``judge`` called the reply a refusal."""
    return [r.is_("refusal", judge) for r in result.harmful]


def paired_vs_baseline(
    results: Mapping[str, ConditionResult], judges: Sequence[str], margin: float
) -> dict[str, dict[str, PairedRates]]:
    """Every condition's refusal against the baseline's, per judge (McNemar, Newcombe, TOST margin)."""
    base = results["baseline"]
    out: dict[str, dict[str, PairedRates]] = {}
    for key, result in results.items():
        if key == "baseline" or len(result.harmful) != len(base.harmful):
            continue
        out[key] = {j: compare_rates(refused(base, j), refused(result, j), margin=margin) for j in judges}
    return out


def compare(reference: ConditionResult, other: ConditionResult, judge: str, margin: float) -> PairedRates:
    """``other``'s refusal against ``reference``'s on the same prompts (``diff`` = other - reference)."""
    return compare_rates(refused(reference, judge), refused(other, judge), margin=margin)


def controls(
    results: Mapping[str, ConditionResult],
    circuit_key: str,
    named: Sequence[tuple[str, str, str]],
    judge: str,
    margin: float,
) -> list[Control]:
    """For each ``(key, type, name)`` control: its refusal against the circuit's and the baseline's."""
    circuit, base = results[circuit_key], results["baseline"]
    return [
        Control(
            key,
            kind,
            name,
            compare(circuit, results[key], judge, margin),
            compare(base, results[key], judge, margin),
        )
        for key, kind, name in named
        if key in results
    ]


def agreement(
    results: Mapping[str, ConditionResult], judges: Sequence[str]
) -> dict[str, dict[str, float | None]]:
    """For each pair of judges, over every reply of the study (harmful and benign): the share of replies
    with the same class, Cohen's kappa (``None`` where it is undefined: one class under both judges), and
    the number of replies."""
    out: dict[str, dict[str, float | None]] = {}
    replies = [r for result in results.values() for r in (*result.harmful, *result.benign)]
    for a, b in combinations(judges, 2):
        pairs = [(r.classes[a], r.classes[b]) for r in replies if a in r.classes and b in r.classes]
        if not pairs:
            continue
        la, lb = [x for x, _ in pairs], [y for _, y in pairs]
        same = sum(1 for x, y in pairs if x == y) / len(pairs)
        kappa = cohen_kappa(la, lb)
        out[f"{a} / {b}"] = {
            "agreement": same,
            "kappa": None if math.isnan(kappa) else kappa,
            "n": float(len(pairs)),
        }
    return out
