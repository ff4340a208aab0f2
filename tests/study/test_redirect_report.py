"""Reports of stored runs: a study and a search stored before redirects existed load and say that redirect
was not measured; a run whose judge measured redirects tables and charts them. Every rate names its judge
and says it is uncalibrated."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from neurogate.evaluation.results import RESULT_VERSION
from neurogate.study.report import render_html, render_markdown, scale_series
from neurogate.study.results import StudyResults
from neurogate.tuning import TuneResults
from neurogate.tuning.report import objective
from neurogate.tuning.report import render_markdown as render_tune

DATA = Path(__file__).parents[1] / "data"


def _row(md: str, label: str) -> list[str]:
    """The cells of the first table row of ``md`` that starts with ``label``."""
    line = next(line for line in md.splitlines() if line.startswith(f"| {label} |"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_a_study_stored_before_redirects_loads_and_says_so() -> None:
    old = StudyResults.load(DATA / "v2-study-results.json")
    assert all(c.version == 2 and c.redirect is None for c in old.conditions.values())
    md = render_markdown(old)
    headline = md.split("## Headline")[1].split("## Every judge")[0]
    assert "redirect %" in headline and _row(headline, "baseline")[3] == "n/a"
    assert "redirect: n/a, not measured: stored before redirects existed (4 of 4 conditions)" in headline
    assert "under the keyword judge (keyword judge only, uncalibrated)" in headline
    assert "keyword: refusal / redirect / compliance" in md
    page = render_html(old)
    assert "Refusal vs multiplier (keyword judge)" in page and "Redirect vs" not in page
    assert "refusal % (95% CI), uncalibrated" in page


def _with_redirects(results: StudyResults) -> StudyResults:
    """``results`` as if its judge had told redirects apart, with two of the CNA replies redirects."""
    conditions = {
        k: dataclasses.replace(c, version=RESULT_VERSION, redirect_known={"keyword": True})
        for k, c in results.conditions.items()
    }
    cna = conditions["cna-m0-n6"]
    for reply in cna.harmful[:2]:
        reply.classes["keyword"] = "redirect"
    return dataclasses.replace(results, conditions=conditions)


def test_measured_redirects_are_tabled_and_charted() -> None:
    results = _with_redirects(StudyResults.load(DATA / "v2-study-results.json"))
    md = render_markdown(results)
    headline = md.split("## Headline")[1].split("## Every judge")[0]
    assert _row(headline, "cna m=0")[3].startswith("50% [") and _row(headline, "baseline")[3].startswith(
        "0% ["
    )
    assert "not measured" not in headline
    (cna,) = [s for s in scale_series(results, "multiplier", "redirect") if s.name == "cna"]
    assert (cna.x, cna.y) == ([0.0, 1.0], [50.0, 0.0])  # baseline at m = 1
    assert "Redirect vs multiplier (keyword judge)" in render_html(results)


def test_a_search_stored_before_redirects_loads_and_reports() -> None:
    old = TuneResults.load(DATA / "v2-tune.json")
    assert objective(old) == ("keyword", False)
    assert all(r.redirect is None for r in old.final.values())
    md = render_tune(old)
    assert "Trials maximise compliance under the keyword judge (keyword judge only, uncalibrated)" in md
    assert "redirects are n/a (the keyword judge cannot tell them apart" in md
    assert "Baseline on the tuning prompts (keyword judge only, uncalibrated): refusal 0%, redirect n/a" in md
    assert "stored before redirects existed (3 of 3 conditions)" in md
    held = md.split("## Held-out check")[1].split("## Pareto")[0]
    assert _row(held, "tuned")[3] == "n/a"
    assert "| tuned | keyword (judge only, uncalibrated) |" in held
