"""After the search: the chosen point checked once on the held-out test prompts (full-length replies, every
judge) beside the paper's circuit, the sparsity curve of the chosen rule, and the tuned circuit saved with
the settings that made it."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import optuna

from neurogate import settings
from neurogate.atomic import write_json_atomic
from neurogate.evaluation.engine import Evaluator
from neurogate.evaluation.paired import PairedRates, compare_rates, mcnemar_exact, paired_difference
from neurogate.evaluation.results import ConditionResult, ResultStore
from neurogate.tuning.front import exportable, front_rows
from neurogate.tuning.screen import SEED_ATTR, screening_summary
from neurogate.tuning.search import (
    Scores,
    Search,
    choose,
    feasible,
    objective_judge,
    pareto,
    point_of,
    ranked_feasible,
)
from neurogate.tuning.space import Point, paper_point

KIND = "neurogate.tune"
SCHEMA_VERSION = 1


@dataclass
class Trial:
    """One finished trial: its number, point and scores, whether it is on the Pareto front of the three
    objectives, and whether a LoRA adapter or GGUF fold can serve it (``exportable``; results stored
    before it was recorded read it off the point)."""

    number: int
    point: dict[str, Any]
    scores: dict[str, float]
    pareto: bool
    seconds: float
    exportable: bool | None = None

    def __post_init__(self) -> None:
        if self.exportable is None:
            self.exportable = exportable(self.point)


@dataclass
class TuneResults:
    """What ``neurogate tune`` found: every trial, the chosen point and the constraints it breaks (if
    any), its test-split results beside the paper's circuit, the sparsity curve of its rule, and the front of
    compliance against mean benign KL (``front``: one row per trial on it; empty in results stored before
    it was recorded, :func:`front_of` computes it from the trials)."""

    run_id: str
    config: dict[str, Any]
    baseline: dict[str, float]
    trials: list[Trial]
    chosen: dict[str, Any]
    broken: list[str]
    sparsity: list[dict[str, Any]]
    final: dict[str, ConditionResult]
    paired: dict[str, dict[str, PairedRates]]
    seconds: float
    schema_version: int = SCHEMA_VERSION
    kind: str = KIND
    extra: dict[str, Any] = field(default_factory=dict)
    front: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["final"] = {k: r.to_dict() for k, r in self.final.items()}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TuneResults:
        return cls(
            **{k: v for k, v in data.items() if k not in ("trials", "final", "paired")},
            trials=[Trial(**t) for t in data["trials"]],
            final={k: ConditionResult.from_dict(r) for k, r in data["final"].items()},
            paired={k: {j: PairedRates(**p) for j, p in v.items()} for k, v in data["paired"].items()},
        )

    @classmethod
    def load(cls, path: str | Path) -> TuneResults:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


def trials_of(study: optuna.Study) -> list[Trial]:
    front = {t.number for t in pareto(study)}
    out = []
    for t in study.trials:
        if t.state != optuna.trial.TrialState.COMPLETE:
            continue
        seconds = (
            (t.datetime_complete - t.datetime_start).total_seconds()
            if t.datetime_complete and t.datetime_start
            else 0.0
        )
        point = point_of(t)
        scores = t.user_attrs["scores"]
        out.append(Trial(t.number, point.to_dict(), scores, t.number in front, seconds, point.exportable))
    return out


def front_of(r: TuneResults) -> list[dict[str, Any]]:
    """The stored front of compliance against mean benign KL, or (results stored before it) the one the
    trials give."""
    return r.front or front_rows(r.trials)


def rule_key(point: Point) -> str:
    """A short digest of everything in ``point`` but its size: the key under which stored results of
    that rule are found again (results keyed by size alone would be reused for another rule). A flat
    profile (slope 0) is left out, so such a point keeps the key it had before profiles."""
    kept = {k: v for k, v in point.to_dict().items() if k != "fraction" and not (k == "slope" and v == 0)}
    return settings.digest(kept, 8)


def stored_name(prefix: str, point: Point) -> str:
    """The name ``point``'s stored result goes under: ``prefix``, its rule and its size."""
    return f"{prefix}-{rule_key(point)}-{point.fraction:.6g}"


def sparsity_curve(
    search: Search, point: Point, base: Scores, chosen: str | None = None
) -> list[dict[str, Any]]:
    """The chosen rule at shrinking sizes (on the tuning prompts, short replies): size, the cut in replies
    that do not serve the request (refusal, and redirect where the judge measured it) and whether every
    constraint holds. ``chosen`` names the stored trial of ``point`` itself, so the full
    size is read back instead of generated again."""
    cfg, n = search.config, search.lm.adapter.n_neurons
    rows = []
    for share in (1.0, 0.5, 0.3, 0.2, 0.1, 0.05, 0.02):
        fraction = point.fraction * share
        if fraction < 1 / n:
            break
        p = replace(point, fraction=fraction)
        name = chosen if chosen is not None and share == 1.0 else stored_name("size", p)
        scores = Scores.of(search.measure(name, p))
        cut = 1 - scores.not_served / base.not_served if base.not_served else 0.0
        rows.append(
            {
                "fraction": fraction,
                "neurons": scores.neurons,
                "refusal": scores.refusal,
                "redirect": scores.redirect,
                "cut": cut,
                "compliance": scores.compliance,
                "broken": feasible(scores, base, cfg),
            }
        )
    return rows


def confirm(
    search: Search, study: optuna.Study, base: Scores
) -> tuple[optuna.trial.FrozenTrial, list[str], list[dict[str, Any]]]:
    """Choose among the search's best trials on more prompts than it saw.

    The ``confirm_top`` most compliant trials inside every constraint (one per distinct point) are measured
    on the confirmation prompts (short replies, harmful prompts only: KL and benign refusal do not depend
    on them), and the one most compliant over the tuning and confirmation prompts together is chosen,
    among those whose degenerate share over both stays inside the limit (fewer neurons break ties).
    Returns the chosen trial, the constraints it breaks and one row per confirmed trial; without
    confirmation prompts, or when no trial meets every constraint, the search's own choice and no rows.
    """
    cfg = search.config
    best, broken = choose(study, base, cfg)
    if broken or not len(search.confirm) or cfg.confirm_top < 1:
        return best, broken, []
    candidates: dict[Point, optuna.trial.FrozenTrial] = {}
    for t in ranked_feasible(study, base, cfg):
        candidates.setdefault(point_of(t), t)
        if len(candidates) == cfg.confirm_top:
            break
    settings = replace(cfg.evaluation, max_new_tokens=cfg.search_tokens)
    # stored per confirmation set: another --n-confirm is other prompts, not a result to read back
    store = ResultStore(search.root / f"confirm-{search.confirm.sha256[:10]}")
    ev = Evaluator(search.lm, search.confirm.prompts, [], settings=settings, store=store)
    n_tune, n_more = len(search.harmful), len(search.confirm)
    rows = []
    served: dict[int, list[float]] = {}
    for point, t in candidates.items():
        search.emit("stage", name=f"confirmation: trial {t.number}")
        again = search.measure(stored_name("confirm", point), point, evaluator=ev)
        more = Scores.of(again)
        # per prompt, served or not, over the tuning prompts (read back from the trial's store) and these
        first = search.measure(f"trial-{t.number}", point)
        served[t.number] = _served(first) + _served(again)
        s = t.user_attrs["scores"]
        pooled = (s["compliance"] * n_tune + more.compliance * n_more) / (n_tune + n_more)
        degenerate = (s["degenerate"] * n_tune + more.degenerate * n_more) / (n_tune + n_more)
        rows.append(
            {
                "trial": t.number,
                "neurons": s["neurons"],
                "tuning": s["compliance"],
                "confirmation": more.compliance,
                "pooled": pooled,
                "degenerate": degenerate,
                "ok": degenerate <= cfg.max_degenerate,
                "seed": bool(t.user_attrs.get(SEED_ATTR)),
            }
        )
    kept = [r for r in rows if r["ok"]]
    if not kept:
        return best, broken, rows
    pick = pick_confirmed(kept, served)
    pick["chosen"] = True
    return next(t for t in candidates.values() if t.number == pick["trial"]), [], rows


def final_check(
    search: Search, point: Point
) -> tuple[dict[str, ConditionResult], dict[str, dict[str, PairedRates]]]:
    """Baseline, the chosen point and the paper's circuit on the test prompts with full-length replies."""
    cfg = search.config
    harmful, benign = search.final_harmful, search.final_benign
    settings = replace(cfg.evaluation, max_new_tokens=cfg.final_tokens, judges=cfg.final_judges)
    ev = Evaluator(
        search.lm,
        harmful.prompts,
        benign.prompts,
        settings=settings,
        store=ResultStore(search.root / "final"),
    )
    search.emit("stage", name="final check: baseline")
    out = {"baseline": ev.baseline()}
    for name, p in (
        ("tuned", point),
        ("paper", paper_point(search.lm.adapter.n_layers, cfg.cap, cfg.min_fraction)),
    ):
        search.emit("stage", name=f"final check: {name}")
        # stored under the point's own key: a resumed search that chooses another point measures it anew
        stored = stored_name("tuned", p) if name == "tuned" else name
        out[name] = search.measure(stored, p, evaluator=ev)
    paired = {
        name: {j: compare_rates(out["baseline"].declined(j), r.declined(j)) for j in r.judges}
        for name, r in out.items()
        if name != "baseline"
    }
    return out, paired


def objective_of(result: ConditionResult) -> dict[str, Any]:
    """Which judge the trials were scored under and whether it told redirects apart (for the report)."""
    judge = objective_judge(result)
    return {"judge": judge, "redirects": result.knows_redirect(judge)}


def finish(search: Search, study: optuna.Study, run_id: str, started: float) -> TuneResults:
    """Choose, check, save the tuned circuit (``tuned-circuit.json``) and the results (``tune.json``).
    ``started``: ``time.perf_counter()`` when this session began (its time is recorded with the results)."""
    base = search.baseline()
    best, broken, confirmed = confirm(search, study, base)
    point = point_of(best)
    circuit = search.circuit(point)
    # a profile's per-layer multipliers are in the neurons' weights, relative to this one
    circuit.method["intervention"] = {"kind": point.intervention, "multiplier": point.condition_multiplier}
    circuit.save(search.root / "tuned-circuit.json")
    curve = sparsity_curve(search, point, base, chosen=f"trial-{best.number}")
    final, paired = final_check(search, point)
    trials = trials_of(study)
    results = TuneResults(
        run_id=run_id,
        config=search.config.to_dict(),
        baseline=base.to_dict(),
        trials=trials,
        chosen={
            "trial": best.number,
            **point.to_dict(),
            "neurons": len(circuit),
            "exportable": point.exportable,
        },
        broken=broken,
        sparsity=curve,
        final=final,
        paired=paired,
        seconds=time.perf_counter() - started,
        extra={
            "final_prompts": {"harmful": len(search.final_harmful), "benign": len(search.final_benign)},
            "final_dropped": search.final_dropped,
            "confirmation": {"prompts": len(search.confirm), "trials": confirmed},
            "objective": objective_of(search.evaluator.baseline()),
            "screening": screening_summary(study),
        },
        front=front_rows(trials),
    )
    write_json_atomic(search.root / "tune.json", results.to_dict())
    return results


def pick_confirmed(rows: list[dict[str, Any]], served: dict[int, list[float]]) -> dict[str, Any]:
    """The confirmed row to choose: the most compliant over all the prompts (fewer neurons break ties).
    A seeded point stays the choice over the best point the search found only when it leads by more than
    the noise: on every prompt's served-or-not (``served[trial]``), the prompts only it serves outnumber
    those only the other serves with an exact McNemar p below 0.05. Its lead, with a paired 95% bootstrap
    interval and that p, is recorded on its row either way."""
    pick = max(rows, key=lambda r: (r["pooled"], -r["neurons"]))
    searched = [r for r in rows if not r.get("seed")]
    if pick.get("seed") and searched:
        other = max(searched, key=lambda r: (r["pooled"], -r["neurons"]))
        mine, theirs = served[pick["trial"]], served[other["trial"]]
        lead = paired_difference(theirs, mine)
        only_mine = sum(a > b for a, b in zip(mine, theirs, strict=True))
        only_theirs = sum(b > a for a, b in zip(mine, theirs, strict=True))
        p = mcnemar_exact(only_mine, only_theirs)
        pick["lead"] = {
            "over": other["trial"],
            "value": lead.value,
            "low": lead.low,
            "high": lead.high,
            "p": p,
        }
        if not (only_mine > only_theirs and p < 0.05):
            return other
    return pick


def _served(result: ConditionResult) -> list[float]:
    """Per harmful prompt, 1 where the reply serves the request under the trials' judge, else 0."""
    judge = objective_judge(result)
    return [1.0 if r.is_("compliance", judge) else 0.0 for r in result.harmful]
