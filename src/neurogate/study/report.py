"""Rendering :class:`StudyResults` as ``report.md`` and a self-contained ``report.html`` (inline SVG plots,
no external files). The content comes from :mod:`neurogate.study.sections`, so both say the same."""

from __future__ import annotations

import html
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

from neurogate.atomic import write_text_atomic
from neurogate.errors import NeurogateError
from neurogate.evaluation import tables
from neurogate.evaluation.calibration import CalibratedRates, audited_pairs, calibrated_rates
from neurogate.evaluation.metrics import MATCHED_WORDS
from neurogate.evaluation.results import ConditionResult
from neurogate.study.charts import Series, bar_chart, line_chart
from neurogate.study.front_sections import (
    FrontCalibration,
    front_calibration,
    front_series,
    fronts_section,
)
from neurogate.study.results import StudyResults
from neurogate.study.sections import Section, Table, all_sections, examples

logger = logging.getLogger(__name__)


def _sweep(results: StudyResults) -> list[ConditionResult]:
    return [results.conditions[k] for k in results.sweep if k in results.conditions]


def scale_series(results: StudyResults, scale: str, metric: str = "refusal") -> list[Series]:
    """One series per method on ``scale`` (``"multiplier"`` or ``"strength"``), the baseline at the scale's
    neutral value; a class's rate (``"refusal"``, ``"redirect"``) in percent with its interval, or
    ``"quality"`` (compliant replies at matched length, :func:`tables.quality_values`; NaN, not drawn,
    where none counts). A redirect series leaves out the points whose judge did not measure redirects."""
    base = results.baseline
    neutral = 1.0 if scale == "multiplier" else 0.0
    out = []
    for m in sorted({r.kind for r in _sweep(results) if r.scale == scale}):
        chosen = [r for r in _sweep(results) if r.kind == m]
        points = sorted([(neutral, base), *((r.value or 0.0, r) for r in chosen)], key=lambda p: p[0])
        xs = [x for x, _ in points]
        if metric in ("refusal", "redirect"):
            rated = [(x, rate) for x, r in points if (rate := r.rates().get(metric)) is not None]
            if rated:
                out.append(
                    Series(
                        m,
                        [x for x, _ in rated],
                        [100 * rate.value for _, rate in rated],
                        [100 * rate.low for _, rate in rated],
                        [100 * rate.high for _, rate in rated],
                    )
                )
        else:
            out.append(Series(m, xs, [tables.metrics(r).quality.value for _, r in points]))
    return out


def sparsity_series(results: StudyResults) -> list[Series]:
    rows = [(p.size, results.conditions[p.key]) for p in results.sparsity if p.key in results.conditions]
    if not rows:
        return []
    xs = [100 * size / results.n_neurons for size, _ in rows]
    base = results.baseline.refusal
    return [
        Series(
            "cna m=0",
            xs,
            [100 * c.refusal.value for _, c in rows],
            [100 * c.refusal.low for _, c in rows],
            [100 * c.refusal.high for _, c in rows],
        ),
        Series("baseline", xs, [100 * base.value] * len(xs)),
    ]


def _header(results: StudyResults) -> list[str]:
    m, v, c = results.model, results.versions, results.circuit
    return [
        f"Model `{m['spec']}` ({m['shape'].get('n_layers')} layers, {results.n_neurons:,} MLP neurons, "
        f"{m['dtype']}); neurogate {v['neurogate']}, torch {v['torch']}, transformers {v['transformers']}; "
        # a resumed run reads its stored conditions again, so this is this session's time, not the study's
        f"{results.created}; {results.seconds / 60:.1f} minutes in this session.",
        f"Circuit: {c.n_neurons} neurons ({100 * c.fraction:.3f}% of all, scorer "
        f"{c.method.get('score', '?')}), "
        f"{100 * c.late_share:.0f}% in the last quarter of the layers.",
    ]


def _md_table(t: Table) -> list[str]:
    lines = [f"*{t.caption}*", ""] if t.caption else []
    lines += ["| " + " | ".join(t.columns) + " |", "|" + "---|" * len(t.columns)]
    return (
        lines + ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in t.rows] + [""]
    )


def _md_section(s: Section) -> list[str]:
    lines = [f"## {s.title}", ""]
    lines += [f"- {n}" for n in s.notes] + ([""] if s.notes else [])
    if s.code:
        lines += [
            "Prompt format (the first evaluation prompt as the model sees it):",
            "",
            "```",
            s.code,
            "```",
            "",
        ]
    for t in s.tables:
        lines += _md_table(t)
    return lines


def render_markdown(
    results: StudyResults,
    calibrated: Mapping[str, CalibratedRates] | None = None,
    fronts: tuple[FrontCalibration, dict[str, str]] | None = None,
) -> str:
    """The study as Markdown: setup, headline, every judge, fronts, specificity, baselines, sparsity,
    layers, examples. ``fronts``: the fronts' calibration (:func:`front_calibration`), when audited."""
    lines = [f"# neurogate study {results.run_id}", "", *_header(results), ""]
    for section in all_sections(results, calibrated, fronts_section(results, *(fronts or ({}, {})))):
        lines += _md_section(section)
    cap = results.capability
    if cap:
        lines += ["## Capability (lm-eval)", ""]
        if cap.get("skipped"):
            lines.append(f"- {cap['skipped']}")
        for task, value in cap.get("baseline", {}).items():
            after = cap.get("cna", {}).get(task)
            lines.append(
                f"- {task} (limit {cap['limit']}): baseline {value:.3f}, CNA m=0 "
                f"{'-' if after is None else f'{after:.3f}'}"
            )
        lines.append("")
    lines += ["## Example replies", ""]
    for prompt, replies in examples(results):
        lines += [f"### {prompt}", ""]
        lines += [f"- **{label}** ({cls}): {text.replace(chr(10), ' ')}" for label, cls, text in replies]
        lines.append("")
    return "\n".join(lines) + "\n"


_CSS = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:13px;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 6px}
th{background:#f3f3f3}caption{text-align:left;font-style:italic}.plots{display:flex;flex-wrap:wrap;gap:12px}
.ex td{vertical-align:top;font-size:12px;white-space:pre-wrap}
pre{background:#f6f6f6;padding:.6em;overflow:auto}"""


def _html_table(t: Table, cls: str = "") -> str:
    cap = f"<caption>{html.escape(t.caption)}</caption>" if t.caption else ""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in t.columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in t.rows)
    return f'<table class="{cls}">{cap}<tr>{head}</tr>{body}</table>'


def _html_section(s: Section) -> str:
    parts = [f"<h2>{html.escape(s.title)}</h2>"]
    if s.notes:
        parts.append("<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in s.notes) + "</ul>")
    if s.code:
        parts.append(
            "<p>Prompt format (the first evaluation prompt as the model sees "
            f"it):</p><pre>{html.escape(s.code)}</pre>"
        )
    parts += [_html_table(t) for t in s.tables]
    return "\n".join(parts)


def _plots(results: StudyResults, fronts: FrontCalibration | None = None) -> list[str]:
    plots = []
    judged = f"({results.judges[0]} judge)"  # the y axis says the judge alone gave it: uncalibrated
    if results.fronts is not None and (series := front_series(results.fronts, fronts)):
        plots.append(
            line_chart(
                series,
                title="Served vs damage: each method's front",
                xlabel="mean benign KL (log)",
                ylabel="compliance %, " + ("calibrated" if fronts else f"uncalibrated {judged}"),
                y_range=(0, 100),
                log_x=True,
                width=560,
            )
        )
    for scale, symbol in (("multiplier", "m"), ("strength", "s")):
        if series := scale_series(results, scale):
            # refusal, then redirect where the judge measured it (an empty series draws nothing)
            for cls, rates in (("refusal", series), ("redirect", scale_series(results, scale, "redirect"))):
                if rates:
                    plots.append(
                        line_chart(
                            rates,
                            title=f"{cls.capitalize()} vs {scale} {judged}",
                            xlabel=f"{scale} {symbol}",
                            ylabel=f"{cls} % (95% CI), uncalibrated",
                            y_range=(0, 100),
                        )
                    )
            plots.append(
                line_chart(
                    scale_series(results, scale, "quality"),
                    title=f"Quality vs {scale}",
                    xlabel=f"{scale} {symbol}",
                    ylabel=f"distinct 4-grams, compliant, first {MATCHED_WORDS} words",
                    y_range=(0, 1),
                )
            )
    if sp := sparsity_series(results):
        plots.append(
            line_chart(
                sp,
                title=f"Refusal vs circuit size {judged}",
                xlabel="% of MLP neurons (log)",
                ylabel="refusal % (95% CI), uncalibrated",
                y_range=(0, 100),
                log_x=True,
            )
        )
    n_layers = int(results.model["shape"].get("n_layers", 0))
    for p in results.layers:
        plots.append(
            bar_chart(
                p.per_layer,
                n_layers,
                title=f"Neurons per layer: {p.behaviour}",
                xlabel="layer",
                ylabel="neurons",
            )
        )
    return plots


def render_html(
    results: StudyResults,
    calibrated: Mapping[str, CalibratedRates] | None = None,
    fronts: tuple[FrontCalibration, dict[str, str]] | None = None,
) -> str:
    """A single self-contained HTML page: the Markdown's content plus inline SVG plots."""
    front_cal, front_source = fronts or ({}, {})
    title = html.escape(results.run_id)
    ex = examples(results)
    labels = [label for label, _, _ in ex[0][1]] if ex else []
    ex_rows = [[prompt, *[f"[{cls}] {text}" for _, cls, text in replies]] for prompt, replies in ex]
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>neurogate study {title}</title>",
        f"<style>{_CSS}</style></head><body><h1>neurogate study {title}</h1>",
        "".join(f"<p>{html.escape(line)}</p>" for line in _header(results)),
        *[
            _html_section(s)
            for s in all_sections(results, calibrated, fronts_section(results, front_cal, front_source))
        ],
        "<div class='plots'>" + "".join(_plots(results, front_cal)) + "</div>",
        "<h2>Example replies</h2>",
        _html_table(Table(["prompt", *labels], ex_rows), "ex"),
        "</body></html>",
    ]
    return "\n".join(parts)


def run_calibration(results: StudyResults, run_dir: str | Path) -> dict[str, CalibratedRates]:
    """The calibrated rates of the run's audited conditions; none (with a warning) when its audit folder
    cannot be read, so a damaged audit never costs the report."""
    try:
        return calibrated_rates(run_dir, results.conditions)
    except NeurogateError as exc:
        logger.warning("the report shows uncalibrated rates only: %s", exc)
        return {}


def run_front_calibration(
    results: StudyResults, run_dir: str | Path
) -> tuple[FrontCalibration, dict[str, str]]:
    """The fronts' served shares corrected by the run's audit (none, with a warning, when it cannot be
    read)."""
    if results.fronts is None:
        return {}, {}
    try:
        return front_calibration(results, audited_pairs(run_dir, results.conditions))
    except NeurogateError as exc:
        logger.warning("the fronts show uncalibrated rates only: %s", exc)
        return {}, {}


def write_reports(results: StudyResults, run_dir: str | Path) -> tuple[Path, Path]:
    """Write ``report.md`` and ``report.html`` next to ``results.json``, with the calibrated rates of any
    audit in the run folder."""
    root = Path(run_dir)
    calibrated = run_calibration(results, root)
    fronts = run_front_calibration(results, root)
    return (
        write_text_atomic(root / "report.md", render_markdown(results, calibrated, fronts)),
        write_text_atomic(root / "report.html", render_html(results, calibrated, fronts)),
    )


__all__: Sequence[str] = [
    "render_html",
    "render_markdown",
    "scale_series",
    "sparsity_series",
    "write_reports",
]
