"""`neurogate run`: the whole study, resumable, with its report (a thin layer over the study package)."""

from __future__ import annotations

from collections.abc import Iterator
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

from neurogate.cli.app import DEFAULT_SPEC, DeviceOpt, DtypeOpt, ModelOpt, app, console, err_console
from neurogate.cli.sweep import NBenignOpt, NEvalOpt, QuietOpt, results_table
from neurogate.study.config import StudyConfig
from neurogate.study.pipeline import Study

RUNS = Path("runs")


def study_config(config: Path | None, quick: bool, flags: dict[str, Any]) -> StudyConfig:
    """Defaults (or ``--quick``), then the TOML file, then the flags that were given."""
    base = StudyConfig.quick() if quick else StudyConfig()
    cfg = StudyConfig.from_toml(config, base=base) if config is not None else base
    return StudyConfig.from_mapping({k: v for k, v in flags.items() if v is not None}, base=cfg)


@app.command()
def run(
    model: ModelOpt = DEFAULT_SPEC,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder with a sub-folder per run.")] = RUNS,
    config: Annotated[
        Path | None, typer.Option("--config", help="TOML file of study settings (see docs/results.md).")
    ] = None,
    quick: Annotated[
        bool, typer.Option("--quick", help="A reduced study (fewer prompts and tokens) for demos.")
    ] = False,
    eval_set: Annotated[str | None, typer.Option("--eval", "-e", help="Harmful evaluation prompts.")] = None,
    benign: Annotated[str | None, typer.Option("--benign", "-b", help="Benign evaluation prompts.")] = None,
    n_eval: NEvalOpt = None,
    n_benign: NBenignOpt = None,
    max_new_tokens: Annotated[int | None, typer.Option("--max-new-tokens", help="Reply length.")] = None,
    judge: Annotated[str | None, typer.Option("--judge", help="keyword or llm.")] = None,
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "auto",
    quiet: QuietOpt = False,
) -> None:
    """Run the whole study (discovery, four-method sweep, sparsity, random control, layers) and report it.

    Writes results.json, report.md and report.html. Rerunning resumes (finished conditions are kept).
    Settings come from the defaults (or --quick), then --config, then the flags given here.

    Example: neurogate run --model zoo:qwen2.5-coder-1.5b-instruct --out runs --quick
    """
    evaluation = {
        k: v for k, v in {"max_new_tokens": max_new_tokens, "judge": judge}.items() if v is not None
    }
    cfg = study_config(
        config,
        quick,
        {
            "model": model if model != DEFAULT_SPEC or config is None else None,
            "eval": eval_set,
            "benign": benign,
            "n_eval": n_eval,
            "n_benign": n_benign,
            "evaluation": evaluation or None,
            "dtype": dtype if dtype != "auto" else None,
            "device": device if device != "auto" else None,
        },
    )
    with _study_progress(quiet) as on_event:
        study = Study(cfg, out, None, on_event)
        console.print(f"run {study.run_id} -> {study.dir}")
        result = study.run()
    console.print(results_table("sweep", [result.conditions[k] for k in result.sweep]))
    for r in result.random_control:
        state = "inside" if r.within_baseline_ci else "outside"
        console.print(f"random control {r.key}: {state} the baseline's 95% interval")
    console.print(f"[green]done:[/] {study.dir / 'report.html'} (and report.md, results.json)")


@contextmanager
def _study_progress(quiet: bool) -> Iterator[Any]:
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
    ) as progress:
        task = progress.add_task("starting", total=None)

        def on_event(kind: str, info: dict[str, Any]) -> None:
            if kind == "stage":
                progress.update(task, description=info["name"])
            elif kind == "plan":
                progress.update(task, total=info["total"], completed=0)
            elif kind == "condition":
                note = " (stored)" if info["cached"] else ""
                progress.update(
                    task, advance=1, description=f"{info['label']}{note}: {info['result'].refusal}"
                )

        yield on_event
