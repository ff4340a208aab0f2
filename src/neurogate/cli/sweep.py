"""`neurogate sweep`: every method at every value of its scale, tabulated (a thin layer over
:func:`neurogate.evaluation.run_sweep`). Shared evaluation options and output helpers live here too."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
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

from neurogate.cli.app import (
    DEFAULT_SPEC,
    DeviceOpt,
    DtypeOpt,
    ModelOpt,
    TrustOpt,
    app,
    console,
    err_console,
    load,
    parse_floats,
    parse_names,
)
from neurogate.discovery.circuit import Circuit
from neurogate.evaluation.conditions import Condition
from neurogate.evaluation.engine import TABLE_COLUMNS, table_rows
from neurogate.evaluation.judges import get_judge
from neurogate.evaluation.results import ConditionResult
from neurogate.evaluation.settings import EvalSettings
from neurogate.evaluation.sweep import SweepConfig, run_sweep

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
def condition_progress(total: int, quiet: bool) -> Iterator[Any]:
    """A rich progress bar over conditions (with ETA); yields the callback the evaluator calls."""
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
        console=err_console,
        transient=False,
    ) as progress:
        task = progress.add_task("conditions", total=total)

        def advance(cond: Condition, result: ConditionResult, cached: bool) -> None:
            note = " (stored)" if cached else ""
            progress.update(task, advance=1, description=f"{cond.label}{note}: refusal {result.refusal}")

        yield advance


@app.command()
def sweep(
    model: ModelOpt = DEFAULT_SPEC,
    circuit: Annotated[
        Path | None, typer.Option("--circuit", "-c", help="Circuit JSON (default: discover one now).")
    ] = None,
    eval_set: EvalOpt = "builtin:harmful-eval",
    benign: BenignOpt = "builtin:benign-eval",
    positive: PositiveOpt = "builtin:harmful",
    negative: NegativeOpt = "builtin:benign",
    methods: Annotated[str, typer.Option("--methods", help="Comma-separated: cna,caa,ablation,random.")] = (
        "cna,caa,ablation,random"
    ),
    multipliers: Annotated[
        str,
        typer.Option("--multipliers", help="cna/random: values of m (1 = unchanged = baseline, 0 ablates)."),
    ] = "1,0.75,0.5,0.25,0",
    strengths: Annotated[
        str,
        typer.Option("--strengths", help="caa/ablation: values of s (0 = unchanged = baseline, 1 = full)."),
    ] = "0,0.25,0.5,0.75,1",
    n_eval: NEvalOpt = None,
    n_benign: NBenignOpt = 40,
    max_new_tokens: TokensOpt = 48,
    judge: JudgeOpt = "keyword",
    judge_url: JudgeUrlOpt = None,
    judge_model: JudgeModelOpt = None,
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", help="Prompts per generation batch.")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Folder for per-condition results; a rerun skips finished ones."),
    ] = None,
    no_chat: Annotated[bool, typer.Option("--no-chat", help="Raw prompts, not the chat template.")] = False,
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "auto",
    trust_remote_code: TrustOpt = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
    quiet: QuietOpt = False,
) -> None:
    """Run every method at every value of its scale and tabulate refusal, quality, perplexity, KL and speed.

    Neuron methods (cna, random) take multipliers m; residual methods (caa, ablation) take strengths s.
    The unchanged value of each (m = 1, s = 0) is the shared baseline, generated once. CAA and directional
    ablation use residual directions computed from --positive/--negative.

    Example: neurogate sweep --model zoo:qwen2.5-coder-1.5b-instruct --circuit c.json --multipliers 1,0.5,0
    """
    chat = not no_chat
    evaluation = EvalSettings(
        max_new_tokens=max_new_tokens,
        batch_size=batch_size or "auto",
        chat=chat,
        judge=judge,
        judge_model=judge_model,
        judge_url=judge_url,
    )
    config = SweepConfig.from_mapping(
        {
            "eval": eval_set,
            "benign": benign,
            "positive": positive,
            "negative": negative,
            "n_eval": n_eval,
            "n_benign": n_benign,
            "methods": tuple(parse_names(methods, "--methods")),
            "multipliers": tuple(parse_floats(multipliers, "--multipliers")),
            "strengths": tuple(parse_floats(strengths, "--strengths")),
            "evaluation": evaluation,
            "discovery": {"chat": chat},
        }
    )
    judge_obj = get_judge(judge, **evaluation.judge_options())
    circ = Circuit.load(circuit) if circuit is not None else None
    lm = load(model, dtype, device, trust_remote_code)
    if circ is None and config.needs("circuit"):
        err_console.print("no --circuit given: discovering one from --positive/--negative")
    with condition_progress(len(config.plan()), quiet or as_json) as advance:
        result = run_sweep(lm, config, circuit=circ, judge=judge_obj, out=out, progress=advance)
    if result.store is not None:
        err_console.print(f"results stored under {result.store}")
    if as_json:
        console.print_json(json.dumps([r.summary() for r in result.results]))
        return
    title = f"sweep on {model}: {len(result.results[0].harmful)} harmful prompts"
    console.print(results_table(title, result.results))
