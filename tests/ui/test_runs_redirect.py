"""The explorer's run views of runs stored before redirects existed: they load, every rate names its judge,
and redirect is marked not measured (with the reason) instead of 0%."""

from __future__ import annotations

from pathlib import Path

import pytest

from neurogate.errors import NeurogateError
from neurogate.study.results import StudyResults
from neurogate.tuning import TuneResults
from neurogate.ui.runs import replies_view, run_view, tune_view

DATA = Path(__file__).parents[1] / "data"


def test_a_study_stored_before_redirects_shows_redirect_as_not_measured() -> None:
    results = StudyResults.load(DATA / "v2-study-results.json")
    view = run_view(results, "old")
    for row in view["conditions"]:
        assert row["redirect_unknown"] == "stored before redirects existed"
        assert "redirect" not in row["rates"]["harmful"] and "refusal" in row["rates"]["harmful"]
        assert row["judged"] == "keyword judge only, uncalibrated"
    with pytest.raises(NeurogateError, match="no redirect count under the keyword judge: stored before"):
        replies_view(results.conditions, "baseline", "harmful", "redirect")
    assert replies_view(results.conditions, "baseline", "harmful", "degenerate")["k"] == 4


def test_a_search_stored_before_redirects_names_the_judge_of_its_front() -> None:
    view = tune_view(TuneResults.load(DATA / "v2-tune.json"), "old-search")
    assert view["pareto"]["judged"] == "keyword judge only, uncalibrated"
    assert {row["redirect_unknown"] for row in view["conditions"]} == {"stored before redirects existed"}
