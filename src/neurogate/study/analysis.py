"""The study's comparisons, computed from stored replies alone: each condition against the baseline on the
same prompts, each specificity control against the circuit, and how well the judges agree on the replies
the interventions changed."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from itertools import combinations

from neurogate.evaluation.paired import PairedRates, cohen_kappa, compare_rates
from neurogate.evaluation.results import ConditionResult, Reply
from neurogate.study.results import Control


def refused(result: ConditionResult, judge: str) -> list[bool]:
    """Per harmful prompt, whether ``judge`` found the reply not served (refusal or redirect)."""
    return result.declined(judge)


def paired_vs_baseline(
    results: Mapping[str, ConditionResult], judges: Sequence[str], margin: float
) -> dict[str, dict[str, PairedRates]]:
    """Every condition's replies not served (refusal or redirect) against the baseline's, per judge
    (McNemar, Newcombe, TOST margin)."""
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


def judged_changed(results: Mapping[str, ConditionResult]) -> tuple[list[Reply], int, int]:
    """The distinct (prompt, reply) pairs that reach the judges and differ from the baseline's reply to the
    same prompt, with how many distinct pairs were left out as degenerate and as the baseline's own reply.

    Degenerate replies get that class from the degeneracy rule under every judge, and a reply the
    intervention did not change (mostly the unsteered model's stock refusals) is one the judges already
    agree or disagree on in the baseline: pooled in, both would inflate agreement on steered replies."""
    base = results.get("baseline")
    unchanged = {(r.prompt, r.text) for r in (*base.harmful, *base.benign)} if base is not None else set()
    seen: dict[tuple[str, str], Reply] = {}
    degenerate: set[tuple[str, str]] = set()
    same: set[tuple[str, str]] = set()
    for result in results.values():
        for r in (*result.harmful, *result.benign):
            pair = (r.prompt, r.text)
            if pair in unchanged:
                same.add(pair)
            elif r.degenerate is not None or "degenerate" in r.classes.values():
                degenerate.add(pair)
            else:
                seen.setdefault(pair, r)
    return list(seen.values()), len(degenerate), len(same)


def agreement(
    results: Mapping[str, ConditionResult], judges: Sequence[str]
) -> dict[str, dict[str, float | None]]:
    """For each pair of judges, over the distinct replies that reach the judges and differ from the
    baseline's (:func:`judged_changed`; harmful and benign prompts): the share with the same class, Cohen's
    kappa (``None`` where it is undefined: one class under both judges) and the number of replies
    (``n``), with how many distinct replies were left out as degenerate (``degenerate``) and as the
    baseline's own (``unchanged``). ``scope`` is 1 (results stored by earlier versions pooled every reply
    and have no ``scope``)."""
    out: dict[str, dict[str, float | None]] = {}
    replies, n_degenerate, n_unchanged = judged_changed(results)
    for a, b in combinations(judges, 2):
        pairs = [(r.classes[a], r.classes[b]) for r in replies if a in r.classes and b in r.classes]
        same = sum(1 for x, y in pairs if x == y) / len(pairs) if pairs else None
        kappa = cohen_kappa([x for x, _ in pairs], [y for _, y in pairs]) if pairs else math.nan
        out[f"{a} / {b}"] = {
            "agreement": same,
            "kappa": None if math.isnan(kappa) else kappa,
            "n": float(len(pairs)),
            "degenerate": float(n_degenerate),
            "unchanged": float(n_unchanged),
            "scope": 1.0,
        }
    return out
