"""The paper's experiments one at a time: `sparsity`, `layers` and `base-vs-instruct`."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from neurogate import prompts
from neurogate.atomic import write_json_atomic
from neurogate.cli import app as cli
from neurogate.cli import evaluation_options as opts
from neurogate.cli.config_file import ConfigOpt, Flag, layered
from neurogate.cli.judge_options import NO_JUDGE_OPTIONS, JudgeOptions, judge_options
from neurogate.errors import ConfigError
from neurogate.outputs import check_dir_output, check_file_target

if TYPE_CHECKING:
    from neurogate.study.experiments import ShiftResult


@cli.app.command(rich_help_panel=cli.EVAL)
@judge_options
def sparsity(
    model: cli.ModelOpt = cli.DEFAULT_SPEC,
    fractions: Annotated[str, typer.Option("--fractions", help="Circuit sizes as shares of all neurons.")] = (
        "0.0001,0.0003,0.001,0.003,0.01"
    ),
    eval_set: opts.EvalOpt = "builtin:harmful-eval",
    positive: opts.PositiveOpt = "builtin:harmful",
    negative: opts.NegativeOpt = "builtin:benign",
    n_eval: opts.NEvalOpt = None,
    max_new_tokens: opts.TokensOpt = 48,
    judging: JudgeOptions = NO_JUDGE_OPTIONS,
    config: ConfigOpt = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Folder for per-condition results.")] = None,
    dtype: cli.DtypeOpt = "auto",
    device: cli.DeviceOpt = "auto",
    trust_remote_code: cli.TrustOpt = False,
    quiet: opts.QuietOpt = False,
) -> None:
    """Refusal after ablating circuits of several sizes (prefixes of one ranking, discovered once).

    Example: neurogate sparsity --model zoo:qwen2.5-coder-1.5b-instruct --fractions 0.0001,0.001,0.01
    """
    from neurogate import settings as settings_mod
    from neurogate.evaluation import tables
    from neurogate.evaluation.conditions import baseline
    from neurogate.evaluation.engine import Evaluator
    from neurogate.evaluation.preflight import check_evaluation
    from neurogate.evaluation.results import ResultStore
    from neurogate.evaluation.settings import EvalSettings
    from neurogate.study.experiments import discover_for_sparsity, sparsity_conditions, sparsity_sizes

    evaluation = _evaluation(EvalSettings, max_new_tokens, judging, config)
    check_evaluation(evaluation)
    if out is not None:
        check_dir_output(out, "--out")
        cli.note_saved(f"finished conditions are stored under {out}; a rerun skips them")
    lm = cli.load(model, dtype, device, trust_remote_code)
    sizes = sparsity_sizes(lm.adapter.n_neurons, cli.parse_floats(fractions, "--fractions"))
    harmful = prompts.load(eval_set, limit=n_eval)
    prompts.check_leakage([prompts.load(positive), prompts.load(negative)], harmful, strict=True)
    ranking = discover_for_sparsity(lm, positive, negative, sizes, progress=not quiet)
    evaluator = Evaluator(lm, harmful.prompts, [], circuit=ranking, settings=evaluation)
    key = settings_mod.digest(
        {
            "model": model,
            "dtype": str(lm.dtype),
            "ranking": ranking.to_dict()["neurons"],
            "eval": harmful.sha256,
            "evaluation": settings_mod.to_dict(evaluation),
            "judges": [j.config() for j in evaluator.classifier.judges],  # URLs/models from the environment
        }
    )
    evaluator.store = ResultStore(out / key) if out is not None else None
    plan = [baseline(), *sparsity_conditions(sizes)]
    with opts.condition_progress(len(plan), quiet) as advance:
        results = evaluator.run_all(plan, advance)
    judged = tables.judged_by(results[0].judge)
    table = Table(
        title=f"sparsity on {model} ({lm.adapter.n_neurons:,} MLP neurons; {judged})",
        caption=tables.redirect_note(results),
    )
    for col in ("neurons", "% of all", "refusal % [95% CI]", "redirect %", "quality"):
        table.add_column(col, justify="right")
    for r in results:
        n = r.n_neurons or 0
        table.add_row(
            str(n),
            f"{100 * n / lm.adapter.n_neurons:.3f}",
            str(r.refusal),
            tables.rate_cell(r, "redirect"),
            f"{r.quality:.3f}",
        )
    cli.console.print(table)


@cli.app.command(rich_help_panel=cli.EVAL)
def layers(
    model: cli.ModelOpt = cli.DEFAULT_SPEC,
    behaviours: Annotated[
        str,
        typer.Option(
            "--behaviours",
            help="refusal and/or built-in battery contrast names, comma-separated (default: refusal, "
            "code-vs-poetry, french-vs-english).",
            show_default=False,  # one long word: the help column would cut it at 80 columns
        ),
    ] = "refusal,code-vs-poetry,french-vs-english",
    positive: opts.PositiveOpt = "builtin:harmful",
    negative: opts.NegativeOpt = "builtin:benign",
    fraction: Annotated[float, typer.Option("--fraction", help="Share of all MLP neurons to keep.")] = 0.001,
    dtype: cli.DtypeOpt = "auto",
    device: cli.DeviceOpt = "auto",
    trust_remote_code: cli.TrustOpt = False,
) -> None:
    """Where each behaviour's circuit sits: neurons per layer and the share in the last quarter.

    Example: neurogate layers --model zoo:smollm2-135m-instruct --behaviours refusal,code-vs-poetry
    """
    from neurogate.study.experiments import layer_localisation

    contrasts = {name: (pos, neg) for name, pos, neg in prompts.battery()}
    chosen: list[tuple[str, Any, Any]] = []
    for name in cli.parse_names(behaviours, "--behaviours"):
        if name == "refusal":
            chosen.append((name, positive, negative))
        elif name in contrasts:
            chosen.append((name, *contrasts[name]))
        else:
            close = difflib.get_close_matches(name, [*contrasts, "refusal"], n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            known = ", ".join(contrasts)
            raise ConfigError(f"unknown behaviour {name!r}; use refusal or one of: {known}.{hint}")
    lm = cli.load(model, dtype, device, trust_remote_code)
    profiles = layer_localisation(lm, chosen, fraction=fraction, universal_filter=False, progress=False)
    table = Table(title=f"layer localisation on {model} ({lm.adapter.n_layers} layers)")
    for col in ("behaviour", "neurons", "late share", "neurons per layer"):
        table.add_column(col)
    for p in profiles:
        per = ", ".join(f"L{k}:{v}" for k, v in p.per_layer.items())
        table.add_row(Text(p.behaviour), str(p.n_neurons), f"{100 * p.late_share:.0f}%", per)
    cli.console.print(table)



def _evaluation(kind: type[Any], max_new_tokens: int, judging: JudgeOptions, config: Path | None) -> Any:
    """The evaluation settings of `sparsity` and `base-vs-instruct`, built like every command's: the
    defaults, then ``config``'s ``[evaluation]`` table, then the flags given."""
    flags: dict[str, Any] = {"max_new_tokens": Flag("max_new_tokens", max_new_tokens), **judging.settings()}
    return layered(kind, flags, config=config, section="evaluation")

@cli.app.command("base-vs-instruct", rich_help_panel=cli.EVAL)
@judge_options
def base_vs_instruct(
    instruct: Annotated[
        str, typer.Option("--instruct", help="The instruction-tuned model.")
    ] = cli.DEFAULT_SPEC,
    base: Annotated[str, typer.Option("--base", help="The base model (raw prompts).")] = "zoo:gemma-3-270m",
    eval_set: opts.EvalOpt = "builtin:harmful-eval",
    positive: opts.PositiveOpt = "builtin:harmful",
    negative: opts.NegativeOpt = "builtin:benign",
    n_eval: opts.NEvalOpt = 32,
    max_new_tokens: opts.TokensOpt = 40,
    fraction: Annotated[float, typer.Option("--fraction", help="Share of all MLP neurons to keep.")] = 0.001,
    judging: JudgeOptions = NO_JUDGE_OPTIONS,
    config: ConfigOpt = None,
    # a str, not a Path: a trailing slash (a folder was meant) must reach the output check
    out: Annotated[str | None, typer.Option("--out", "-o", help="Write the results as JSON here.")] = None,
    dtype: cli.DtypeOpt = "auto",
    device: cli.DeviceOpt = "auto",
) -> None:
    """The same pipeline on an instruct and a base model: does ablation change behaviour or only content?

    Example: neurogate base-vs-instruct --instruct zoo:qwen2.5-coder-1.5b-instruct --base zoo:gemma-3-270m
    """
    from neurogate.evaluation.preflight import check_evaluation
    from neurogate.evaluation.settings import EvalSettings
    from neurogate.study.experiments import behaviour_shift

    harmful = prompts.load(eval_set, limit=n_eval)
    prompts.check_leakage([prompts.load(positive), prompts.load(negative)], harmful, strict=True)
    settings = _evaluation(EvalSettings, max_new_tokens, judging, config)
    check_evaluation(settings)
    if out is not None:
        check_file_target(out, "--out", example="base-vs-instruct.json")
    for option, spec in (("instruct", instruct), ("base", base)):  # both, before the first pipeline
        cli.preflight_model(spec, explicit=cli.given(option))
    shifts = []
    for spec in (instruct, base):
        lm = cli.load(spec, dtype, device)
        shift = behaviour_shift(
            lm,
            positive,
            negative,
            harmful.prompts,
            settings=settings,
            fraction=fraction,
            progress=False,
        )
        shifts.append(shift)
        del lm
    _print_shifts(shifts)
    if out is not None:
        write_json_atomic(out, [s.to_dict() for s in shifts])
        cli.console.print(f"wrote {out}", markup=False, highlight=False)


def _print_shifts(shifts: list[ShiftResult]) -> None:
    """The base-vs-instruct table and two example replies per model."""
    from neurogate.evaluation import tables

    judges = sorted({s.baseline.judge for s in shifts})
    table = Table(
        title="base vs instruct: ablating each model's own circuit "
        f"(refusal: {', '.join(tables.judged_by(j) for j in judges)})"
    )
    for col in (
        "model",
        "prompts",
        "neurons",
        "refusal before",
        "refusal after",
        "quality before",
        "quality after",
        "replies changed",
        "verdict",
    ):
        table.add_column(col)
    for s in shifts:
        table.add_row(
            Text(s.model),
            "chat" if s.chat else "raw",
            str(s.n_neurons),
            str(s.baseline.refusal),
            str(s.steered.refusal),
            f"{s.baseline.quality:.3f}",
            f"{s.steered.quality:.3f}",
            f"{100 * s.changed_share:.0f}%",
            s.verdict,
        )
    cli.console.print(table)
    for s in shifts:
        for ex in s.examples[:2]:
            cli.console.print(f"[bold]{escape(s.model)}[/] | {escape(ex['prompt'])}", highlight=False)
            cli.console.print(f"  before: {ex['baseline'][:200]!r}", markup=False, highlight=False)
            cli.console.print(f"  after:  {ex['steered'][:200]!r}", markup=False, highlight=False)
