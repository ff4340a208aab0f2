"""`neurogate sweep`: every method at every value of its scale, tabulated (a thin layer over
:func:`neurogate.evaluation.run_sweep`). Shared evaluation options and output helpers live here too."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from neurogate.cli import app as cli
from neurogate.cli import evaluation_options as opts
from neurogate.cli.config_file import ConfigOpt, Flag, layered
from neurogate.cli.judge_options import NO_JUDGE_OPTIONS, JudgeOptions, judge_options
from neurogate.outputs import check_dir_output


# Longer than 60 lines only because every CLI option is a parameter; the body builds one config and
# calls the library.
@cli.app.command(rich_help_panel=cli.EVAL)
@judge_options
def sweep(
    model: cli.CircuitModelOpt = cli.DEFAULT_SPEC,
    circuit: Annotated[
        Path | None, typer.Option("--circuit", "-c", help="Circuit JSON (default: discover one now).")
    ] = None,
    config: ConfigOpt = None,
    eval_set: opts.EvalOpt = "builtin:harmful-eval",
    benign: opts.BenignOpt = "builtin:benign-eval",
    positive: opts.PositiveOpt = "builtin:harmful",
    negative: opts.NegativeOpt = "builtin:benign",
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
    n_eval: opts.NEvalOpt = None,
    n_benign: opts.NBenignOpt = 40,
    max_new_tokens: opts.TokensOpt = 48,
    judging: JudgeOptions = NO_JUDGE_OPTIONS,
    engine: opts.EngineOpt = "local",
    engine_url: opts.EngineUrlOpt = None,
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", help="Prompts per generation batch.")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Folder for per-condition results; a rerun skips finished ones."),
    ] = None,
    no_chat: Annotated[bool, typer.Option("--no-chat", help="Raw prompts, not the chat template.")] = False,
    dtype: cli.DtypeOpt = "auto",
    device: cli.DeviceOpt = "auto",
    trust_remote_code: cli.TrustOpt = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
    reply_perplexity: opts.ReplyPplOpt = False,
    quiet: opts.QuietOpt = False,
) -> None:
    """Run every method at every value of its scale and tabulate refusal, quality, KL, perplexity and speed.

    Neuron methods (cna, random) take multipliers m; residual methods (caa, ablation) take strengths s.
    The unchanged value of each (m = 1, s = 0) is the shared baseline, generated once. CAA and directional
    ablation use residual directions computed from --positive/--negative.

    Example: neurogate sweep --model zoo:qwen2.5-coder-1.5b-instruct --circuit c.json --multipliers 1,0.5,0
    """
    from neurogate.discovery.circuit import Circuit
    from neurogate.evaluation.preflight import check_evaluation
    from neurogate.evaluation.sweep import SweepConfig, run_sweep

    model = cli.circuit_model(model, circuit)
    flags = {
        "prompts.eval": Flag("eval_set", eval_set),
        "prompts.benign": Flag("benign", benign),
        "prompts.positive": Flag("positive", positive),
        "prompts.negative": Flag("negative", negative),
        "prompts.n_eval": Flag("n_eval", n_eval),
        "prompts.n_benign": Flag("n_benign", n_benign),
        "methods": Flag("methods", tuple(cli.parse_names(methods, "--methods"))),
        "multipliers": Flag("multipliers", tuple(cli.parse_floats(multipliers, "--multipliers"))),
        "strengths": Flag("strengths", tuple(cli.parse_floats(strengths, "--strengths"))),
        "evaluation.max_new_tokens": Flag("max_new_tokens", max_new_tokens),
        "evaluation.batch_size": Flag("batch_size", batch_size),
        "evaluation.chat": Flag("no_chat", not no_chat),
        "evaluation.engine": Flag("engine", engine),
        "evaluation.engine_url": Flag("engine_url", engine_url),
        "evaluation.reply_perplexity": Flag("reply_perplexity", reply_perplexity),
        **{f"evaluation.{k}": v for k, v in judging.settings().items()},
        "discovery.chat": Flag("no_chat", not no_chat),
    }
    cfg = layered(SweepConfig, flags, config=config, section="sweep")
    circ = Circuit.load(circuit) if circuit is not None else None
    check_evaluation(cfg.evaluation)
    if out is not None:
        check_dir_output(out, "--out")
        cli.note_saved(f"finished conditions are stored under {out}; a rerun skips them")
    lm = cli.load(model, dtype, device, trust_remote_code)
    if circ is None and cfg.needs("circuit"):
        cli.err_console.print("no --circuit given: discovering one from --positive/--negative", markup=False)
    with opts.condition_progress(len(cfg.plan()), quiet or as_json) as advance:
        result = run_sweep(lm, cfg, circuit=circ, out=out, progress=advance)
    if result.store is not None:
        cli.err_console.print(f"results stored under {result.store}", markup=False, highlight=False)
    if as_json:
        cli.console.print_json(json.dumps([r.summary() for r in result.results]))
        return
    title = f"sweep on {escape(model)}: {len(result.results[0].harmful)} harmful prompts"
    cli.console.print(opts.results_table(title, result.results, rest="--json prints every column"))
