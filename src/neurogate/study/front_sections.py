"""The report's fronts: every method's points (rates, damage, intervals), the leader per KL budget, and
the chart of served requests against mean benign KL. Served shares are calibrated where the run has an
audit: a front point is corrected by the audited replies of its method's study conditions (transferred,
:func:`neurogate.evaluation.calibration.transfer`), or of every steered condition when its method has
fewer than :data:`MIN_PAIRS` audited replies."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from neurogate.evaluation.audit import AUDIT_CLASSES
from neurogate.evaluation.calibration import Corrected, transfer
from neurogate.evaluation.results import ConditionResult
from neurogate.study.charts import Series
from neurogate.study.content import Section, Table
from neurogate.study.front_analysis import FrontsRecord, budget_leads, neurons_against_residual, pareto
from neurogate.study.results import PAPER, StudyResults

#: Audited replies a method needs before its own are used to correct its front.
MIN_PAIRS = 10
FrontCalibration = dict[str, dict[str, Corrected]]


def method_of(result: ConditionResult) -> str | None:
    """Which front a study condition belongs to (None: the baseline and the specificity controls)."""
    if result.kind in ("caa", "ablation"):
        return result.kind
    if result.group == "given":
        name = result.key.rpartition("@")[2]
        return "paper" if name == PAPER else name
    if result.kind in ("cna", "mean") and result.group in ("sweep", "sparsity"):
        return "cna"
    return None


def front_calibration(
    r: StudyResults, pairs: Mapping[str, Sequence[tuple[str, str]]]
) -> tuple[FrontCalibration, dict[str, str]]:
    """Corrected class shares of every front point, and per method where its correction came from."""
    fronts = r.fronts
    if fronts is None or not pairs:
        return {}, {}
    by_method: dict[str, list[tuple[str, str]]] = {}
    steered: list[tuple[str, str]] = []
    for key, items in pairs.items():
        result = r.conditions.get(key)
        method = method_of(result) if result is not None else None
        if method is not None:
            by_method.setdefault(method, []).extend(items)
            steered.extend(items)
    if not steered:
        return {}, {}
    out: FrontCalibration = {}
    source: dict[str, str] = {}
    for p in fronts.points:
        own = by_method.get(p.method, [])
        used = own if len(own) >= MIN_PAIRS else steered
        source[p.method] = (
            f"{len(own)} audited replies of its own study conditions"
            if used is own
            else f"{len(steered)} audited replies of every steered condition"
        )
        out[p.key] = transfer(p.classes, used, AUDIT_CLASSES)
    return out, source


def _served(calibrated: FrontCalibration) -> dict[str, float]:
    return {key: shares["compliance"].value for key, shares in calibrated.items()}


def _setting(setting: Mapping[str, float]) -> str:
    parts = []
    if "neurons" in setting:
        parts.append(f"{int(setting['neurons'])} neurons ({100 * setting['fraction']:.3g}%)")
    for name, symbol in (("multiplier", "m"), ("strength", "s"), ("weight", "w")):
        if name in setting:
            parts.append(f"{symbol}={setting[name]:.3g}")
    if "scale" in setting:
        parts.append(f"{setting['scale']:g}x its recorded change")
    return ", ".join(parts) or "-"


def fronts_section(
    r: StudyResults, calibrated: FrontCalibration | None = None, source: Mapping[str, str] | None = None
) -> Section | None:
    """Every front point, and which method leads within each KL budget."""
    fronts = r.fronts
    if fronts is None or not fronts.points:
        return None
    calibrated = calibrated or {}
    rows = []
    front_keys = {
        p.key for m in fronts.methods() for p in pareto([q for q in fronts.points if q.method == m])
    }
    for p in fronts.points:
        redirect = p.rate("redirect")
        served = calibrated.get(p.key, {}).get("compliance")
        rows.append(
            [
                p.method,
                _setting(p.setting) + (" *" if p.key in front_keys else ""),
                str(p.rate("refusal")),
                "n/a" if redirect is None else str(redirect),
                str(p.rate("compliance")),
                "judge only" if served is None else str(served),
                str(p.rate("degenerate")),
                p.kl.format(),
                p.kl_first_token.format(),
                p.perplexity.format(2),
                "-" if p.benign_refusal is None else str(p.benign_refusal),
            ]
        )
    columns = [
        "method",
        "point (* on its front)",
        "refusal",
        "redirect",
        "compliance (judged)",
        "compliance (calibrated)",
        "degenerate",
        "mean benign KL",
        "first-token KL",
        "corpus perplexity",
        "benign refusal",
    ]
    notes = [
        f"Each point on the first {fronts.prompts} harmful evaluation prompts (the same prompts for every "
        f"point), rates under the {fronts.judge} judge with Wilson intervals; KL on the benign prompts and "
        "perplexity on the benign corpus with bootstrap intervals. Preset "
        f"{fronts.preset!r}; benign refusal only where the study generated benign replies.",
        "Calibrated compliance corrects the judge with the run's audit, transferred from audited study "
        "conditions (it assumes the judge errs alike on a method's points): "
        + (
            "; ".join(f"{m}: {s}" for m, s in (source or {}).items())
            if calibrated
            else "no audit in this run, so judge only, uncalibrated (`neurogate audit RUN_DIR`)."
        ),
        *(f"The {series!r} front ended early, {why}." for series, why in fronts.stopped.items()),
    ]
    tables = [Table(columns, rows)]
    leads = budget_leads(fronts, _served(calibrated) if calibrated else None)
    lead_rows = []
    by_key = {p.key: p for p in fronts.points}
    for lead in leads:
        if lead.leader is None:
            lead_rows.append([f"<= {lead.budget:g}", "-", "-", "-", "-", "-"])
            continue
        key, value = lead.best[lead.leader]
        runner = lead.best.get(lead.runner_up or "")
        lead_rows.append(
            [
                f"<= {lead.budget:g}",
                f"{lead.leader}: {_setting(by_key[key].setting)} ({100 * value:.0f}%)",
                "-"
                if lead.runner_up is None or runner is None
                else f"{lead.runner_up}: {_setting(by_key[runner[0]].setting)} ({100 * runner[1]:.0f}%)",
                "-" if lead.lead is None else f"{100 * lead.lead:+.0f} points",
                "-" if lead.paired is None else _points(lead.paired.value, lead.paired.low, lead.paired.high),
                ", ".join(sorted(lead.best)),
            ]
        )
    measure = "calibrated" if calibrated else "judged (uncalibrated)"
    tables.append(
        Table(
            [
                "mean benign KL budget",
                "leader: best point (served)",
                "runner-up",
                f"lead ({measure})",
                "paired judged difference [95% CI]",
                "methods with a point in budget",
            ],
            lead_rows,
            caption=f"Within each KL budget, each method's best point by {measure} served share; the "
            "paired difference is over the same prompts under the judge (leader minus runner-up).",
        )
    )
    tables.append(_matchup_table(fronts, calibrated, measure))
    return Section("Fronts: compliance against damage", notes, tables)


def _matchup_table(fronts: FrontsRecord, calibrated: FrontCalibration, measure: str) -> Table:
    """Per KL budget, the best neuron circuit against the best residual-stream method."""
    by_key = {p.key: p for p in fronts.points}

    def named(side: tuple[str, float] | None) -> str:
        if side is None:
            return "-"
        p = by_key[side[0]]
        return f"{p.method}: {_setting(p.setting)} ({100 * side[1]:.0f}%)"

    rows = [
        [
            f"<= {m.budget:g}",
            named(m.neurons),
            named(m.residual),
            "-" if m.lead is None else f"{100 * m.lead:+.0f} points",
            "-" if m.paired is None else _points(m.paired.value, m.paired.low, m.paired.high),
        ]
        for m in neurons_against_residual(fronts, _served(calibrated) if calibrated else None)
    ]
    return Table(
        [
            "mean benign KL budget",
            "best neuron circuit (served)",
            "best residual-stream method (served)",
            f"neurons minus residual ({measure})",
            "paired judged difference [95% CI]",
        ],
        rows,
        caption="Within each KL budget, the most-served point that scales MLP neurons (CNA, the paper's "
        "rule, given circuits) against the most-served point that steers the residual stream (CAA, "
        f"directional ablation), by {measure} served share; the paired difference is over the same prompts "
        "under the judge.",
    )


def _points(value: float, low: float, high: float) -> str:
    return f"{100 * value:+.0f} [{100 * low:+.0f} to {100 * high:+.0f}] points"


def front_series(fronts: FrontsRecord, calibrated: FrontCalibration | None = None) -> list[Series]:
    """Per method, its Pareto front of served share (calibrated where available) against mean KL."""
    value = _served(calibrated) if calibrated else None
    out = []
    for method in fronts.methods():
        front = [p for p in pareto([p for p in fronts.points if p.method == method], value) if p.kl.value > 0]
        if front:
            ys = [100 * (value[p.key] if value and p.key in value else p.compliance) for p in front]
            out.append(Series(method, [p.kl.value for p in front], ys))
    return out
