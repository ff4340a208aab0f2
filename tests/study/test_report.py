"""Report rendering: hand-drawn SVG charts that parse as XML, Markdown and HTML with every section."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from neurogate.evaluation.statistics import rate_of
from neurogate.study.report import Series, bar_chart, line_chart, render_html, render_markdown, write_reports
from neurogate.sweep import ConditionResult, Reply

SVG = "{http://www.w3.org/2000/svg}"


def _parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)


def test_line_chart_draws_lines_markers_and_error_bars() -> None:
    chart = line_chart(
        [
            Series("cna", [0, 0.5, 1], [90, 50, 10], [80, 40, 5], [95, 60, 20]),
            Series("caa", [0, 1], [90, 30]),
        ],
        title="Refusal <vs> strength", xlabel="strength", ylabel="%", y_range=(0, 100),
    )
    root = _parse(chart)
    assert len(root.findall(f"{SVG}polyline")) == 2
    assert len(root.findall(f"{SVG}circle")) == 5
    bars = [e for e in root.findall(f"{SVG}line") if e.get("stroke-width") == "1.2"]
    assert len(bars) == 3
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert "Refusal <vs> strength" in texts and "cna" in texts and "caa" in texts
    # higher values sit higher on the page
    ys = [float(c.get("cy", 0)) for c in root.findall(f"{SVG}circle")][:3]
    assert ys[0] < ys[1] < ys[2]


def test_line_chart_log_axis_and_empty() -> None:
    root = _parse(line_chart([Series("s", [0.01, 0.1, 1.0], [3, 2, 1])], title="t", xlabel="x", ylabel="y",
                             log_x=True))
    xs = [float(c.get("cx", 0)) for c in root.findall(f"{SVG}circle")]
    assert abs((xs[1] - xs[0]) - (xs[2] - xs[1])) < 0.5
    assert "no data" in line_chart([Series("s", [], [])], title="t", xlabel="x", ylabel="y")


def test_bar_chart_heights_follow_counts() -> None:
    root = _parse(bar_chart({0: 1, 3: 4}, 5, title="per layer", xlabel="layer", ylabel="n"))
    rects = root.findall(f"{SVG}rect")
    heights = [float(r.get("height", 0)) for r in rects]
    assert len(rects) == 5 and heights[3] == max(heights) and heights[3] == 4 * heights[0] and heights[1] == 0


def _result(
    key: str, method: str, strength: float, refusals: list[float], n: int | None = None
) -> dict[str, Any]:
    replies = [
        Reply(f"prompt {i}", f"reply {i} from {key} <b>", [1, 2], True, r) for i, r in enumerate(refusals)
    ]
    return ConditionResult(
        key=key, method=method, strength=strength, group="sweep", n_neurons=n, refusal=rate_of(refusals),
        quality=0.98, perplexity=3.2, kl_first=0.01, kl_mean=0.02, benign_refusal=rate_of([0.0, 0.0]),
        benign_quality=1.0, tokens_per_s=50.0, seconds=1.0, intervention={"kind": method}, harmful=replies,
        benign=replies[:2],
    ).to_dict()


def _results() -> dict[str, Any]:
    conds = {
        "baseline": _result("baseline", "baseline", 0.0, [1, 1, 1, 0]),
        "cna-s1-n5": _result("cna-s1-n5", "cna", 1.0, [0, 0, 1, 0], 5),
        "caa-s1": _result("caa-s1", "caa", 1.0, [0, 0, 0, 0]),
        "random-s1-n5-seed0": _result("random-s1-n5-seed0", "random", 1.0, [1, 1, 1, 0], 5),
        "cna-s1-n2": _result("cna-s1-n2", "cna", 1.0, [1, 0, 1, 0], 2),
    }
    return {
        "run_id": "tiny-abc", "created": "2026-01-01T00:00:00+00:00",
        "config": {
            "methods": ["cna", "caa", "random"], "max_new_tokens": 8, "judge": "keyword", "kl_tokens": 4,
            "examples": 2,
        },
        "versions": {"neurogate": "0.1.0", "torch": "2", "transformers": "5"},
        "model": {"spec": "tiny:llama", "fingerprint": {"n_layers": 3}, "n_neurons": 288, "dtype": "float32"},
        "prompts": {"eval": {"name": "e", "count": 4}, "benign": {"name": "b", "count": 2}},
        "circuit": {"n_neurons": 5, "fraction": 5 / 288, "late_share": 0.4},
        "sweep": ["baseline", "cna-s1-n5", "caa-s1", "random-s1-n5-seed0"],
        "sparsity": [{"size": 2, "key": "cna-s1-n2"}, {"size": 5, "key": "cna-s1-n5"}],
        "random_control": [{"key": "random-s1-n5-seed0", "seed": 0, "within_baseline_ci": True}],
        "layers": [{"behaviour": "refusal", "n_neurons": 5, "n_layers": 3, "per_layer": {"1": 2, "2": 3},
                    "late_share": 0.6}],
        "conditions": conds,
    }


def test_markdown_has_every_section() -> None:
    md = render_markdown(_results())
    sections = ("## Sweep", "## Sparsity", "## Random control", "## Layer localisation", "## Example replies")
    for heading in sections:
        assert heading in md
    assert "| cna-s1-n5 | 5 | 25% [" in md
    assert "at most 8 new tokens" in md
    assert "inside the baseline's 95% interval" in md
    assert "- **caa-s1**: reply 0 from caa-s1" in md


def test_html_is_self_contained_and_escaped(tmp_path: Path) -> None:
    page = render_html(_results())
    assert page.count("<svg") == 4  # refusal, quality, sparsity, one layer chart
    assert "&lt;b&gt;" in page and "<b>" not in page.replace("<body>", "")
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "")
    md, html_path = write_reports(_results(), tmp_path)
    assert md.read_text().startswith("# neurogate study tiny-abc")
    assert html_path.read_text() == page
