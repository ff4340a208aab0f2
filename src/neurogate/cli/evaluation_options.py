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
from neurogate.errors import ConfigError
from neurogate.evaluation import tables
from neurogate.evaluation.conditions import Condition
from neurogate.evaluation.judges.local import DEFAULT_MODEL as DEFAULT_JUDGE_MODEL
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
JudgeOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--judge",
        help="Judge(s): keyword (offline, instant), local (a local model reads each reply), endpoint (an "
        "OpenAI-compatible server). Repeat or comma-separate; the first gives the headline numbers.",
    ),
]
LocalJudgeOpt = Annotated[
    str | None,
    typer.Option(
        "--local-judge-model",
        help=f"Model the local judge runs (default: {DEFAULT_JUDGE_MODEL}, see docs/judges.md).",
    ),
]
EndpointUrlOpt = Annotated[
    str | None, typer.Option("--endpoint-url", help="Endpoint judge: base URL (or NEUROGATE_JUDGE_URL).")
]
EndpointModelOpt = Annotated[
    str | None,
    typer.Option("--endpoint-model", help="Endpoint judge: model name (or NEUROGATE_JUDGE_MODEL)."),
]
OldJudgeUrlOpt = Annotated[str | None, typer.Option("--judge-url", hidden=True)]
OldJudgeModelOpt = Annotated[str | None, typer.Option("--judge-model", hidden=True)]
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


def judge_settings(
    judge: list[str] | None,
    local_judge_model: str | None,
    endpoint_url: str | None,
    endpoint_model: str | None,
    old_url: str | None = None,
    old_model: str | None = None,
) -> dict[str, Any]:
    """The judge part of :class:`EvalSettings` from the CLI's judge options (renamed flags are refused)."""
    if old_url is not None:
        raise ConfigError("--judge-url is now --endpoint-url (the 'llm' judge is now called 'endpoint')")
    if old_model is not None:
        raise ConfigError("--judge-model is now --endpoint-model (the 'llm' judge is now called 'endpoint')")
    names = [n.strip() for item in (judge or ["keyword"]) for n in item.split(",") if n.strip()]
    out: dict[str, Any] = {"judges": tuple(names)}
    given = {
        "local_judge_model": local_judge_model,
        "endpoint_url": endpoint_url,
        "endpoint_model": endpoint_model,
    }
    out.update({k: v for k, v in given.items() if v is not None})
    return out


def results_table(title: str, results: Sequence[ConditionResult]) -> Table:
    table = Table(title=title)
    for col in tables.COLUMNS:
        table.add_column(col, justify="left" if col == "condition" else "right")
    for row in tables.rows(results):
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
