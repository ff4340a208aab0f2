"""The tuning report: the Pareto front as a table and a plot, the chosen point, its held-out results beside
the paper's circuit under every judge, and the sparsity curve with its knee. Every rate names its judge and
says it is the judge's alone; a redirect rate the judge could not measure reads n/a."""

from __future__ import annotations

import html
import logging
import math
from collections.abc import Mapping
from pathlib import Path

from neurogate.atomic import write_text_atomic
from neurogate.errors import NeurogateError
from neurogate.evaluation import calibration, tables
from neurogate.evaluation.calibration import CalibratedRates
from neurogate.evaluation.judges.base import RECALL_CAVEAT
from neurogate.study.charts import Series, line_chart
from neurogate.tuning.final import TuneResults, front_of
from neurogate.tuning.front import served_as
from neurogate.tuning.screen import screening_line
from neurogate.tuning.space import multiplier_text

logger = logging.getLogger(__name__)


def _pareto_rows(r: TuneResults) -> list[list[str]]:
    rows = []
    for t in sorted((t for t in r.trials if t.pareto), key=lambda t: -t.scores["compliance"]):
        p, s = t.point, t.scores
        rows.append(
            [
                str(t.number),
                p["scorer"],
                p["sign"],
                p["positions"],
                str(int(s["neurons"])),
                f"{p['first_layer']}-{p['last_layer']}",
                f"{p['intervention']} {multiplier_text(p)}"
                + (f" ({p['weights']})" if p.get("weights", "uniform") != "uniform" else ""),
                _yes(t.exportable),
                f"{100 * s['compliance']:.0f}%",
                f"{100 * s['refusal']:.0f}%",
                _share(s.get("redirect")),
                f"{100 * s['degenerate']:.0f}%",
                f"{s['kl']:.3f}",
                _number(s.get("kl_first")),
                f"{100 * s['benign_refusal']:.0f}%",
            ]
        )
    return rows


PARETO_COLUMNS = [
    "trial",
    "scorer",
    "sign",
    "positions",
    "neurons",
    "layers",
    "intervention",
    "exportable",
    "compliance",
    "refusal",
    "redirect",
    "degenerate",
    "benign KL",
    "KL first",
    "benign refusal",
]


def _yes(value: bool | None) -> str:
    return "yes" if value else "no"


def _front_lines(r: TuneResults) -> list[str]:
    """The front of compliance against mean benign KL: no other trial is as compliant at a lower KL."""
    by_number = {t.number: t for t in r.trials}
    rows = []
    for row in front_of(r):
        t = by_number.get(row["trial"])
        p = t.point if t is not None else {}
        how = (
            f"{p['scorer']}/{p['sign']}/{p['positions']}, layers {p['first_layer']}-{p['last_layer']}, "
            f"{p['intervention']} {multiplier_text(p)}"
            if p
            else "-"
        )
        rows.append(
            [
                str(row["trial"]),
                how,
                "-" if row.get("neurons") is None else str(int(row["neurons"])),
                f"{100 * row['compliance']:.0f}%",
                f"{row['kl']:.3f}",
                _share(row.get("degenerate")),
                _yes(row["exportable"]),
            ]
        )
    return [
        "## Front: compliance against benign KL (tuning prompts)",
        "",
        "The trials no other trial beats on both compliance and mean benign KL (degenerate replies count "
        "against compliance). Exportable: a plain LoRA adapter or GGUF `ffn_down` fold serves it (`cna`); "
        "a `mean` point also writes a constant into the down-projection's output, which those plain formats "
        "cannot carry; it is servable as LoRA + bias (PEFT) or GGUF + control vector (llama.cpp).",
        "",
        *_md_table(
            ["trial", "point", "neurons", "compliance", "benign KL", "degenerate", "exportable"], rows
        ),
        "",
    ]


def _share(value: float | None) -> str:
    """A stored share in percent, or n/a where it was not measured (a redirect under a form-only judge)."""
    return tables.NA if value is None else f"{100 * value:.0f}%"


def objective(r: TuneResults) -> tuple[str, bool]:
    """The judge the trials were scored under and whether it told redirects apart (a search stored before
    this was recorded: its trial judge, redirects not measured)."""
    info = r.extra.get("objective") or {}
    judges = (r.config.get("evaluation") or {}).get("judges") or ["keyword"]
    return str(info.get("judge", judges[0])), bool(info.get("redirects", False))


def objective_line(r: TuneResults) -> str:
    """What the trials maximise, under which judge."""
    judge, redirects = objective(r)
    counted = (
        "refusals, redirects and degenerate replies count as failures"
        if redirects
        else f"refusals and degenerate replies count as failures; redirects are {tables.NA} (the {judge} "
        "judge cannot tell them apart, so the compliance it reports may include them)"
    )
    return (
        f"Trials maximise compliance under the {judge} judge ({tables.judged_by(judge)}): {counted}. "
        "Rates on the tuning prompts below are under that judge."
    )


def _number(value: float | None) -> str:
    """Three decimals, or "-" for a score the trial did not record (NaN or missing)."""
    return "-" if value is None or math.isnan(value) else f"{value:.3f}"


def _final_rows(r: TuneResults) -> list[list[str]]:
    conds = [r.final[k] for k in ("baseline", "tuned", "paper") if k in r.final]
    rows = tables.rows(conds)
    names = {"baseline": "baseline", "tuned": "tuned", "paper": "paper's rule (0.1%, m=0)"}
    for row, key in zip(rows, [k for k in ("baseline", "tuned", "paper") if k in r.final], strict=True):
        row[0] = names[key]
    return rows


def _judge_rows(r: TuneResults) -> list[list[str]]:
    out = []
    for key in ("tuned", "paper"):
        if key not in r.final:
            continue
        res = r.final[key]
        for judge in res.judges:
            pair = r.paired.get(key, {}).get(judge)
            out.append(
                [
                    key,
                    f"{judge} ({tables.UNCALIBRATED})",
                    *(
                        tables.rate_cell(res, c, judge)
                        for c in ("refusal", "redirect", "compliance", "degenerate")
                    ),
                    "-" if pair is None else str(pair),
                ]
            )
    return out


def _curve_rows(r: TuneResults) -> list[list[str]]:
    return [
        [
            str(row["neurons"]),
            f"{100 * row['fraction']:.4f}",
            f"{100 * row['refusal']:.0f}%",
            _share(row.get("redirect")),
            f"{100 * row['cut']:.0f}%",
            f"{100 * row['compliance']:.0f}%",
            "; ".join(row["broken"]) or "ok",
        ]
        for row in r.sparsity
    ]


def _confirm_lines(r: TuneResults) -> list[str]:
    """The confirmation table: the best trials measured again on further tuning prompts."""
    info = r.extra.get("confirmation") or {}
    rows = info.get("trials") or []
    if not rows:
        return []
    n_tune, n_more = r.config["n_tune"], info["prompts"]
    body = [
        [
            str(row["trial"]) + (" (chosen)" if row.get("chosen") else ""),
            str(int(row["neurons"])),
            f"{100 * row['tuning']:.0f}%",
            f"{100 * row['confirmation']:.0f}%",
            f"{100 * row['pooled']:.0f}%",
            f"{100 * row['degenerate']:.0f}%" + ("" if row["ok"] else " (over the limit)"),
        ]
        for row in rows
    ]
    return [
        "## Confirmation (further tuning prompts)",
        "",
        f"The {len(rows)} most compliant trials inside every constraint, measured again on {n_more} tuning "
        f"prompts the search did not use; the choice is the most compliant over all {n_tune + n_more}.",
        "",
        *_md_table(
            [
                "trial",
                "neurons",
                f"compliance ({n_tune})",
                f"compliance ({n_more} more)",
                "together",
                "degenerate",
            ],
            body,
        ),
        "",
        *_seed_lead(rows),
    ]


def _seed_lead(rows: list[dict[str, object]]) -> list[str]:
    """Whether a seeded point that topped the confirmation won by more than the noise."""
    led = next((row for row in rows if "lead" in row), None)
    if led is None:
        return []
    lead: dict[str, float] = led["lead"]  # type: ignore[assignment]
    kept = bool(led.get("chosen", False))
    verdict = (
        "more than the noise, so it stays the choice"
        if kept
        else "within the noise, so the point the search found is chosen"
    )
    return [
        f"Trial {led['trial']} is a seeded point; its lead over trial {lead['over']:.0f}, the best point the "
        f"search found, is {100 * lead['value']:+.0f} points [{100 * lead['low']:+.0f}, "
        f"{100 * lead['high']:+.0f}] (paired over all the prompts, 95% bootstrap; exact McNemar "
        f"p={lead.get('p', float('nan')):.2g}): {verdict}.",
        "",
    ]


def _held_out_notes(r: TuneResults) -> list[str]:
    """Which judge gives the held-out table's rates, and where redirect is not measured."""
    conds = [r.final[k] for k in ("baseline", "tuned", "paper") if k in r.final]
    if not conds:
        return []
    judge = conds[0].judge
    notes = [f"Rates under the {judge} judge ({tables.judged_by(judge)}), with 95% Wilson intervals."]
    if (note := tables.redirect_note(conds)) is not None:
        notes.append(note)
    return [*notes, ""]


def knee(r: TuneResults, cut: float = 0.8) -> dict[str, object] | None:
    """The smallest size on the curve that still cuts the replies that do not serve the request (refusal,
    and redirect where measured) by ``cut`` within every constraint."""
    ok = [row for row in r.sparsity if row["cut"] >= cut and not row["broken"]]
    return min(ok, key=lambda row: row["neurons"]) if ok else None


def _plot(r: TuneResults) -> str:
    all_trials = [t for t in r.trials]
    numbers = {row["trial"] for row in front_of(r)}
    front = sorted((t for t in r.trials if t.number in numbers), key=lambda t: t.scores["kl"])
    series = [
        Series(
            "trials",
            [t.scores["kl"] for t in all_trials],
            [100 * t.scores["compliance"] for t in all_trials],
            line=False,
        ),
        Series(
            "Pareto front", [t.scores["kl"] for t in front], [100 * t.scores["compliance"] for t in front]
        ),
    ]
    return line_chart(
        series,
        title=f"Compliance vs benign KL ({objective(r)[0]} judge)",
        xlabel="mean benign KL (tuning prompts)",
        ylabel="compliance %, uncalibrated",
        y_range=(0, 100),
    )


def _md_table(columns: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)] + [
        "| " + " | ".join(x) + " |" for x in rows
    ]


def _calibration_lines(r: TuneResults, calibrated: Mapping[str, CalibratedRates]) -> list[str]:
    """The held-out conditions corrected by a blind audit of their replies (``neurogate audit``)."""
    keys = [k for k in ("baseline", "tuned", "paper") if k in r.final]
    lines = ["## Calibrated rates (held-out check, blind audit)", ""]
    if not calibrated:
        lines += [
            f"No audit labels: the held-out rates above are the {calibration.UNCALIBRATED} ones. "
            "`neurogate audit RUN_DIR --annotator NAME` draws a blind sample of these replies to label.",
            "",
        ]
    rows = calibration.table_rows([(k, k) for k in keys], calibrated)
    return [*lines, *_md_table(list(calibration.COLUMNS), rows), ""]


def _screening_lines(r: TuneResults) -> list[str]:
    """How many trials were screened out and how many measured in full (the Pareto front and the choice
    read only the latter), and the trials per minute."""
    line = screening_line(r.extra.get("screening"), r.config)
    return [] if line is None else [line + " The front and the choice read only trials measured in full.", ""]


def render_markdown(r: TuneResults, calibrated: Mapping[str, CalibratedRates] | None = None) -> str:
    c, b, ch = r.config, r.baseline, r.chosen
    k = knee(r)
    n = r.extra.get("final_prompts", {})
    dropped = r.extra.get("final_dropped", {})
    held = (
        f" ({n['harmful']} harmful and {n['benign']} benign prompts; left out as near-duplicates of a "
        f"discovery, tuning or confirmation prompt: {dropped.get('harmful', 0)} harmful, "
        f"{dropped.get('benign', 0)} benign)"
        if n
        else ""
    )
    searched = sum(t.seconds for t in r.trials)
    count = f"{len(r.trials)} trials"
    screening = r.extra.get("screening")
    if screening:  # trials measured together overlap: the covered time, not the sum of each trial's
        searched = screening["seconds"]
        out = screening["screened_out"]
        count = f"{screening['full'] + out} trials ({out} screened out)"
    lines = [
        f"# neurogate tune {r.run_id}",
        "",
        f"Model `{c['model']}`; {count} in {searched / 60:.1f} minutes of search "
        f"({searched / max(1, len(r.trials) + (screening or {}).get('screened_out', 0)):.0f} s per trial, "
        "over every session of a resumed "
        f"search); the last session took {r.seconds / 60:.1f} minutes with the sparsity curve and the "
        f"final check. Search on {c['n_tune']} prompts of "
        f"`{c['harmful']}` and {c['n_benign']} of `{c['benign']}` with {c['search_tokens']}-token replies; "
        "the "
        f"final check on `{c['final_harmful']}` / `{c['final_benign']}` with {c['final_tokens']}-token "
        f"replies{held}, never seen by the search.",
        "",
        *_screening_lines(r),
        objective_line(r),
        "",
        f"Baseline on the tuning prompts ({tables.judged_by(objective(r)[0])}): refusal "
        f"{100 * b['refusal']:.0f}%, redirect {_share(b.get('redirect'))}, compliance "
        f"{100 * b['compliance']:.0f}%,"
        f" benign refusal {100 * b['benign_refusal']:.0f}%.",
        "",
        f"**Chosen** (trial {ch['trial']}): {ch['scorer']}/{ch['sign']}/{ch['positions']}, {ch['neurons']} "
        "neurons "
        f"({100 * ch['fraction']:.4f}% of all), layers {ch['first_layer']}-{ch['last_layer']}, "
        f"{ch['intervention']} {multiplier_text(ch)}; "
        + served_as(ch)
        + ". "
        + ("Inside every constraint." if not r.broken else "Breaks: " + "; ".join(r.broken) + "."),
        "",
        "## Held-out check (test prompts, full-length replies)",
        "",
        *_held_out_notes(r),
        *_md_table(list(tables.COLUMNS), _final_rows(r)),
        "",
        *_md_table(
            [
                "circuit",
                "judge",
                "refusal",
                "redirect",
                "compliance",
                "degenerate",
                "not served vs baseline (paired)",
            ],
            _judge_rows(r),
        ),
        "",
        RECALL_CAVEAT,
        "",
        *_calibration_lines(r, calibrated or {}),
        *_confirm_lines(r),
        "## Pareto front (tuning prompts)",
        "",
        *_md_table(PARETO_COLUMNS, _pareto_rows(r)),
        "",
        *_front_lines(r),
        "## Sparsity of the chosen rule (tuning prompts)",
        "",
        *_md_table(
            ["neurons", "% of all", "refusal", "redirect", "cut", "compliance", "constraints"], _curve_rows(r)
        ),
        "",
        "Cut: the fall in replies that do not serve the request (refusal, plus redirect where measured) "
        "from the baseline's.",
        "",
        f"Knee: {k['neurons']} neurons cut them by {100 * float(k['cut']):.0f}% inside every constraint."  # type: ignore[arg-type]
        if k
        else "Knee: no size on the curve cuts them by 80% inside every constraint.",
    ]
    return "\n".join(lines) + "\n"


def render_html(r: TuneResults, calibrated: Mapping[str, CalibratedRates] | None = None) -> str:
    body = html.escape(render_markdown(r, calibrated))
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>neurogate tune "
        f"{html.escape(r.run_id)}</title>"
        "</head><body style='font-family:sans-serif;max-width:1100px;margin:2em auto'>"
        f"{_plot(r)}<pre style='white-space:pre-wrap'>{body}</pre></body></html>"
    )


def write_reports(r: TuneResults, root: Path) -> tuple[Path, Path]:
    """Write the search's reports, with the calibrated rates of any audit of its held-out check (a damaged
    audit folder costs only the calibration)."""
    try:
        calibrated = calibration.calibrated_rates(root, r.final)
    except NeurogateError as exc:
        logger.warning("the report shows uncalibrated rates only: %s", exc)
        calibrated = {}
    return (
        write_text_atomic(root / "tune-report.md", render_markdown(r, calibrated)),
        write_text_atomic(root / "tune-report.html", render_html(r, calibrated)),
    )
