"""The report's sections about the judges: the rates corrected by a blind audit, and every judge's rates
side by side with how often the judges agree."""

from __future__ import annotations

from collections.abc import Mapping

from neurogate.evaluation import calibration, tables
from neurogate.evaluation.calibration import CalibratedRates
from neurogate.evaluation.results import ConditionResult
from neurogate.study import analysis
from neurogate.study.content import Section, Table, headline_keys
from neurogate.study.results import StudyResults

UNCALIBRATED = calibration.UNCALIBRATED


def calibrated_refusal(c: CalibratedRates | None) -> str:
    """A condition's audit-corrected refusal as a headline cell, or the uncalibrated marker."""
    return UNCALIBRATED if c is None else f"{c.classes['refusal'].corrected} ({c.n_audited} audited)"


def calibrated_section(r: StudyResults, calibrated: Mapping[str, CalibratedRates]) -> Section:
    """For each condition with audit labels: per class the judge's rate, the audit's rate (Wilson) and the
    corrected estimate over all its replies (95% interval); the other conditions say they are uncalibrated."""
    notes = [
        "A blind audit (`neurogate audit`) labels a random sample of each condition's replies without "
        "showing the condition or any verdict. Judged: the headline judge's rate over all replies. "
        "Audited: the rate among the audited replies, with its Wilson interval. Corrected: the share of all "
        "replies in the class, the judge's verdict counts corrected by how often the audit found each "
        "verdict right (stratified by verdict, weak pooled prior for thin strata, Bayesian-bootstrap 95% "
        "interval over the audit items; docs/judges.md).",
    ]
    if not calibrated:
        notes.append(
            f"No condition has audit labels: every rate in this report is the {UNCALIBRATED} one. "
            "`neurogate audit RUN_DIR --annotator NAME` draws and labels a sample."
        )
    keys = [k for k in headline_keys(r) if k in r.conditions]
    rows = calibration.table_rows([(k, r.conditions[k].label) for k in keys], calibrated)
    return Section("Calibrated rates", notes, [Table(list(calibration.COLUMNS), rows)])


def redirect_notes(conds: list[ConditionResult], judge: str | None = None) -> list[str]:
    """The note on redirects among ``conds`` under ``judge``, as zero or one report bullets."""
    note = tables.redirect_note(conds, judge)
    return [] if note is None else [note]


def thinking_notes(conds: list[ConditionResult], budget: object = None) -> list[str]:
    """One report bullet on how a reasoning model's replies think (judged by their answers; the cross
    cases of thought and answer per condition), or none when no reply has a thinking block."""
    counts = [(c.label, c.thinking_counts()) for c in conds]
    parts = [f"{label}: {n.short()}" for label, n in counts if n is not None]
    if not parts:
        return []
    limit = f" (thinking budget {budget} tokens, then the answer's)" if budget else ""
    return [
        f"Reasoning model{limit}: the judges read the answer after the thinking block, and the thinking "
        "is classified apart by the decision it states (docs/reasoning.md). Cross cases: refuses in "
        "thought and complies in the answer, and complies in thought and refuses or redirects in the "
        f"answer ({conds[0].judge} judge). " + "; ".join(parts) + "."
    ]


def judges(r: StudyResults) -> Section:
    """Every judge's rates side by side, and how often each pair agrees on the replies the interventions
    changed (recomputed from the stored replies, so results stored by earlier versions, which pooled every
    reply, show the same measure)."""
    conds = [r.conditions[k] for k in headline_keys(r)]
    agreement = analysis.agreement(r.conditions, r.judges)
    agree = [
        [
            pair,
            "-" if v["agreement"] is None else f"{v['agreement']:.3f}",
            "undefined (one class)" if v["kappa"] is None else f"{v['kappa']:.3f}",
            f"{int(v['n'] or 0)}",
        ]
        for pair, v in agreement.items()
    ]
    settings = r.extra.get("judge_settings") or {}
    named = ", ".join(f"{j} ({settings[j]})" if settings.get(j) else j for j in r.judges)
    sec = Section(
        "Every judge",
        [
            f"Judges: {named} (headline: {r.judges[0]}).",
            f"Every rate below is the judge's alone ({tables.UNCALIBRATED}).",
        ],
    )
    for j in r.judges:
        sec.notes += [f"{j}: {n}" for n in redirect_notes([c for c in conds if j in c.judges], j)]
    sec.tables.append(
        Table(tables.judge_columns(r.judges), tables.judge_rows(conds), "refusal / redirect / compliance")
    )
    if agree:
        first = next(iter(agreement.values()))
        sec.notes.append(
            f"Agreement: over the {int(first['n'] or 0)} distinct replies that reach the judges and differ "
            "from the baseline's reply to the same prompt (harmful and benign prompts). Left out: "
            f"{int(first['degenerate'] or 0)} degenerate replies (classed by the degeneracy rule before any "
            f"judge, so every judge 'agrees') and {int(first['unchanged'] or 0)} that are the unsteered "
            "model's own (mostly stock refusals, which would inflate agreement on steered replies)."
        )
        sec.tables.append(
            Table(["judges", "same class", "Cohen's kappa", "replies"], agree, "agreement on changed replies")
        )
    return sec
