"""Rendering :class:`StudyResults` as ``report.md`` and a self-contained ``report.html``.

Every number is printed with its scale: neuron kinds on the multiplier ``m`` (1 = unchanged, 0 ablates),
residual kinds on the strength ``s`` (0 = unchanged, 1 = full).
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

from neurogate.atomic import write_text_atomic
from neurogate.evaluation.engine import TABLE_COLUMNS, table_rows
from neurogate.evaluation.results import ConditionResult
from neurogate.steering.registry import describe_kinds
from neurogate.study.charts import Series, bar_chart, line_chart
from neurogate.study.results import StudyResults


def _sweep(results: StudyResults) -> list[ConditionResult]:
    return [results.conditions[k] for k in results.sweep]


def scale_series(results: StudyResults, scale: str, metric: str = "refusal") -> list[Series]:
    """One series per method on ``scale`` (``"multiplier"`` or ``"strength"``), the baseline at the scale's
    neutral value; refusal in percent with its interval, or quality."""
    base = results.baseline
    neutral = 1.0 if scale == "multiplier" else 0.0
    methods = sorted({r.kind for r in _sweep(results) if r.scale == scale})
    out = []
    for m in methods:
        chosen = sorted((r for r in _sweep(results) if r.kind == m), key=lambda r: r.value or 0.0)
        points = [(neutral, base), *((r.value or 0.0, r) for r in chosen)]
        points.sort(key=lambda p: p[0])
        xs = [x for x, _ in points]
        if metric == "refusal":
            out.append(
                Series(
                    m,
                    xs,
                    [100 * r.refusal.value for _, r in points],
                    [100 * r.refusal.low for _, r in points],
                    [100 * r.refusal.high for _, r in points],
                )
            )
        else:
            out.append(Series(m, xs, [r.quality for _, r in points]))
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


def _example_keys(results: StudyResults) -> list[str]:
    """The baseline, then per method its strongest sweep condition (farthest from neutral)."""
    keys = ["baseline"]
    for kind in dict.fromkeys(r.kind for r in _sweep(results) if r.scale is not None):
        rows = [r for r in _sweep(results) if r.kind == kind]
        neutral = 1.0 if rows[0].scale == "multiplier" else 0.0
        keys.append(max(rows, key=lambda r: abs((r.value or 0.0) - neutral)).key)
    return keys


def _notes(results: StudyResults) -> list[str]:
    ev = results.config["evaluation"]
    p = results.prompts
    kinds = "; ".join(f"{d['kind']}: {d['summary']} ({d['scale']})" for d in describe_kinds())
    return [
        f"Greedy replies of at most {ev['max_new_tokens']} new tokens; quality and perplexity are measured "
        "on these replies.",
        f"{p['eval']['count']} harmful evaluation prompts ({p['eval']['name']}) and {p['benign']['count']} "
        f"benign ones ({p['benign']['name']}). Leakage check: {results.held_out.get('check', '?')}.",
        f"Refusal judge: {ev['judge']}. Rates carry 95% Wilson intervals.",
        f"KL: KL(unsteered || steered) on the benign prompts, teacher-forcing the unsteered replies; first "
        f"token and mean over the first {ev['kl_tokens']} tokens. Perplexity: the steered harmful replies "
        "under the unsteered model.",
        "Quality: distinct word 4-grams / all word 4-grams of a reply (1.0 for replies under 4 words; a "
        "refusal also scores about 1.0).",
        f"Methods and scales: {kinds}.",
    ]


def _random_lines(results: StudyResults) -> list[str]:
    lines = []
    for r in results.random_control:
        c = results.conditions[r.key]
        inside = "inside" if r.within_baseline_ci else "OUTSIDE"
        lines.append(
            f"random neurons (seed {r.seed}, {c.n_neurons} neurons, m=0): refusal {c.refusal}, {inside} "
            "the baseline's 95% interval (point estimate only)"
        )
    return lines


def _header(results: StudyResults) -> list[str]:
    m, v, c = results.model, results.versions, results.circuit
    return [
        f"Model `{m['spec']}` ({m['shape'].get('n_layers')} layers, {results.n_neurons:,} MLP neurons, "
        f"{m['dtype']}); neurogate {v['neurogate']}, torch {v['torch']}, transformers {v['transformers']}; "
        f"{results.created}.",
        "",
        f"Circuit: {c.n_neurons} neurons ({100 * c.fraction:.3f}% of all, scorer "
        f"{c.method.get('score', '?')}), {100 * c.late_share:.0f}% in the last quarter of the layers.",
    ]


def _markdown_tables(results: StudyResults) -> list[str]:
    lines = ["## Sweep", "", "| " + " | ".join(TABLE_COLUMNS) + " |", "|" + "---|" * len(TABLE_COLUMNS)]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(_sweep(results))]
    if results.sparsity:
        lines += [
            "",
            "## Sparsity (CNA at m=0, prefixes of one ranking)",
            "",
            "| neurons | % of all | refusal % [95% CI] | quality |",
            "|---|---|---|---|",
        ]
        for p in results.sparsity:
            c = results.conditions[p.key]
            lines.append(
                f"| {p.size} | {100 * p.size / results.n_neurons:.3f} | {c.refusal} | {c.quality:.3f} |"
            )
    if results.random_control:
        lines += ["", "## Random control", "", *[f"- {x}" for x in _random_lines(results)]]
    lines += [
        "",
        "## Layer localisation",
        "",
        "| behaviour | neurons | late share | neurons per layer |",
        "|---|---|---|---|",
    ]
    for prof in results.layers:
        per = ", ".join(f"L{k}:{v}" for k, v in prof.per_layer.items())
        lines.append(f"| {prof.behaviour} | {prof.n_neurons} | {100 * prof.late_share:.0f}% | {per} |")
    return lines


def _capability_lines(results: StudyResults) -> list[str]:
    cap = results.capability
    if not cap:
        return []
    lines = ["", "## Capability (lm-eval)", ""]
    if cap.get("skipped"):
        return [*lines, f"- {cap['skipped']}"]
    for task, value in cap.get("baseline", {}).items():
        steered = cap.get("cna", {}).get(task)
        after = "-" if steered is None else f"{steered:.3f}"
        lines.append(f"- {task} (limit {cap['limit']}): baseline {value:.3f}, CNA m=0 {after}")
    return lines


def _examples(results: StudyResults) -> list[tuple[str, list[tuple[str, str]]]]:
    keys = _example_keys(results)
    n = min(int(results.config["examples"]), len(results.baseline.harmful))
    return [
        (
            results.baseline.harmful[i].prompt,
            [(results.conditions[k].label, results.conditions[k].harmful[i].text.strip()) for k in keys],
        )
        for i in range(n)
    ]


def render_markdown(results: StudyResults) -> str:
    """The study as Markdown: setup, the sweep table, sparsity, random control, layers, examples."""
    lines = [f"# neurogate study {results.run_id}", "", *_header(results), "", "## Notes", ""]
    lines += [f"- {n}" for n in _notes(results)] + [""]
    lines += _markdown_tables(results) + _capability_lines(results) + ["", "## Example replies", ""]
    for prompt, replies in _examples(results):
        lines += [f"### {prompt}", ""]
        lines += [f"- **{label}**: {text.replace(chr(10), ' ')}" for label, text in replies]
        lines.append("")
    return "\n".join(lines) + "\n"


_CSS = """body{font-family:sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:13px;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 6px}
th{background:#f3f3f3}.plots{display:flex;flex-wrap:wrap;gap:12px}.ex td{vertical-align:top;width:25%;
font-size:12px;white-space:pre-wrap}"""


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], cls: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><tr>{head}</tr>{body}</table>'


def _plots(results: StudyResults) -> list[str]:
    plots = []
    for scale, symbol in (("multiplier", "m"), ("strength", "s")):
        series = scale_series(results, scale)
        if series:
            plots.append(
                line_chart(
                    series,
                    title=f"Refusal vs {scale}",
                    xlabel=f"{scale} {symbol}",
                    ylabel="refusal % (95% CI)",
                    y_range=(0, 100),
                )
            )
            plots.append(
                line_chart(
                    scale_series(results, scale, "quality"),
                    title=f"Quality vs {scale}",
                    xlabel=f"{scale} {symbol}",
                    ylabel="distinct 4-gram ratio",
                    y_range=(0, 1),
                )
            )
    sp = sparsity_series(results)
    if sp:
        plots.append(
            line_chart(
                sp,
                title="Refusal vs circuit size",
                xlabel="% of MLP neurons (log)",
                ylabel="refusal % (95% CI)",
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


def render_html(results: StudyResults) -> str:
    """A single self-contained HTML page: the Markdown's content plus inline SVG plots."""
    examples = _examples(results)
    labels = [label for label, _ in examples[0][1]] if examples else []
    ex_rows = [[prompt, *[text for _, text in replies]] for prompt, replies in examples]
    title = html.escape(results.run_id)
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>neurogate study {title}</title><style>{_CSS}</style></head><body>",
        f"<h1>neurogate study {title}</h1>",
        "".join(f"<p>{html.escape(line)}</p>" for line in _header(results) if line),
        "<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in _notes(results)) + "</ul>",
        "<h2>Sweep</h2>",
        _table(TABLE_COLUMNS, table_rows(_sweep(results))),
        "<div class='plots'>" + "".join(_plots(results)) + "</div>",
    ]
    if results.random_control:
        parts.append(
            "<h2>Random control</h2><ul>"
            + "".join(f"<li>{html.escape(x)}</li>" for x in _random_lines(results))
            + "</ul>"
        )
    parts += ["<h2>Example replies</h2>", _table(["prompt", *labels], ex_rows, "ex"), "</body></html>"]
    return "\n".join(parts)


def write_reports(results: StudyResults, run_dir: str | Path) -> tuple[Path, Path]:
    """Write ``report.md`` and ``report.html`` next to ``results.json``."""
    root = Path(run_dir)
    md = write_text_atomic(root / "report.md", render_markdown(results))
    page = write_text_atomic(root / "report.html", render_html(results))
    return md, page
