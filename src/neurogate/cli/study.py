"""`neurogate run`: the whole study, resumable, with its report (a thin layer over the study package)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from neurogate.cli import app as cli
from neurogate.cli import evaluation_options as opts
from neurogate.cli.config_file import ConfigOpt, Flag, layered
from neurogate.cli.judge_options import NO_JUDGE_OPTIONS, JudgeOptions, judge_options
from neurogate.errors import NeurogateError
from neurogate.outputs import check_dir_output

RUNS = Path("runs")


@cli.app.command(rich_help_panel=cli.EVAL)
@judge_options
def run(
    model: cli.ModelOpt = cli.DEFAULT_SPEC,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder with a sub-folder per run.")] = RUNS,
    config: ConfigOpt = None,
    quick: Annotated[
        bool, typer.Option("--quick", help="A reduced study (fewer prompts and tokens) for demos.")
    ] = False,
    eval_set: Annotated[str | None, typer.Option("--eval", "-e", help="Harmful evaluation prompts.")] = None,
    benign: Annotated[str | None, typer.Option("--benign", "-b", help="Benign evaluation prompts.")] = None,
    n_eval: opts.NEvalOpt = None,
    n_benign: opts.NBenignOpt = None,
    max_new_tokens: Annotated[int | None, typer.Option("--max-new-tokens", help="Reply length.")] = None,
    judging: JudgeOptions = NO_JUDGE_OPTIONS,
    circuit: Annotated[
        list[Path] | None,
        typer.Option(
            "--circuit",
            "-c",
            help="A circuit file (e.g. tuned-circuit.json from `neurogate tune`) to evaluate at the "
            "intervention it records, beside the discovered circuit. Repeatable.",
        ),
    ] = None,
    sparsity: Annotated[
        str | None,
        typer.Option(
            "--sparsity",
            help="Also ablate the circuit's top neurons at these shares of all MLP neurons, e.g. "
            "0.0001,0.001,0.01 (the sparsity curve; off by default).",
        ),
    ] = None,
    fronts: Annotated[
        str | None,
        typer.Option(
            "--fronts",
            help="Trace each method's front of compliance against damage: default (fits the default "
            "study's budget), full (every method more finely, CNA at several multipliers) or off.",
        ),
    ] = None,
    reply_perplexity: Annotated[
        bool,
        typer.Option(
            "--reply-perplexity",
            help="Score the harmful replies under the unsteered model too (off by default: one more "
            "teacher-forced pass over every reply; --no-reply-perplexity turns off a --config's).",
        ),
    ] = False,
    no_reply_perplexity: Annotated[bool, typer.Option("--no-reply-perplexity", hidden=True)] = False,
    dtype: cli.DtypeOpt = "auto",
    device: cli.DeviceOpt = "auto",
    quiet: opts.QuietOpt = False,
) -> None:
    """Run the whole study (discovery, the methods, specificity controls, layers) and report it.

    Writes results.json, report.md and report.html. Rerunning resumes (finished conditions are kept).
    Replies are judged by local (the headline: it tells redirects apart) and keyword by default, by
    keyword alone with --quick.
    Settings come from the defaults (or --quick), then --config, then the flags given here.

    Example: neurogate run --model zoo:qwen2.5-coder-1.5b-instruct --out runs --quick
    """
    from neurogate.evaluation.preflight import check_evaluation
    from neurogate.study.config import StudyConfig
    from neurogate.study.pipeline import Study

    perplexity = True if reply_perplexity else (False if no_reply_perplexity else None)  # None: --config's
    flags = {
        "model": Flag("model", model),
        "prompts.eval": eval_set,
        "prompts.benign": benign,
        "prompts.n_eval": n_eval,
        "prompts.n_benign": n_benign,
        "evaluation.max_new_tokens": max_new_tokens,
        "evaluation.reply_perplexity": perplexity,
        **{f"evaluation.{k}": v for k, v in judging.settings().items()},
        "circuits": [str(c) for c in circuit] if circuit else None,
        "sparsity": cli.parse_floats(sparsity, "--sparsity") if sparsity is not None else None,
        "fronts": fronts,
        "dtype": Flag("dtype", dtype),
        "device": Flag("device", device),
    }
    base = StudyConfig.quick() if quick else StudyConfig()
    cfg = layered(StudyConfig, flags, config=config, section="study", base=base)
    check_dir_output(out, "--out")
    check_evaluation(cfg.evaluation)
    cli.preflight_model(cfg.model, explicit=cli.given("model") or cfg.model != cli.DEFAULT_SPEC)
    with _study_progress(quiet) as on_event:
        study = Study(cfg, out, None, on_event)
        cli.note_saved(f"every finished stage is stored under {study.dir}; a rerun reads it back")
        cli.console.print(f"run {study.run_id} -> {study.dir}", markup=False, highlight=False)
        result = study.run()
    cli.console.print(opts.results_table("sweep", [result.conditions[k] for k in result.sweep]))
    for c in result.controls:
        cli.console.print(
            f"control {c.name} ({c.type}): vs circuit {c.vs_circuit}", markup=False, highlight=False
        )
    cli.console.print(
        f"[green]done:[/] {escape(str(study.dir / 'report.html'))} (and report.md, results.json)",
        highlight=False,
    )
    _audit_hint(study.dir)


def _audit_hint(run_dir: Path) -> None:
    """Say how to calibrate the rates above when no one has labelled this run's replies yet: a judge
    reads many redirects as compliance, and a blind audit of 30 replies per condition corrects it."""
    from neurogate.evaluation.audit_labels import LabelStore

    if LabelStore(run_dir).path.is_file():
        return
    cli.console.print(
        "the rates above are judge only, uncalibrated; to calibrate them, label a blind sample of the "
        f"replies (30 per condition): neurogate audit {run_dir} --annotator NAME (a second annotator gives "
        f"kappa), then neurogate report {run_dir}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


@contextmanager
def _study_progress(quiet: bool) -> Iterator[Any]:
    with opts.live_progress(quiet, "starting", None) as live:
        if live is None:
            yield None
            return
        progress, task = live
        # a plan (how many conditions or points follow) comes just before its stage's name: both are
        # shown together, so no line pairs the old stage's name with the new count
        planned: dict[str, float] = {}

        def on_event(kind: str, info: dict[str, Any]) -> None:
            if kind == "stage":
                progress.update(task, description=info["name"], **planned)
                planned.clear()
            elif kind == "plan":
                planned.update(total=info["total"], completed=0)
            elif kind in ("condition", "front"):
                note = " (stored)" if info["cached"] else f" ({info['result'].tokens_per_s:.1f} tok/s)"
                progress.update(
                    task, advance=1, description=f"{info['label']}{note}: {opts.refusal_text(info['result'])}"
                )

        yield on_event


def _is_condition(path: Path) -> bool:
    """Whether ``path`` is a stored condition (one reply set and its verdicts, as a sweep keeps them)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and "harmful" in data and "judges" in data


def _not_a_run(given: Path, path: Path) -> str:
    """Why ``given`` (no results.json at ``path``) is not a finished run, saying what to give instead."""
    runs = sorted(p.parent for p in given.glob("*/results.json")) if given.is_dir() else []
    if runs:
        return f"{given} holds runs, not one run; give one of them, e.g. {runs[0]}"
    stored = [*given.glob("*.json"), *given.glob("*/*.json")][:50] if given.is_dir() else []
    if any(_is_condition(p) for p in stored):
        return (
            f"{given} holds a sweep's stored conditions, not a run: a sweep writes no report (`neurogate "
            "sweep ... --json` prints every column); `neurogate run` writes a run with its report"
        )
    return f"no results.json at {path}; give a folder written by `neurogate run` (a finished run)"


@cli.app.command(rich_help_panel=cli.EVAL)
def report(
    run_dir: Annotated[Path, typer.Argument(help="A run folder (holding results.json) or the file itself.")],
) -> None:
    """Write report.md and report.html again from a finished run's results.json (no model is loaded); for
    a search's folder (tune.json), tune-report.md and tune-report.html. Either picks up a new audit.

    Example: neurogate report runs/qwen2.5-coder-1.5b-instruct-1a2b3c4d5e
    """
    if run_dir.is_dir() and (run_dir / "tune.json").is_file() and not (run_dir / "results.json").is_file():
        from neurogate.tuning.final import TuneResults
        from neurogate.tuning.report import write_reports as write_tune_reports

        md, html = write_tune_reports(TuneResults.load(run_dir / "tune.json"), run_dir)
        cli.console.print(f"[green]wrote[/] {escape(str(html))} and {escape(str(md))}", highlight=False)
        return
    path = run_dir / "results.json" if run_dir.is_dir() else run_dir
    if not path.is_file():
        raise NeurogateError(_not_a_run(run_dir, path))
    from neurogate.study.report import write_reports
    from neurogate.study.results import StudyResults

    md, html = write_reports(StudyResults.load(path), path.parent)
    cli.console.print(f"[green]wrote[/] {escape(str(html))} and {escape(str(md))}", highlight=False)
