"""Options and output the evaluation commands share: prompt-set options (the judge options are
:mod:`neurogate.cli.judge_options`), the results table and a progress bar over conditions."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich import box
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
from rich.text import Text

from neurogate.cli import app as cli
from neurogate.progress import PlainProgress, on_terminal

if TYPE_CHECKING:
    from neurogate.evaluation.conditions import Condition
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
EngineOpt = Annotated[
    str,
    typer.Option(
        "--engine",
        help="Who generates the replies: local (neurogate's hooks) or openai (a server such as vLLM from "
        "`neurogate serve`, serving 'base' and each condition by its key, e.g. cna-m0).",
    ),
]
EngineUrlOpt = Annotated[
    str | None,
    typer.Option("--engine-url", help="The openai engine's base URL, e.g. http://127.0.0.1:8000/v1."),
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]
ReplyPplOpt = Annotated[
    bool,
    typer.Option(
        "--reply-perplexity",
        help="Also score the harmful replies under the unsteered model (the 'reply ppl' column; one more "
        "teacher-forced pass over every reply).",
    ),
]


#: Terminal headers (the report spells them out).
SHORT = {
    "refusal % [95% CI]": "refusal [95% CI]",
    "redirect %": "redirect",
    "compliance %": "comply",
    "degenerate %": "degen.",
    "benign refusal %": "benign ref.",
    "corpus ppl": "corpus ppl",
}
#: Which columns a narrow terminal keeps first (the report and results.json keep them all).
PRIORITY = (
    "condition",
    "refusal % [95% CI]",
    "redirect %",
    "compliance %",
    "degenerate %",
    "KL mean",
    "KL first",
    "benign refusal %",
    "neurons",
    "quality",
    "corpus ppl",
    "tokens/s",
    "reply ppl",
)


def results_table(
    title: str,
    results: Sequence[ConditionResult],
    width: int | None = None,
    rest: str = "the report has all",
) -> Table:
    """The results as a rich table for the terminal: refusal with its 95% interval, every other cell as its
    point value (results.json and the report keep every interval), and as many columns as the terminal
    (``width``, default the console's) shows without cutting a number, the headline ones first. ``rest``
    says where the columns left out can be read (a sweep has no report)."""
    from neurogate.evaluation import tables

    width = cli.console.width if width is None else width
    cols = list(tables.COLUMNS)
    rows = [
        [
            cell if col == "refusal % [95% CI]" else cell.split(" [")[0]
            for col, cell in zip(cols, row, strict=True)
        ]
        for row in tables.rows(results)
    ]

    def fit(i: int) -> int:  # every cell and the header's longest word (headers wrap, numbers never do)
        header = SHORT.get(cols[i], cols[i])
        return min(28, max([len(r[i]) for r in rows] + [len(w) for w in header.split()]))

    keep: set[int] = set()
    used, narrow = 2, False  # the table's edges
    for name in PRIORITY:
        i = cols.index(name)
        if all(r[i] == "-" for r in rows):  # e.g. reply ppl when it was not measured
            continue
        if used + fit(i) + 4 > width and keep:  # + padding and the column gap
            narrow = True
            continue
        keep.add(i)
        used += fit(i) + 4
    order = sorted(keep)
    judged = f" ({tables.judged_by(results[0].judge)})" if results else ""
    table = Table(
        title=title + judged + (f" (the columns that fit; {rest})" if narrow else ""),
        caption=tables.redirect_note(results),
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    for i in order:
        left = cols[i] == "condition"
        table.add_column(SHORT.get(cols[i], cols[i]), justify="left" if left else "right", min_width=fit(i))
    for r in rows:
        table.add_row(*[Text(r[i]) for i in order])  # names such as 'cna m=0 [paper]' are not markup
    return table


def refusal_text(result: ConditionResult) -> str:
    """A condition's refusal for a progress line, with the judge that gave it."""
    from neurogate.evaluation import tables

    return f"refusal {result.refusal} ({tables.judged_by(result.judge)})"


@contextmanager
def live_progress(quiet: bool, description: str, total: int | None) -> Iterator[Any]:
    """A rich progress bar on stderr with spinner, counts, elapsed and remaining time (plain lines when
    stderr is not a terminal); yields ``(progress, task)``, or ``None`` when ``quiet``."""
    if quiet:
        yield None
        return
    if not on_terminal():
        plain = PlainProgress()
        yield plain, plain.add_task(description, total=total)
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
            note = " (stored)" if cached else f" ({result.tokens_per_s:.1f} tok/s)"
            progress.update(task, advance=1, description=f"{cond.label}{note}: {refusal_text(result)}")

        yield advance
