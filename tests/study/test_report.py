"""Report rendering: hand-drawn SVG charts that parse as XML, Markdown and HTML with every section."""

from __future__ import annotations

import dataclasses
import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from neurogate.evaluation import tables
from neurogate.evaluation.judges.base import RECALL_CAVEAT
from neurogate.evaluation.metrics import matched_quality
from neurogate.evaluation.results import ConditionResult, Reply
from neurogate.study import analysis
from neurogate.study.charts import Series, bar_chart, line_chart
from neurogate.study.experiments import LayerProfile
from neurogate.study.report import render_html, render_markdown, scale_series, sparsity_series, write_reports
from neurogate.study.results import CircuitSummary, SparsityPoint, StudyResults

SVG = "{http://www.w3.org/2000/svg}"


def _parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)


def test_line_chart_draws_lines_markers_and_error_bars() -> None:
    chart = line_chart(
        [
            Series("cna", [0, 0.5, 1], [90, 50, 10], [80, 40, 5], [95, 60, 20]),
            Series("caa", [0, 1], [90, 30]),
        ],
        title="Refusal <vs> strength",
        xlabel="strength",
        ylabel="%",
        y_range=(0, 100),
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
    root = _parse(
        line_chart([Series("s", [0.01, 0.1, 1.0], [3, 2, 1])], title="t", xlabel="x", ylabel="y", log_x=True)
    )
    xs = [float(c.get("cx", 0)) for c in root.findall(f"{SVG}circle")]
    assert abs((xs[1] - xs[0]) - (xs[2] - xs[1])) < 0.5
    assert "no data" in line_chart([Series("s", [], [])], title="t", xlabel="x", ylabel="y")


def test_bar_chart_heights_follow_counts() -> None:
    root = _parse(bar_chart({0: 1, 3: 4}, 5, title="per layer", xlabel="layer", ylabel="n"))
    rects = root.findall(f"{SVG}rect")
    heights = [float(r.get("height", 0)) for r in rects]
    assert len(rects) == 5 and heights[3] == max(heights) and heights[3] == 4 * heights[0] and heights[1] == 0


SCALES = {"cna": "multiplier", "random": "multiplier", "caa": "strength", "ablation": "strength"}


def _result(
    key: str, label: str, kind: str, value: float | None, classes: list[str], n: int | None = None
) -> ConditionResult:
    replies = [
        Reply(
            f"prompt {i}",
            f"reply {i} from {key} <b>",
            [1, 2],
            True,
            {"keyword": c},  # type: ignore[dict-item]
            None,
            0.5 if kind == "caa" else 0.98,
            2.0,
            2,
        )
        for i, c in enumerate(classes)
    ]
    return ConditionResult(
        key=key,
        label=label,
        kind=kind,
        scale=SCALES.get(kind),
        value=value,
        group="sweep",
        n_neurons=n,
        judges=["keyword"],
        tokens_per_s=50.0,
        seconds=1.0,
        intervention={"kind": kind},
        harmful=replies,
        benign=replies[:2],
        kl_first=[0.01, 0.01],
        kl_mean=[0.02, 0.02],
    )


R, C = "refusal", "compliance"


def _results() -> StudyResults:
    conds = [
        _result("baseline", "baseline", "baseline", None, [R, R, R, C]),
        _result("cna-m0-n5", "cna m=0", "cna", 0.0, [C, C, R, C], 5),
        _result("caa-s1", "caa s=1", "caa", 1.0, [C, C, C, "degenerate"]),
        _result("cna-m0@matched-0", "cna m=0 [matched-0]", "cna", 0.0, [R, R, R, C], 5),
        _result("cna-m0-n2", "cna m=0", "cna", 0.0, [R, C, R, C], 2),
    ]
    by_key = {c.key: c for c in conds}
    return StudyResults(
        run_id="tiny-abc",
        created="2026-01-01T00:00:00+00:00",
        config={
            "methods": ["cna", "caa"],
            "evaluation": {"max_new_tokens": 8, "judges": ["keyword"], "kl_tokens": 4},
            "examples": 2,
            "equivalence_margin": 0.1,
        },
        versions={"neurogate": "0.2.0", "torch": "2", "transformers": "5"},
        model={"spec": "tiny:llama", "shape": {"n_layers": 3}, "n_neurons": 288, "dtype": "float32"},
        prompts={
            "eval": {"name": "e", "count": 4},
            "benign": {"name": "b", "count": 2},
            "positive": {"name": "p", "count": 8},
            "negative": {"name": "n", "count": 8},
        },
        leakage={"check": "normalised matches", "policy": "drop", "found": {"eval": [], "benign": []}},
        prompt_format="<|im_start|>user\nprompt 0<|im_end|>\n<|im_start|>assistant\n",
        circuit=CircuitSummary(5, 5 / 288, {1: 2, 2: 3}, 0.6, {"score": "mean-diff"}, "5 neurons"),
        directions={"caa_layer": 1},
        judges=["keyword"],
        sweep=["baseline", "cna-m0-n5", "caa-s1"],
        sparsity=[SparsityPoint(2, "cna-m0-n2"), SparsityPoint(5, "cna-m0-n5")],
        controls=analysis.controls(
            by_key, "cna-m0-n5", [("cna-m0@matched-0", "magnitude-matched", "matched-0")], "keyword", 0.1
        ),
        caa_match=None,
        direction_selection=None,
        paired=analysis.paired_vs_baseline(by_key, ["keyword"], 0.1),
        agreement={},
        layers=[LayerProfile("refusal", 5, 3, {1: 2, 2: 3}, 0.6)],
        capability=None,
        conditions=by_key,
        seconds=60.0,
    )


def test_markdown_has_every_section() -> None:
    md = render_markdown(_results())
    sections = (
        "## Setup",
        "## Headline",
        "## Every judge",
        "## Specificity",
        "## Sparsity",
        "## Layer localisation",
        "## Example replies",
    )
    for heading in sections:
        assert heading in md
    assert "| cna m=0 | 5 | 25% [" in md and "| caa s=1 | - | 0% [" in md
    assert "| 2 | 0.694 | 50% [" in md  # sparsity rows: size, % of all neurons, refusal
    assert "at most 8 new tokens" in md and "under the keyword judge" in md
    assert RECALL_CAVEAT in md
    assert "| matched-0 | magnitude-matched | 75% [" in md
    assert "- **caa s=1** (compliance): reply 0 from caa-s1" in md
    assert "| refusal | 5 | 60% | L1:2, L2:3 |" in md
    assert "<|im_start|>user" in md  # the prompt format
    assert "- Judges: keyword (headline: keyword)." in md


def test_the_judges_line_names_each_judges_model_and_readout() -> None:
    results = _results()
    results.judges = ["keyword", "local"]
    results.extra = {"judge_settings": {"local": "model zoo:m, readout probe:abc123"}}
    md = render_markdown(results)
    assert "- Judges: keyword, local (model zoo:m, readout probe:abc123) (headline: keyword)." in md


def test_each_method_is_charted_on_its_own_scale_from_the_baseline() -> None:
    results = _results()
    by_name = {s.name: s for s in scale_series(results, "multiplier")}
    assert sorted(by_name) == ["cna"]
    assert (by_name["cna"].x, by_name["cna"].y) == ([0.0, 1.0], [25.0, 75.0])  # baseline at m = 1
    (caa,) = scale_series(results, "strength")
    assert (caa.name, caa.x, caa.y) == ("caa", [0.0, 1.0], [75.0, 0.0])  # baseline at s = 0
    assert caa.low[1] == 100 * results.conditions["caa-s1"].refusal.low
    (quality,) = scale_series(results, "strength", "quality")
    assert len(quality.y) == 2 and all(math.isnan(y) for y in quality.y)  # no reply long enough to count
    cna, base = sparsity_series(results)
    assert cna.x == [100 * 2 / 288, 100 * 5 / 288] and cna.y == [50.0, 25.0] and base.y == [75.0, 75.0]


def test_quality_compares_compliant_replies_at_matched_length() -> None:
    """Quality reads only compliant replies, each cut to the same number of words; refusals, degenerate
    replies and replies too short to cut are left out (and counted in the cell)."""
    results = _results()
    caa, base = results.conditions["caa-s1"], results.conditions["baseline"]  # C C C degenerate / R R R C
    caa.harmful[0].text = " ".join(["one two three four"] * 10)  # 40 words: 4 distinct 4-grams in 32
    caa.harmful[1].text = " ".join(f"w{i}" for i in range(50))  # 50 distinct words
    caa.harmful[3].text = " ".join(f"x{i}" for i in range(50))  # long, but degenerate
    base.harmful[0].text = " ".join(f"r{i}" for i in range(50))  # long, but a refusal
    assert tables.quality_values(caa) == [4 / 29, 1.0, None, None]
    assert tables.quality_values(base) == [None, None, None, None]
    assert matched_quality("a b c") is None and matched_quality("a b c d", words=4) == 1.0
    (quality,) = scale_series(results, "strength", "quality")
    assert math.isnan(quality.y[0]) and quality.y[1] == pytest.approx((4 / 29 + 1.0) / 2)
    md = render_markdown(results)
    assert tables.QUALITY_RULE in md
    row = next(line for line in md.splitlines() if line.startswith("| caa s=1 |"))
    assert f"{(4 / 29 + 1.0) / 2:.3f}" in row and "n=2" in row


def test_differences_of_continuous_metrics_carry_paired_intervals() -> None:
    """The report's comparison table: every condition minus the baseline and minus the circuit, on each
    continuous metric, with a paired bootstrap interval and its count."""
    results = _results()
    caa = results.conditions["caa-s1"]
    caa.kl_first, caa.kl_mean = [0.3, 0.5], [0.2, 0.4]
    d = tables.differences(results.conditions["cna-m0-n5"], caa)
    assert d.kl_first.value == pytest.approx(0.39) and d.kl_first.n == 2
    assert d.kl_first.low <= d.kl_first.value <= d.kl_first.high
    assert d.perplexity.value == pytest.approx(0.0) and d.perplexity.n == 4  # same NLL per token
    assert d.quality.n == 0 and d.corpus_perplexity.n == 0  # no reply counts; no corpus measured
    other = dataclasses.replace(caa, harmful=caa.harmful[:3])
    assert tables.differences(results.baseline, other).perplexity.n == 0  # other prompts: not paired
    md = render_markdown(results)
    assert "## Paired differences" in md
    row = next(line for line in md.splitlines() if line.startswith("| caa s=1 - cna m=0 |"))
    assert "+0.390 [+0.290, +0.490] (n=2)" in row and "| - |" in row
    assert any(line.startswith("| cna m=0 [matched-0] - baseline |") for line in md.splitlines())


def test_html_is_self_contained_and_escaped(tmp_path: Path) -> None:
    page = render_html(_results())
    # refusal and quality against m and against s, the sparsity curve, one layer chart
    assert page.count("<svg") == 6
    for title in (
        "Refusal vs multiplier",
        "Quality vs multiplier",
        "Refusal vs strength",
        "Quality vs strength",
    ):
        assert title in page
    assert "&lt;b&gt;" in page and "<b>" not in page.replace("<body>", "")
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "")
    md, html_path = write_reports(_results(), tmp_path)
    assert md.read_text().startswith("# neurogate study tiny-abc")
    assert html_path.read_text() == page


def test_judge_agreement_counts_only_changed_replies_that_reach_the_judges() -> None:
    """Agreement is read on the distinct replies that reach the judges and differ from the baseline's:
    the unsteered model's own replies and degenerate ones (classed before any judge) are left out and
    counted. Two judges that give every counted reply one class agree fully, but Cohen's kappa is 0/0: it
    is stored as None (results.json stays valid JSON) and the report says why, instead of writing NaN."""
    base = _result("baseline", "baseline", "baseline", None, [R, R, R, R])
    for reply in (*base.harmful, *base.benign):
        reply.classes["local"] = reply.classes["keyword"]
    mixed = _result("cna-m0-n5", "cna m=0", "cna", 0.0, [R, C, C, "degenerate"], 5)
    for reply, verdict in zip(mixed.harmful, ("refusal", "compliance", "refusal", "degenerate"), strict=True):
        reply.classes["local"] = verdict  # type: ignore[assignment]
    mixed.harmful[0].text = base.harmful[0].text  # a stock refusal the circuit did not change
    both = analysis.agreement({"baseline": base, "cna-m0-n5": mixed}, ["keyword", "local"])
    # pooled with the 5 unchanged replies and the degenerate one, the judges would agree 6 times in 7
    assert both == {
        "keyword / local": {
            "agreement": 0.5,
            "kappa": 0.0,
            "n": 2.0,
            "degenerate": 1.0,
            "unchanged": 4.0,
            "scope": 1.0,
        }
    }
    assert analysis.agreement({"baseline": base}, ["keyword", "local"])["keyword / local"]["n"] == 0.0
    one = _result("cna-m0-n5", "cna m=0", "cna", 0.0, [R, R, R], 5)
    for reply in (*one.harmful, *one.benign):
        reply.classes["local"] = "refusal"
    flat = analysis.agreement({"baseline": base, "cna-m0-n5": one}, ["keyword", "local"])
    assert flat["keyword / local"]["agreement"] == 1.0 and flat["keyword / local"]["kappa"] is None
    json.dumps(flat, allow_nan=False)
    results = dataclasses.replace(
        _results(),
        conditions={"baseline": base, "cna-m0-n5": one},
        agreement=flat,
        judges=["keyword", "local"],
    )
    results.sweep = ["baseline", "cna-m0-n5"]
    results.controls, results.sparsity = [], []
    md = render_markdown(results)
    assert "undefined (one class)" in md
    assert "over the 3 distinct replies that reach the judges and differ from the baseline's" in md
    assert "0 degenerate replies" in md and "4 that are the unsteered model's own" in md
