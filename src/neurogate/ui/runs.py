"""Runs as JSON for the page, built on the typed results: a study's
(:class:`~neurogate.study.results.StudyResults`: the conditions table, refusal against strength per method
with intervals, the sparsity curve) and a tuning search's (:class:`~neurogate.tuning.TuneResults`: every
trial against the Pareto front, and the held-out check), each with the replies behind every rate."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from neurogate.errors import NeurogateError
from neurogate.evaluation.paired import Estimate, PairedRates
from neurogate.evaluation.replies import CLASSES
from neurogate.evaluation.results import ConditionResult
from neurogate.evaluation.statistics import Rate
from neurogate.evaluation.tables import judged_by, metrics
from neurogate.steering.registry import get_kind
from neurogate.study.results import StudyResults
from neurogate.tuning import TuneResults
from neurogate.tuning.report import objective
from neurogate.ui.circuits import pick

RESULTS = "results.json"
TUNE = "tune.json"
SETS = ("harmful", "benign")


def find_runs(root: Path) -> list[Path]:
    """Run folders (a study's ``results.json`` or a search's ``tune.json``) under ``root``: itself and its
    children, newest first."""

    def is_run(p: Path) -> bool:
        return (p / RESULTS).is_file() or (p / TUNE).is_file()

    found = [root] if is_run(root) else []
    found += [p for p in root.iterdir() if p.is_dir() and is_run(p)] if root.is_dir() else []
    return sorted(found, key=lambda p: max(f.stat().st_mtime for f in p.iterdir()), reverse=True)


def run_entry(folder: Path, results: StudyResults | TuneResults) -> dict[str, Any]:
    """One line of the runs list."""
    if isinstance(results, TuneResults):
        model, created, n = str(results.config.get("model", "?")), "", len(results.final)
    else:
        model, created, n = results.model.get("spec", "?"), results.created, len(results.conditions)
    return {
        "name": folder.name,
        "kind": "tune" if isinstance(results, TuneResults) else "study",
        "run_id": results.run_id,
        "model": model,
        "created": created,
        "n_conditions": n,
    }


def _rate(rate: Rate | None) -> dict[str, Any] | None:
    if rate is None:
        return None
    return {"k": rate.k, "n": rate.n, "value": rate.value, "low": rate.low, "high": rate.high}


def _estimate(e: Estimate) -> dict[str, Any] | None:
    """A bootstrap estimate, or ``None`` when nothing was measured (or it is not finite)."""
    if not e.n or not all(math.isfinite(x) for x in (e.value, e.low, e.high)):
        return None
    return {"value": e.value, "low": e.low, "high": e.high, "n": e.n}


def _paired(p: PairedRates | None) -> dict[str, Any] | None:
    if p is None:
        return None
    return {
        "diff": p.diff,
        "low": p.low,
        "high": p.high,
        "p_value": p.p_value,
        "verdict": p.verdict,
        "n": p.n,
    }


def condition_row(cond: ConditionResult, paired: PairedRates | None = None) -> dict[str, Any]:
    """One row of the conditions table: each class's rate on each prompt set under the primary judge
    (every one links to its replies; redirect only where the judge measured it, else ``redirect_unknown``
    says why), the continuous metrics with bootstrap intervals, and the paired not-served difference from the
    baseline."""
    m = metrics(cond)
    return {
        **pick(cond, ("key", "label", "kind", "scale", "value", "group", "n_neurons", "judges")),
        "judge": cond.judge,
        "judged": judged_by(cond.judge),
        "redirect_unknown": cond.redirect_unknown(),
        "rates": {
            "harmful": {c: _rate(r) for c, r in cond.rates().items()},
            "benign": {c: _rate(r) for c, r in cond.rates(benign=True).items()} if cond.benign else {},
        },
        "vs_baseline": _paired(paired),
        **{name: _estimate(getattr(m, name)) for name in ("quality", "perplexity", "kl_first", "kl_mean")},
        "tokens_per_s": cond.tokens_per_s if math.isfinite(cond.tokens_per_s) else None,
    }


def distinct_labels(conditions: dict[str, ConditionResult]) -> dict[str, str]:
    """Each condition's label, made unique within the run: a label two conditions share (``cna m=0``
    on the main circuit and on a sparsity prefix) gets its neuron count, then its group, then its key."""
    out = {k: c.label for k, c in conditions.items()}
    for extra in (
        lambda c: f"{c.n_neurons} neurons" if c.n_neurons is not None else "",
        lambda c: c.group,
        lambda c: c.key,
    ):
        seen: dict[str, list[str]] = {}
        for k, label in out.items():
            seen.setdefault(label, []).append(k)
        for keys in seen.values():
            if len(keys) > 1:
                for k in keys:
                    more = extra(conditions[k])
                    out[k] = f"{out[k]} · {more}" if more else out[k]
    return out


def direction_detail(cond: ConditionResult) -> str:
    """For a residual method (CAA, ablation), where it steers: the layer whose direction it uses; empty
    for the others."""
    layer = cond.intervention.get("layer")
    if cond.kind == "baseline" or get_kind(cond.kind).source != "directions" or layer is None:
        return ""
    return f"added after layer {layer}" if cond.kind == "caa" else f"layer {layer}'s direction, every site"


def directions_note(results: StudyResults) -> str:
    """Which residual direction the run's CAA and ablation rows use: the layer, how it was chosen and the
    prompt sets it is the mean difference of; empty when the run has neither."""
    layers = {c.kind: c.intervention["layer"] for c in results.conditions.values() if direction_detail(c)}
    if not layers:
        return ""
    sets = results.prompts or {}
    pos, neg = sets.get("positive", {}), sets.get("negative", {})
    source = (
        f"the mean residual stream on {pos['name']} ({pos.get('count', '?')} prompts) minus that on "
        f"{neg['name']} ({neg.get('count', '?')} prompts)"
        if pos.get("name") and neg.get("name")
        else "the mean residual stream on the positive prompts minus that on the negative ones"
    )
    if results.caa_selection is not None or results.direction_selection is not None:
        source += "; one chosen by effect is read on their training split, the validation prompts held out"

    def how(selection: object) -> str:
        if selection is not None:
            return "chosen by its effect on refusal under KL and benign-refusal bounds"
        return "the layer whose direction best separates held-out prompts"

    parts = []
    if "caa" in layers:
        parts.append(
            f"CAA subtracts s times the direction after layer {layers['caa']} ({how(results.caa_selection)})"
        )
    if "ablation" in layers:
        parts.append(
            f"ablation removes s times the unit direction of layer {layers['ablation']} "
            f"({how(results.direction_selection)}) at every residual site"
        )
    return f"{'; '.join(parts)}. Each direction is {source}."


def _relabel(view: dict[str, Any], labels: dict[str, str]) -> dict[str, Any]:
    """Put the run's distinct labels on its table rows and chart points."""
    points = [p for c in view["curves"] for p in c["points"]] + view["sparsity"]
    for item in [*view["conditions"], *points]:
        item["label"] = labels.get(item["key"], item["label"])
    return view


def _point(cond: ConditionResult, x: float) -> dict[str, Any]:
    return {"x": x, "key": cond.key, "label": cond.label, "rate": _rate(cond.refusal)}


def strength_curves(results: StudyResults) -> list[dict[str, Any]]:
    """Refusal against the value on its scale, one curve per method of the sweep; the baseline is each
    curve's point at its scale's neutral value (m = 1, s = 0), where nothing changes."""
    baseline = results.conditions.get("baseline")
    curves: dict[str, dict[str, Any]] = {}
    for key in results.sweep:
        cond = results.conditions.get(key)
        if cond is None or cond.kind == "baseline" or cond.value is None:
            continue
        scale = get_kind(cond.kind).scale
        curve = curves.setdefault(
            cond.kind, {"kind": cond.kind, "scale": scale.name, "symbol": scale.symbol, "points": []}
        )
        curve["points"].append(_point(cond, cond.value))
    for curve in curves.values():
        neutral = get_kind(curve["kind"]).scale.neutral
        if baseline is not None and all(p["x"] != neutral for p in curve["points"]):
            curve["points"].append({**_point(baseline, neutral), "baseline": True})
        curve["points"].sort(key=lambda p: p["x"])
    return list(curves.values())


def sparsity_curve(results: StudyResults) -> list[dict[str, Any]]:
    """Refusal against circuit size (the multiplier of every point is in its label)."""
    points = []
    for p in results.sparsity:
        cond = results.conditions.get(p.key)
        if cond is not None:
            points.append(_point(cond, p.size))
    return sorted(points, key=lambda p: p["x"])


def tune_view(results: TuneResults, name: str) -> dict[str, Any]:
    """A tuning search: every trial's compliance against its benign KL with the Pareto front marked, and
    the held-out check of the chosen point beside the paper's circuit (its rates link to the replies)."""
    points = [
        {
            "label": f"trial {t.number}: {t.point.get('intervention', '?')} "
            f"m={t.point.get('multiplier', 0):.2f}, {int(t.scores.get('neurons', 0))} neurons",
            "x": t.scores["kl"],
            "y": t.scores["compliance"],
            "front": t.pareto,
        }
        for t in results.trials
        if math.isfinite(t.scores.get("kl", math.nan)) and math.isfinite(t.scores.get("compliance", math.nan))
    ]
    conditions = results.final
    view = {
        "kind": "tune",
        "name": name,
        "run_id": results.run_id,
        "created": "",
        "seconds": results.seconds,
        "model": {"spec": results.config.get("model", "?")},
        "circuit": {"summary": "chosen: " + ", ".join(f"{k} {v}" for k, v in results.chosen.items())},
        "judges": next(iter(conditions.values())).judges if conditions else [],
        "conditions": [
            {**condition_row(r, results.paired.get(k, {}).get(r.judge)), "key": k}
            for k, r in conditions.items()
        ],
        "curves": [],
        "sparsity": [],
        "controls": [],
        "pareto": {
            "objectives": {"x": "benign KL", "y": "compliance"},
            "judged": judged_by(objective(results)[0]),
            "points": points,
        },
    }
    return _relabel(view, distinct_labels(conditions))


def run_view(results: StudyResults, name: str) -> dict[str, Any]:
    """The whole page of a study run."""
    c = results.circuit
    view = {
        "kind": "study",
        "name": name,
        "run_id": results.run_id,
        "created": results.created,
        "seconds": results.seconds,
        "model": results.model,
        "prompts": results.prompts,
        "circuit": {
            "n_neurons": c.n_neurons,
            "fraction": c.fraction,
            "late_share": c.late_share,
            "per_layer": {str(k): v for k, v in c.per_layer.items()},
            "summary": c.summary,
        },
        "directions": results.directions,
        "directions_note": directions_note(results),
        "judges": results.judges,
        "conditions": [
            {
                **condition_row(r, results.paired.get(k, {}).get(r.judge)),
                "key": k,
                "detail": direction_detail(r),
            }
            for k, r in results.conditions.items()
        ],
        "curves": strength_curves(results),
        "sparsity": sparsity_curve(results),
        "controls": [
            {
                "key": c.key,
                "type": c.type,
                "name": c.name,
                "vs_circuit": _paired(c.vs_circuit),
                "vs_baseline": _paired(c.vs_baseline),
            }
            for c in results.controls
        ],
        "pareto": None,
    }
    return _relabel(view, distinct_labels(results.conditions))


def replies_view(
    conditions: dict[str, ConditionResult],
    key: str,
    which: str,
    cls: str | None = None,
    judge: str | None = None,
) -> dict[str, Any]:
    """Every reply of one condition on one prompt set (``harmful`` or ``benign``) with its class under
    each judge; with ``cls``, each row says whether ``judge`` (default: the primary one) counts it in that
    class, so ``k`` equals the rate's own count."""
    cond = conditions.get(key)
    if cond is None:
        raise NeurogateError(f"this run has no condition {key!r}")
    if which not in SETS:
        raise NeurogateError(f"the prompt set must be one of {', '.join(SETS)}, not {which!r}")
    judge = judge or cond.judge
    if judge not in cond.judges:
        raise NeurogateError(f"condition {key!r} was judged by {', '.join(cond.judges)}, not {judge!r}")
    if cls is not None and cls not in CLASSES:
        raise NeurogateError(f"the class must be one of {', '.join(CLASSES)}, not {cls!r}")
    if cls == "redirect" and (why := cond.redirect_unknown(judge)) is not None:
        raise NeurogateError(f"condition {key!r} has no redirect count under the {judge} judge: {why}")
    rows = [
        {
            "i": i,
            "prompt": reply.prompt,
            "text": reply.text,
            "class": reply.classes.get(judge),
            "classes": reply.classes,
            "degenerate": reply.degenerate,
            "finished": reply.finished,
            "counted": cls is not None and reply.is_(cls, judge),  # type: ignore[arg-type]
        }
        for i, reply in enumerate(cond.harmful if which == "harmful" else cond.benign)
    ]
    return {
        "key": key,
        "label": distinct_labels(conditions)[key],
        "set": which,
        "cls": cls,
        "judge": judge,
        "judges": cond.judges,
        "k": sum(r["counted"] for r in rows),
        "n": len(rows),
        "replies": rows,
    }
