"""Plots as inline SVG written here (no plotting dependency, no external files): line charts with error
bars and a legend, and bar charts of counts per layer."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf")


@dataclass
class Series:
    """One line of a chart; ``low``/``high`` (optional) draw error bars."""

    name: str
    x: list[float]
    y: list[float]
    low: list[float] = field(default_factory=list)
    high: list[float] = field(default_factory=list)
    line: bool = True


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


@dataclass(frozen=True)
class _Frame:
    """The plot area of a line chart and its data ranges: maps data to pixels."""

    left: float
    top: float
    pw: float
    ph: float
    x0: float
    x1: float
    y0: float
    y1: float
    log_x: bool

    def px(self, x: float) -> float:
        v = math.log10(x) if self.log_x else x
        return self.left + (v - self.x0) / (self.x1 - self.x0) * self.pw

    def py(self, y: float) -> float:
        return self.top + (1 - (y - self.y0) / (self.y1 - self.y0)) * self.ph


def _ranges(
    series: Sequence[Series], pts: list[tuple[float, float]], y_range: tuple[float, float] | None, log_x: bool
) -> tuple[float, float, float, float]:
    xs = [math.log10(x) if log_x else x for x, _ in pts]
    x0, x1 = min(xs), max(xs)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    if y_range is not None:
        return x0, x1, *y_range
    extra = [v for s in series for v in (*s.low, *s.high) if math.isfinite(v)]
    ys = [y for _, y in pts] + extra
    y0, y1 = min(ys), max(ys)
    if y1 == y0:
        y0, y1 = y0 - 0.5, y1 + 0.5
    return x0, x1, y0, y1


def _axes(f: _Frame, pts: list[tuple[float, float]], xlabel: str, ylabel: str, height: int) -> list[str]:
    out = []
    for t in _ticks(f.y0, f.y1):
        out.append(
            f'<line x1="{f.left}" x2="{f.left + f.pw}" y1="{f.py(t):.1f}" y2="{f.py(t):.1f}" stroke="#eee"/>'
        )
        out.append(f'<text x="{f.left - 4}" y="{f.py(t) + 4:.1f}" text-anchor="end">{_fmt(t)}</text>')
    xticks = sorted({x for x, _ in pts})
    if len(xticks) > 8:
        xticks = xticks[:: math.ceil(len(xticks) / 8)]
    for t in xticks:
        out.append(f'<text x="{f.px(t):.1f}" y="{f.top + f.ph + 14}" text-anchor="middle">{_fmt(t)}</text>')
    out.append(
        f'<text x="{f.left + f.pw / 2:.0f}" y="{height - 8}" text-anchor="middle">'
        f"{html.escape(xlabel)}</text>"
    )
    out.append(
        f'<text transform="translate(14,{f.top + f.ph / 2:.0f}) rotate(-90)" text-anchor="middle">'
        f"{html.escape(ylabel)}</text>"
    )
    return out


def _series(f: _Frame, s: Series, i: int, n_series: int) -> list[str]:
    """One series: its line, error bars, markers and legend entry."""
    color = PALETTE[i % len(PALETTE)]
    out = []
    good = [(x, y) for x, y in zip(s.x, s.y, strict=True) if math.isfinite(y)]
    if s.line and len(good) > 1:
        path = " ".join(f"{f.px(x):.1f},{f.py(y):.1f}" for x, y in good)
        out.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"/>')
    for j, (x, y) in enumerate(zip(s.x, s.y, strict=True)):
        if not math.isfinite(y):
            continue
        if s.low and s.high:
            cx = f.px(x) + (i - (n_series - 1) / 2) * 2
            out.append(
                f'<line x1="{cx:.1f}" x2="{cx:.1f}" y1="{f.py(s.low[j]):.1f}" y2="{f.py(s.high[j]):.1f}" '
                f'stroke="{color}" stroke-width="1.2"/>'
            )
        out.append(f'<circle cx="{f.px(x):.1f}" cy="{f.py(y):.1f}" r="3" fill="{color}"/>')
    ly = f.top + 12 + 16 * i
    out.append(f'<rect x="{f.left + f.pw + 10}" y="{ly - 8}" width="10" height="10" fill="{color}"/>')
    out.append(f'<text x="{f.left + f.pw + 24}" y="{ly + 1}">{html.escape(s.name)}</text>')
    return out


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
        return (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="40"><text x="4" y="20">'
            f"{html.escape(title)}: no data</text></svg>"
        )
    left, right, top, bottom = 56, 130, 28, 44
    frame = _Frame(
        left, top, width - left - right, height - top - bottom, *_ranges(series, pts, y_range, log_x), log_x
    )
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif" font-size="11">',
        f'<text x="{width / 2 - right / 2:.0f}" y="16" text-anchor="middle" font-size="13" '
        f'font-weight="bold">{html.escape(title)}</text>',
        f'<rect x="{left}" y="{top}" width="{frame.pw}" height="{frame.ph}" fill="none" stroke="#999"/>',
        *_axes(frame, pts, xlabel, ylabel, height),
    ]
    for i, s in enumerate(series):
        out += _series(frame, s, i, len(series))
    out.append("</svg>")
    return "\n".join(out)


def bar_chart(
    values: dict[int, int],
    n_bars: int,
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    width: int = 460,
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
