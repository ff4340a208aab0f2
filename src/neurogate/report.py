"""Rendering a study's ``results.json`` as ``report.md`` and a self-contained ``report.html``.

The HTML draws its plots as inline SVG written here (no plotting dependency, no external files):
refusal vs strength per method with 95% Wilson error bars, quality vs strength, refusal vs circuit size,
and neurons per layer for each behaviour.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from neurogate.sweep import TABLE_COLUMNS, ConditionResult, table_rows

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf")


@dataclass
class Series:
    """One line of a chart; ``low``/``high`` (optional) draw error bars."""

    name: str
    x: list[float]
    y: list[float]
    low: list[float] = field(default_factory=list)
    high: list[float] = field(default_factory=list)


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    return [lo + (hi - lo) * i / (n - 1) for i in range(n)]


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 100 or v == int(v):
        return f"{v:.0f}"
    return f"{v:.3g}"


def line_chart(
    series: Sequence[Series],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    y_range: tuple[float, float] | None = None,
    log_x: bool = False,
    width: int = 460,
    height: int = 300,
) -> str:
    """An SVG line chart with markers, optional error bars and a legend."""
    pts = [(x, y) for s in series for x, y in zip(s.x, s.y, strict=True) if math.isfinite(y)]
    if not pts:
        return f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="40"><text x="4" y="20">' \
            f"{html.escape(title)}: no data</text></svg>"
    xs = [math.log10(x) if log_x else x for x, _ in pts]
    x0, x1 = min(xs), max(xs)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    if y_range is None:
        extra = [v for s in series for v in (*s.low, *s.high) if math.isfinite(v)]
        ys = [y for _, y in pts] + extra
        y0, y1 = min(ys), max(ys)
        if y1 == y0:
            y0, y1 = y0 - 0.5, y1 + 0.5
    else:
        y0, y1 = y_range
    left, right, top, bottom = 56, 130, 28, 44
    pw, ph = width - left - right, height - top - bottom

    def px(x: float) -> float:
        v = math.log10(x) if log_x else x
        return left + (v - x0) / (x1 - x0) * pw

    def py(y: float) -> float:
        return top + (1 - (y - y0) / (y1 - y0)) * ph

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif" font-size="11">',
        f'<text x="{width / 2 - right / 2:.0f}" y="16" text-anchor="middle" font-size="13" '
        f'font-weight="bold">{html.escape(title)}</text>',
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>',
    ]
    for t in _ticks(y0, y1):
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{py(t):.1f}" y2="{py(t):.1f}" stroke="#eee"/>')
        out.append(f'<text x="{left - 4}" y="{py(t) + 4:.1f}" text-anchor="end">{_fmt(t)}</text>')
    xticks = sorted({x for x, _ in pts})
    if len(xticks) > 8:
        xticks = xticks[:: math.ceil(len(xticks) / 8)]
    for t in xticks:
        out.append(f'<text x="{px(t):.1f}" y="{top + ph + 14}" text-anchor="middle">{_fmt(t)}</text>')
    out.append(
        f'<text x="{left + pw / 2:.0f}" y="{height - 8}" text-anchor="middle">{html.escape(xlabel)}</text>'
    )
    out.append(
        f'<text transform="translate(14,{top + ph / 2:.0f}) rotate(-90)" text-anchor="middle">'
        f"{html.escape(ylabel)}</text>"
    )
    for i, s in enumerate(series):
        color = PALETTE[i % len(PALETTE)]
        good = [(x, y) for x, y in zip(s.x, s.y, strict=True) if math.isfinite(y)]
        if len(good) > 1:
            path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in good)
            out.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"/>')
        for j, (x, y) in enumerate(zip(s.x, s.y, strict=True)):
            if not math.isfinite(y):
                continue
            if s.low and s.high:
                cx = px(x) + (i - (len(series) - 1) / 2) * 2
                out.append(
                    f'<line x1="{cx:.1f}" x2="{cx:.1f}" y1="{py(s.low[j]):.1f}" y2="{py(s.high[j]):.1f}" '
                    f'stroke="{color}" stroke-width="1.2"/>'
                )
            out.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{color}"/>')
        ly = top + 12 + 16 * i
        out.append(f'<rect x="{left + pw + 10}" y="{ly - 8}" width="10" height="10" fill="{color}"/>')
        out.append(f'<text x="{left + pw + 24}" y="{ly + 1}">{html.escape(s.name)}</text>')
    out.append("</svg>")
    return "\n".join(out)


def bar_chart(
    values: dict[int, int], n_bars: int, *, title: str, xlabel: str, ylabel: str, width: int = 460,
    height: int = 220,
) -> str:
    """An SVG bar chart of counts over ``0..n_bars-1`` (e.g. neurons per layer)."""
    left, right, top, bottom = 44, 16, 28, 40
    pw, ph = width - left - right, height - top - bottom
    peak = max(values.values(), default=0) or 1
    bw = pw / max(1, n_bars)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif" font-size="11">',
        f'<text x="{width / 2:.0f}" y="16" text-anchor="middle" font-size="13" font-weight="bold">'
        f"{html.escape(title)}</text>",
        f'<line x1="{left}" x2="{left + pw}" y1="{top + ph}" y2="{top + ph}" stroke="#999"/>',
        f'<text x="{left - 4}" y="{top + 8}" text-anchor="end">{peak}</text>',
        f'<text x="{left - 4}" y="{top + ph}" text-anchor="end">0</text>',
    ]
    step = max(1, math.ceil(n_bars / 14))
    for i in range(n_bars):
        v = values.get(i, 0)
        h = ph * v / peak
        x = left + i * bw
        out.append(
            f'<rect x="{x + 1:.1f}" y="{top + ph - h:.1f}" width="{max(1.0, bw - 2):.1f}" height="{h:.1f}" '
            f'fill="{PALETTE[0]}"><title>layer {i}: {v}</title></rect>'
        )
        if i % step == 0:
            out.append(f'<text x="{x + bw / 2:.1f}" y="{top + ph + 13}" text-anchor="middle">{i}</text>')
    out.append(
        f'<text x="{left + pw / 2:.0f}" y="{height - 6}" text-anchor="middle">{html.escape(xlabel)}</text>'
    )
    out.append(
        f'<text transform="translate(12,{top + ph / 2:.0f}) rotate(-90)" text-anchor="middle">'
        f"{html.escape(ylabel)}</text>"
    )
    out.append("</svg>")
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------- assembling


def _conditions(results: dict[str, Any]) -> dict[str, ConditionResult]:
    return {k: ConditionResult.from_dict(v) for k, v in results["conditions"].items()}


def strength_series(results: dict[str, Any], metric: str = "refusal") -> list[Series]:
    """One series per method over strength (the shared baseline at 0), in percent for refusal."""
    conds = _conditions(results)
    base = conds["baseline"]
    methods = results["config"]["methods"]
    out = []
    for m in methods:
        chosen = sorted(
            (c for k, c in conds.items() if k in results["sweep"] and c.method == m), key=lambda c: c.strength
        )
        points = [base, *chosen]
        xs = [c.strength for c in points]
        if metric == "refusal":
            out.append(Series(m, xs, [100 * c.refusal.value for c in points],
                              [100 * c.refusal.low for c in points], [100 * c.refusal.high for c in points]))
        else:
            out.append(Series(m, xs, [c.quality for c in points]))
    return out


def sparsity_series(results: dict[str, Any]) -> list[Series]:
    conds = _conditions(results)
    rows = [(d["size"], conds[d["key"]]) for d in results["sparsity"] if d["key"] in conds]
    if not rows:
        return []
    total = results["model"]["n_neurons"]
    xs = [100 * size / total for size, _ in rows]
    base = conds["baseline"].refusal
    return [
        Series("cna ablation", xs, [100 * c.refusal.value for _, c in rows],
               [100 * c.refusal.low for _, c in rows], [100 * c.refusal.high for _, c in rows]),
        Series("baseline", xs, [100 * base.value] * len(xs)),
    ]


def _example_keys(results: dict[str, Any]) -> list[str]:
    conds = results["conditions"]
    top = max((c["strength"] for c in conds.values()), default=1.0)
    keys = ["baseline"]
    for m in results["config"]["methods"]:
        full = [k for k in results["sweep"] if conds[k]["method"] == m and conds[k]["strength"] == top]
        keys += full[:1]
    return keys


def _notes(results: dict[str, Any]) -> list[str]:
    cfg = results["config"]
    ev = results["prompts"]["eval"]
    notes = [
        f"Greedy replies of at most {cfg['max_new_tokens']} new tokens: refusals show in the first few dozen "
        "tokens, so this keeps the study inside its time budget; quality and perplexity are measured on "
        "these short replies.",
        f"{ev['count']} harmful evaluation prompts ({ev['name']})"
        f" and {results['prompts']['benign']['count']} benign ones ({results['prompts']['benign']['name']}); "
        "no evaluation prompt was used for discovery (checked strictly).",
        f"Refusal judge: {cfg['judge']}. Rates carry 95% Wilson intervals.",
        f"KL: KL(unsteered || steered) on the benign prompts, teacher-forcing the unsteered replies; first "
        f"token and mean over the first {cfg['kl_tokens']} tokens. Perplexity: the steered harmful replies "
        "under the unsteered model.",
        "Quality: distinct word 4-grams / all word 4-grams of a reply (1.0 for replies under 4 words; a "
        "refusal also scores about 1.0).",
    ]
    return notes


def _random_lines(results: dict[str, Any]) -> list[str]:
    conds = results["conditions"]
    lines = []
    for r in results["random_control"]:
        c = ConditionResult.from_dict(conds[r["key"]])
        inside = "inside" if r["within_baseline_ci"] else "OUTSIDE"
        lines.append(
            f"random neurons (seed {r['seed']}, {c.n_neurons} neurons): refusal {c.refusal}, {inside} "
            "the baseline's 95% interval"
        )
    return lines


def render_markdown(results: dict[str, Any]) -> str:
    """The study as Markdown: setup, the sweep table, sparsity, random control, layers, examples."""
    conds = _conditions(results)
    circ = results["circuit"]
    lines = [
        f"# neurogate study {results['run_id']}",
        "",
        f"Model `{results['model']['spec']}` ({results['model']['fingerprint'].get('n_layers')} layers, "
        f"{results['model']['n_neurons']:,} MLP neurons, {results['model']['dtype']}); neurogate "
        f"{results['versions']['neurogate']}, torch {results['versions']['torch']}, transformers "
        f"{results['versions']['transformers']}; {results['created']}.",
        "",
        f"Circuit: {circ['n_neurons']} neurons ({100 * circ['fraction']:.3f}% of all), "
        f"{100 * circ['late_share']:.0f}% in the last quarter of the layers.",
        "",
        "## Notes",
        "",
        *[f"- {n}" for n in _notes(results)],
        "",
        "## Sweep",
        "",
        "| " + " | ".join(TABLE_COLUMNS) + " |",
        "|" + "---|" * len(TABLE_COLUMNS),
    ]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(conds[k] for k in results["sweep"])]
    if results["sparsity"]:
        lines += ["", "## Sparsity (CNA ablation, prefixes of one ranking)", "",
                  "| neurons | % of all | refusal % [95% CI] | quality |", "|---|---|---|---|"]
        total = results["model"]["n_neurons"]
        for d in results["sparsity"]:
            c = conds[d["key"]]
            lines.append(f"| {d['size']} | {100 * d['size'] / total:.3f} | {c.refusal} | {c.quality:.3f} |")
    if results["random_control"]:
        lines += ["", "## Random control", "", *[f"- {x}" for x in _random_lines(results)]]
    lines += ["", "## Layer localisation", "", "| behaviour | neurons | late share | neurons per layer |",
              "|---|---|---|---|"]
    for p in results["layers"]:
        per = ", ".join(f"L{k}:{v}" for k, v in p["per_layer"].items())
        lines.append(f"| {p['behaviour']} | {p['n_neurons']} | {100 * p['late_share']:.0f}% | {per} |")
    cap = results.get("capability")
    if cap:
        lines += ["", "## Capability (lm-eval)", ""]
        if cap.get("skipped"):
            lines.append(f"- {cap['skipped']}")
        else:
            for task, score in cap.get("baseline", {}).items():
                steered = cap.get("cna", {}).get(task)
                after = "-" if steered is None else f"{steered:.3f}"
                lines.append(f"- {task} (limit {cap['limit']}): baseline {score:.3f}, CNA ablated {after}")
    lines += ["", "## Example replies", ""]
    for i in range(min(results["config"]["examples"], len(conds["baseline"].harmful))):
        lines.append(f"### {conds['baseline'].harmful[i].prompt}")
        lines.append("")
        for key in _example_keys(results):
            text = conds[key].harmful[i].text.strip().replace("\n", " ")
            lines.append(f"- **{key}**: {text}")
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


def render_html(results: dict[str, Any]) -> str:
    """A single self-contained HTML page: the Markdown's content plus inline SVG plots."""
    conds = _conditions(results)
    n_layers = int(results["model"]["fingerprint"].get("n_layers", 0))
    plots = [
        line_chart(strength_series(results, "refusal"), title="Refusal vs strength", xlabel="strength",
                   ylabel="refusal % (95% CI)", y_range=(0, 100)),
        line_chart(strength_series(results, "quality"), title="Quality vs strength", xlabel="strength",
                   ylabel="distinct 4-gram ratio", y_range=(0, 1)),
    ]
    sp = sparsity_series(results)
    if sp:
        plots.append(line_chart(sp, title="Refusal vs circuit size", xlabel="% of MLP neurons (log)",
                                ylabel="refusal % (95% CI)", y_range=(0, 100), log_x=True))
    for p in results["layers"]:
        per = {int(k): int(v) for k, v in p["per_layer"].items()}
        plots.append(bar_chart(per, n_layers, title=f"Neurons per layer: {p['behaviour']}", xlabel="layer",
                               ylabel="neurons"))
    keys = _example_keys(results)
    ex_rows = [
        [conds["baseline"].harmful[i].prompt, *[conds[k].harmful[i].text.strip() for k in keys]]
        for i in range(min(results["config"]["examples"], len(conds["baseline"].harmful)))
    ]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>neurogate study {html.escape(results['run_id'])}</title><style>{_CSS}</style></head><body>",
        f"<h1>neurogate study {html.escape(results['run_id'])}</h1>",
        f"<p>Model <code>{html.escape(results['model']['spec'])}</code>; circuit of "
        f"{results['circuit']['n_neurons']} neurons ({100 * results['circuit']['fraction']:.3f}% of "
        f"{results['model']['n_neurons']:,}).</p>",
        "<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in _notes(results)) + "</ul>",
        "<h2>Sweep</h2>",
        _table(TABLE_COLUMNS, table_rows(conds[k] for k in results["sweep"])),
        "<div class='plots'>" + "".join(plots) + "</div>",
    ]
    if results["random_control"]:
        parts.append("<h2>Random control</h2><ul>" + "".join(
            f"<li>{html.escape(x)}</li>" for x in _random_lines(results)) + "</ul>")
    parts += ["<h2>Example replies</h2>", _table(["prompt", *keys], ex_rows, "ex"), "</body></html>"]
    return "\n".join(parts)


def write_reports(results: dict[str, Any], run_dir: str | Path) -> tuple[Path, Path]:
    """Write ``report.md`` and ``report.html`` next to ``results.json``."""
    from neurogate.atomic import write_text_atomic

    root = Path(run_dir)
    md = write_text_atomic(root / "report.md", render_markdown(results))
    page = write_text_atomic(root / "report.html", render_html(results))
    return md, page
