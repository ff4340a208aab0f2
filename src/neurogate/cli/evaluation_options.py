"""Options and output the evaluation commands share: prompt-set and judge options, the results table and
a progress bar over conditions."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from neurogate.cli import app as cli
from neurogate.evaluation.conditions import Condition
from neurogate.evaluation.engine import TABLE_COLUMNS, table_rows
from neurogate.evaluation.results import ConditionResult

EvalOpt = Annotated[
    str, typer.Option("--eval", "-e", help="Harmful prompts to measure refusal on: file or builtin:NAME.")
]
BenignOpt = Annotated[
    str, typer.Option("--benign", "-b", help="Benign prompts for over-refusal and KL: file or builtin:NAME.")
]
PositiveOpt = Annotated[str, typer.Option("--positive", "-p", help="Discovery prompts with the behaviour.")]
NegativeOpt = Annotated[str, typer.Option("--negative", "-n", help="Discovery prompts not showing it.")]
NEvalOpt = Annotated[int | None, typer.Option("--n-eval", help="Use the first N evaluation prompts.")]
NBenignOpt = Annotated[int | None, typer.Option("--n-benign", help="Use the first N benign prompts.")]
TokensOpt = Annotated[int, typer.Option("--max-new-tokens", help="Greedy reply length in tokens.")]
JudgeOpt = Annotated[str, typer.Option("--judge", help="Refusal judge: keyword (offline) or llm.")]
JudgeUrlOpt = Annotated[
    str | None, typer.Option("--judge-url", help="OpenAI-compatible base URL (or NEUROGATE_JUDGE_URL).")
]
JudgeModelOpt = Annotated[
    str | None, typer.Option("--judge-model", help="Judge model name (or NEUROGATE_JUDGE_MODEL).")
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]


def results_table(title: str, results: Sequence[ConditionResult]) -> Table:
    table = Table(title=title)
    for col in TABLE_COLUMNS:
        table.add_column(col, justify="left" if col == "condition" else "right")
    for row in table_rows(results):
        table.add_row(*row)
    return table


@contextmanager
def live_progress(quiet: bool, description: str, total: int | None) -> Iterator[Any]:
    """A rich progress bar on stderr with spinner, counts, elapsed and remaining time; yields
    ``(progress, task)``, or ``None`` when ``quiet``."""
    if quiet:
        yield None
        return
    with Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=cli.err_console,
    ) as progress:
        yield progress, progress.add_task(description, total=total)


@contextmanager
def condition_progress(total: int, quiet: bool) -> Iterator[Any]:
    """A progress bar over conditions; yields the callback the evaluator calls (``None`` when quiet)."""
    with live_progress(quiet, "conditions", total) as live:
        if live is None:
            yield None
            return
        progress, task = live

        def advance(cond: Condition, result: ConditionResult, cached: bool) -> None:
            note = " (stored)" if cached else ""
            progress.update(task, advance=1, description=f"{cond.label}{note}: refusal {result.refusal}")

        yield advance
