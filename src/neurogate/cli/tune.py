"""`neurogate tune`: search for the circuit and intervention that best remove a behaviour at a size cap."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from neurogate.cli import app as cli
from neurogate.cli import evaluation_options as opts
from neurogate.cli.config_file import ConfigOpt, Flag, layered
from neurogate.cli.judge_options import NO_JUDGE_OPTIONS, JudgeOptions, judge_names, judge_options
from neurogate.errors import NeurogateError
from neurogate.outputs import check_dir_output

if TYPE_CHECKING:
    from neurogate.evaluation.results import ConditionResult


TrialsOpt = Annotated[
    int, typer.Option("--trials", help="At most this many trials in all (screened-out ones included).")
]
ScreenPromptsOpt = Annotated[
    int,
    typer.Option(
        "--screen-prompts",
        help="Screen each trial on the first this many tuning prompts first; one clearly worse than "
        "the trials measured in full stops there (seeded points never do). 0 turns screening off.",
    ),
]
ScreenTokensOpt = Annotated[
    int, typer.Option("--screen-tokens", help="Reply length of the screen, in tokens.")
]
QuickPromptsOpt = Annotated[
    int,
    typer.Option(
        "--quick-prompts",
        help="Before the screen, a quick one with no generation: how likely each trial keeps the "
        "refusal's opening on this many tuning prompts, and its benign KL; only the trials in the best "
        "eighth so far go on (seeded points always). 0 turns it off.",
    ),
]

# Longer than 60 lines only because every CLI option is a parameter; the body builds one config and
# calls the library.
@cli.app.command(rich_help_panel=cli.EVAL)
@judge_options
def tune(
    model: cli.ModelOpt = cli.DEFAULT_SPEC,
    config: ConfigOpt = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder with a sub-folder per search.")] = Path(
        "runs"
    ),
    budget: Annotated[
        str, typer.Option("--budget", help="Search time, e.g. 30m or 1h (then the final check).")
    ] = "30m",
    cap: Annotated[
        float,
        typer.Option(
            "--cap", help="Largest circuit, as a share of all MLP neurons (default 1%; the paper's is 0.1%)."
        ),
    ] = 0.01,
    harmful: Annotated[
        str,
        typer.Option("--harmful", help="Tuning prompts with the behaviour (a #tune half keeps #test apart)."),
    ] = "builtin:harmful-eval#tune",
    benign: Annotated[
        str, typer.Option("--benign", help="Tuning prompts without it.")
    ] = "builtin:benign-eval#tune",
    final_harmful: Annotated[
        str, typer.Option("--final-harmful", help="Held-out prompts for the one final check.")
    ] = "builtin:harmful-eval#test",
    final_benign: Annotated[str, typer.Option("--final-benign", help="Held-out benign prompts.")] = (
        "builtin:benign-eval#test"
    ),
    positive: opts.PositiveOpt = "builtin:harmful",
    negative: opts.NegativeOpt = "builtin:benign",
    n_tune: Annotated[int, typer.Option("--n-tune", help="Tuning prompts per trial.")] = 48,
    n_confirm: Annotated[
        int,
        typer.Option(
            "--n-confirm",
            help="Further tuning prompts (after the first --n-tune) on which the best trials are measured "
            "again before one is chosen; 0 chooses on the search's prompts alone.",
        ),
    ] = 48,
    trials: TrialsOpt = 200,
    screen_prompts: ScreenPromptsOpt = 8,
    screen_tokens: ScreenTokensOpt = 24,
    quick_prompts: QuickPromptsOpt = 8,
    exportable: Annotated[
        bool,
        typer.Option(
            "--exportable",
            help="Search only interventions a plain LoRA adapter or GGUF fold can serve (cna; mean writes "
            "a constant that needs a LoRA bias for PEFT or a llama.cpp control vector).",
        ),
    ] = False,
    judging: JudgeOptions = NO_JUDGE_OPTIONS,
    final_judge: Annotated[
        list[str] | None,
        typer.Option(
            "--final-judge",
            help="Judge(s) of the final held-out check (default: local,keyword; the trials use --judge, "
            "keyword,local by default). Adding one to a finished search judges its stored replies.",
        ),
    ] = None,
    dtype: cli.DtypeOpt = "auto",
    device: cli.DeviceOpt = "auto",
    quiet: opts.QuietOpt = False,
) -> None:
    """Search circuits (scorer, positions, size up to --cap, layers) and interventions for the most
    compliance at the least benign KL and over-refusal, without degenerate replies.

    The search runs on tuning prompts with short replies and is stored in SQLite: a rerun resumes it,
    and Ctrl-C keeps every finished trial. The chosen point is then checked once on held-out prompts
    with full-length replies, beside the paper's circuit. Writes tune.json, tuned-circuit.json and
    tune-report.md.

    Example: neurogate tune --budget 30m --harmful data.json#tune --final-harmful data.json#test
    """
    from neurogate.evaluation import tables
    from neurogate.evaluation.preflight import check_evaluation
    from neurogate.tuning.config import TuneConfig
    from neurogate.tuning.report import knee, objective
    from neurogate.tuning.run import run_tune

    names = {"trials": "max_trials"}  # the flags named otherwise than their setting
    given = {
        "model": model,
        "dtype": dtype,
        "device": device,
        "budget": budget,
        "cap": cap,
        "harmful": harmful,
        "benign": benign,
        "final_harmful": final_harmful,
        "final_benign": final_benign,
        "positive": positive,
        "negative": negative,
        "n_tune": n_tune,
        "n_confirm": n_confirm,
        "trials": trials,
        "exportable": exportable,
        "screen_prompts": screen_prompts,
        "screen_tokens": screen_tokens,
        "quick_prompts": quick_prompts,
    }
    flags = {
        **{names.get(param, param): Flag(param, value) for param, value in given.items()},
        **{f"evaluation.{k}": v for k, v in judging.settings().items()},
        "final_judges": judge_names(final_judge) if final_judge else None,
    }
    settings = layered(TuneConfig, flags, config=config, section="tune")
    check_dir_output(out, "--out")
    check_evaluation(settings.evaluation)
    cli.preflight_model(settings.model, explicit=cli.given("model") or settings.model != cli.DEFAULT_SPEC)
    cli.note_saved(f"every finished trial is stored under {out}; a rerun resumes the search")
    with opts.live_progress(quiet, "starting", None) as live:
        result = run_tune(settings, out, on_event=_events(live))
    from neurogate.tuning.front import served_as
    from neurogate.tuning.screen import screening_line
    from neurogate.tuning.space import multiplier_text

    ch = result.chosen
    served = served_as(ch)
    cli.console.print(
        f"chosen: {ch['scorer']}/{ch['sign']}/{ch['positions']}, {ch['neurons']} neurons, layers "
        f"{ch['first_layer']}-{ch['last_layer']}, {ch['intervention']} {multiplier_text(ch)}; {served}",
        markup=False,
        highlight=False,
    )
    trial_judge = tables.judged_by(objective(result)[0])
    confirmed = [row for row in result.extra.get("confirmation", {}).get("trials", []) if row.get("chosen")]
    if confirmed:
        row = confirmed[0]
        cli.console.print(
            f"confirmed on {result.extra['confirmation']['prompts']} more tuning prompts: compliance "
            f"{100 * row['confirmation']:.0f}% (search prompts: {100 * row['tuning']:.0f}%; {trial_judge})",
            markup=False,
            highlight=False,
        )
    for name in ("tuned", "paper"):
        cli.console.print(
            f"{name} (held out): {_rates_line(result.final[name])}", markup=False, highlight=False
        )
    k = knee(result)
    if k:
        cli.console.print(
            f"knee: {k['neurons']} neurons keep an 80% cut in refusals and redirects (tuning prompts; "
            f"{trial_judge})",
            markup=False,
            highlight=False,
        )
    screened = screening_line(result.extra.get("screening"), result.config)
    if screened:
        cli.console.print(screened, markup=False, highlight=False, soft_wrap=True)
    folder = Path(out) / result.run_id
    cli.console.print(f"[green]done:[/] {escape(str(folder / 'tune-report.md'))}", highlight=False)
    cli.console.print(
        "evaluate it in the study beside the paper's circuit: neurogate run --model "
        f"{settings.model} --circuit {folder / 'tuned-circuit.json'}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    _audit_sample(folder)


def _audit_sample(folder: Path) -> None:
    """Draw the blind audit sample of the held-out check's replies into the run folder and say how to label
    it: the judged rates above are one judge's, and an audit of 30 replies per condition calibrates them."""
    from neurogate.evaluation.audit import audit_dir, prepare_audit

    try:
        prep = prepare_audit(folder)
    except NeurogateError as exc:
        cli.err_console.print(f"no audit sample drawn: {exc}", markup=False, highlight=False, soft_wrap=True)
        return
    cli.console.print(
        f"audit sample: {len(prep.sample.items)} held-out replies, drawn blind into {audit_dir(folder)}; "
        "label them (the rates above are judge only, uncalibrated): "
        f"neurogate audit {folder} --annotator NAME",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


def _rates_line(r: ConditionResult) -> str:
    """A held-out condition's rates under the best of its judges, named, with redirect as n/a (and why)
    where that judge could not tell redirects apart."""
    from neurogate.evaluation import tables
    from neurogate.tuning.search import objective_judge

    judge = objective_judge(r)
    redirect = tables.rate_cell(r, "redirect", judge)
    why = r.redirect_unknown(judge)
    rates = r.rates(judge)
    return (
        f"refusal {rates['refusal']}, redirect {redirect}{f' ({why})' if why else ''}, compliance "
        f"{rates['compliance']}, degenerate {rates['degenerate']} ({tables.judged_by(judge)})"
    )


def _events(live: Any) -> Any:
    if live is None:
        return None
    progress, task = live

    def on_event(kind: str, info: dict[str, Any]) -> None:
        from neurogate.evaluation import tables

        if kind == "stage":
            progress.update(task, description=info["name"])
        elif kind == "trial":
            s = info["scores"]
            progress.update(
                task,
                description=f"trial {info['number']}: compliance {100 * s.compliance:.0f}% "
                f"({tables.judged_by(info['judge'])}), KL {s.kl:.3f}",
            )
        elif kind == "quick" and info["reason"] is not None:
            progress.update(
                task,
                description=f"trial {info['number']}: stopped by the quick screen "
                f"(refusal opening {100 * info['scores'].opener:.2g}%, KL {info['scores'].kl:.3f})",
            )
        elif kind == "screen" and info["reason"] is not None:
            progress.update(
                task,
                description=f"trial {info['number']}: screened out "
                f"({100 * info['scores'].compliance:.0f}% compliance on the screen)",
            )

    return on_event
