"""The terminal results table: as many columns as fit, headline ones first, no number cut short."""

from __future__ import annotations

import io

from rich.console import Console
from rich.table import Table

from neurogate.cli.evaluation_options import results_table
from neurogate.evaluation.engine import Evaluator
from neurogate.evaluation.judges import KeywordJudge
from neurogate.evaluation.settings import EvalSettings
from neurogate.models.loading import LoadedModel


def _render(table: Table, width: int) -> str:
    console = Console(width=width, record=True, file=io.StringIO())
    console.print(table)
    return console.export_text()


def test_table_fits_the_terminal_and_keeps_the_headline(lm: LoadedModel) -> None:
    settings = EvalSettings(batch_size=4, max_new_tokens=3, kl_tokens=2)
    ev = Evaluator(
        lm, ["Say hi.", "Name a colour."], ["Count to three."], judges=[KeywordJudge()], settings=settings
    )
    results = [ev.baseline()]
    for width in (200, 60):
        text = _render(results_table("sweep", results, width=width), width)
        assert "condition" in text and "refusal [95% CI]" in text and "baseline" in text
        assert str(results[0].refusal) in text  # the rate and its interval, whole
        assert "…" not in text  # nothing cut to an ellipsis
        assert max(len(line) for line in text.splitlines()) <= width
        assert "reply ppl" not in text  # not measured, so not shown
        assert ("tokens/s" in text) == (width == 200)
        # the title (which names the judge) may wrap in a narrow terminal
        assert ("(the columns that fit" in " ".join(text.split())) == (width == 60)


def test_table_names_its_judge_and_shows_unmeasured_redirects_as_na(lm: LoadedModel) -> None:
    settings = EvalSettings(batch_size=4, max_new_tokens=3, kl_tokens=2)
    ev = Evaluator(lm, ["Say hi."], [], judges=[KeywordJudge()], settings=settings)
    text = " ".join(_render(results_table("sweep", [ev.baseline()], width=200), 200).split())
    assert "sweep (keyword judge only, uncalibrated)" in text
    assert "redirect" in text and " n/a " in text
    assert "redirect: n/a, not measured: the keyword judge cannot tell redirects apart" in text
