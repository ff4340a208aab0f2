"""Evaluation commands: `sweep`, `run` (the whole study), and the experiments `sparsity`, `layers` and
`base-vs-instruct`. Each parses its options into the library's config objects and prints tables."""

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

from neurogate.cli.app import DEFAULT_SPEC, DeviceOpt, DtypeOpt, ModelOpt, TrustOpt, app, console, err_console
from neurogate.errors import ConfigError
from neurogate.judges import Judge, get_judge
from neurogate.sweep import TABLE_COLUMNS, ConditionResult, EvalSettings, table_rows

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
RUNS = Path("runs")
BatchOpt = Annotated[int | None, typer.Option("--batch-size", help="Prompts per generation batch.")]


def parse_floats(text: str, option: str) -> list[float]:
    """``"0,0.5,1"`` -> ``[0.0, 0.5, 1.0]``."""
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"{option} takes comma-separated numbers such as 0,0.5,1; got {text!r}") from None
    if not values:
        raise ConfigError(f"{option} needs at least one number")
    return values


def parse_names(text: str, option: str) -> list[str]:
    names = [x.strip() for x in text.split(",") if x.strip()]
    if not names:
        raise ConfigError(f"{option} needs at least one name")
    return names


def build_judge(name: str, url: str | None, model: str | None) -> Judge:
    if name == "llm":
        return get_judge("llm", base_url=url, model=model)
    return get_judge(name)


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
        SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TimeRemainingColumn(), console=err_console, transient=False,
    ) as progress:
        task = progress.add_task("conditions", total=total)

        def advance(cond: Any, result: ConditionResult, cached: bool) -> None:
            note = " (stored)" if cached else ""
            progress.update(task, advance=1, description=f"{cond.key}{note}: refusal {result.refusal}")

        yield advance


def keyed_store(out: Path | None, **parts: Any) -> Any:
    """A result store under ``out/<hash of everything that decides the numbers>``, so a changed setting
    never reuses stale conditions; ``None`` without ``out``."""
    import hashlib

    from neurogate.sweep import ResultStore

    if out is None:
        return None
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]
    err_console.print(f"results stored under {out / digest}")
    return ResultStore(out / digest)


def _load(model: str, dtype: str, device: str, trust: bool) -> Any:
    from neurogate.loading import load_model

    return load_model(model, dtype=dtype, device=device, trust_remote_code=trust)


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
    strengths: Annotated[str, typer.Option("--strengths", help="Comma-separated; 0 = baseline.")] = (
        "0,0.25,0.5,0.75,1"
    ),
    n_eval: NEvalOpt = None,
    n_benign: NBenignOpt = 40,
    max_new_tokens: TokensOpt = 48,
    judge: JudgeOpt = "keyword",
    judge_url: JudgeUrlOpt = None,
    judge_model: JudgeModelOpt = None,
    batch_size: BatchOpt = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Folder for per-condition results; a rerun skips finished ones."),
    ] = None,
    no_chat: Annotated[bool, typer.Option("--no-chat", help="Raw prompts, not the chat template.")] = False,
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "auto",
    trust_remote_code: TrustOpt = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Run every method at every strength and tabulate refusal, quality, perplexity, KL and speed.

    Strength 0 is the shared baseline, generated once. CAA and directional ablation use residual
    directions computed from --positive/--negative.

    Example: neurogate sweep --model zoo:qwen2.5-coder-1.5b-instruct --circuit c.json --strengths 0,0.5,1
    """
    from neurogate import prompts
    from neurogate.circuit import Circuit
    from neurogate.sweep import Evaluator, plan_sweep

    method_list = parse_names(methods, "--methods")
    plan = plan_sweep(method_list, parse_floats(strengths, "--strengths"))
    judge_obj = build_judge(judge, judge_url, judge_model)
    harmful = prompts.load(eval_set, limit=n_eval)
    benign_set = prompts.load(benign, limit=n_benign)
    lm = _load(model, dtype, device, trust_remote_code)
    chat = not no_chat
    circ = None
    if {"cna", "random"} & set(method_list):
        if circuit is not None:
            circ = Circuit.load(circuit)
            circ.check_model(lm)
        else:
            from neurogate.discovery import discover

            err_console.print("no --circuit given: discovering one from --positive/--negative")
            circ = discover(lm, positive, negative, chat=chat, progress=not quiet)
    directions = None
    if {"caa", "ablation"} & set(method_list):
        from neurogate.directions import compute_directions

        pos, neg = prompts.load(positive), prompts.load(negative)
        directions = compute_directions(lm, pos.prompts, neg.prompts, chat=chat)
    settings = EvalSettings(max_new_tokens=max_new_tokens, batch_size=batch_size or "auto", chat=chat)
    evaluator = Evaluator(
        lm, harmful.prompts, benign_set.prompts, circuit=circ, directions=directions, judge=judge_obj,
        settings=settings,
        store=keyed_store(
            out, model=model, dtype=str(lm.dtype), circuit=circ.to_dict()["neurons"] if circ else None,
            eval=harmful.sha256, benign=benign_set.sha256, settings=settings, judge=judge,
            positive=positive, negative=negative,
        ),
    )
    with condition_progress(len(plan), quiet or as_json) as advance:
        results = evaluator.run_all(plan, advance)
    if as_json:
        console.print_json(json.dumps([_summary(r) for r in results]))
        return
    title = f"sweep on {model}: {len(harmful)} harmful, {len(benign_set)} benign"
    console.print(results_table(title, results))


def _summary(r: ConditionResult) -> dict[str, Any]:
    data = r.to_dict()
    data.pop("harmful")
    data.pop("benign")
    return data


@app.command()
def run(
    model: ModelOpt = DEFAULT_SPEC,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder with a sub-folder per run.")] = RUNS,
    config: Annotated[
        Path | None, typer.Option("--config", help="TOML file of study settings (see docs/results.md).")
    ] = None,
    quick: Annotated[
        bool, typer.Option("--quick", help="A reduced study (fewer prompts, strengths and tokens) for demos.")
    ] = False,
    eval_set: Annotated[str | None, typer.Option("--eval", "-e", help="Harmful evaluation prompts.")] = None,
    benign: Annotated[str | None, typer.Option("--benign", "-b", help="Benign evaluation prompts.")] = None,
    n_eval: NEvalOpt = None,
    n_benign: NBenignOpt = None,
    max_new_tokens: Annotated[int | None, typer.Option("--max-new-tokens", help="Reply length.")] = None,
    judge: Annotated[str | None, typer.Option("--judge", help="keyword or llm.")] = None,
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "auto",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Run the whole study (discovery, four-method sweep, sparsity, random control, layers) and report it.

    Writes results.json, report.md and report.html. Rerunning resumes (finished conditions are kept).

    Settings come from the defaults (or --quick), then --config, then the flags given here.

    Example: neurogate run --model zoo:qwen2.5-coder-1.5b-instruct --out runs --quick
    """
    from neurogate.study import StudyConfig, run_study

    base = StudyConfig.quick() if quick else StudyConfig()
    cfg = StudyConfig.from_toml(config, base=base) if config is not None else base
    flags: dict[str, Any] = {
        "model": model if model != DEFAULT_SPEC or config is None else None,
        "eval": eval_set, "benign": benign, "n_eval": n_eval, "n_benign": n_benign,
        "max_new_tokens": max_new_tokens, "judge": judge,
        "dtype": dtype if dtype != "auto" else None, "device": device if device != "auto" else None,
    }
    cfg = StudyConfig.from_mapping({k: v for k, v in flags.items() if v is not None}, base=cfg)
    console.print(f"run {cfg.run_id()} -> {out / cfg.run_id()}")
    with _study_progress(quiet) as on_event:
        result = run_study(cfg, out, on_event=on_event)
    from neurogate.sweep import ConditionResult as CR

    conds = result.results["conditions"]
    console.print(results_table("sweep", [CR.from_dict(conds[k]) for k in result.results["sweep"]]))
    for r in result.results["random_control"]:
        state = "inside" if r["within_baseline_ci"] else "outside"
        console.print(f"random control {r['key']}: {state} the baseline's 95% interval")
    console.print(f"[green]done:[/] {result.run_dir / 'report.html'} (and report.md, results.json)")


@contextmanager
def _study_progress(quiet: bool) -> Iterator[Any]:
    if quiet:
        yield None
        return
    with Progress(
        SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TimeRemainingColumn(), console=err_console,
    ) as progress:
        task = progress.add_task("starting", total=None)

        def on_event(kind: str, info: dict[str, Any]) -> None:
            if kind == "stage":
                progress.update(task, description=info["name"])
            elif kind == "plan":
                progress.update(task, total=info["total"], completed=0)
            elif kind == "condition":
                note = " (stored)" if info["cached"] else ""
                progress.update(task, advance=1, description=f"{info['key']}{note}: {info['result'].refusal}")

        yield on_event


@app.command()
def sparsity(
    model: ModelOpt = DEFAULT_SPEC,
    fractions: Annotated[str, typer.Option("--fractions", help="Circuit sizes as shares of all neurons.")] = (
        "0.0001,0.0003,0.001,0.003,0.01"
    ),
    eval_set: EvalOpt = "builtin:harmful-eval",
    positive: PositiveOpt = "builtin:harmful",
    negative: NegativeOpt = "builtin:benign",
    n_eval: NEvalOpt = None,
    max_new_tokens: TokensOpt = 48,
    judge: JudgeOpt = "keyword",
    judge_url: JudgeUrlOpt = None,
    judge_model: JudgeModelOpt = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Folder for per-condition results.")] = None,
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "auto",
    trust_remote_code: TrustOpt = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Refusal after ablating circuits of several sizes (prefixes of one ranking, discovered once).

    Example: neurogate sparsity --model zoo:qwen2.5-coder-1.5b-instruct --fractions 0.0001,0.001,0.01
    """
    from neurogate import prompts
    from neurogate.experiments import discover_for_sparsity, sparsity_conditions, sparsity_sizes
    from neurogate.sweep import Evaluator, baseline_condition

    lm = _load(model, dtype, device, trust_remote_code)
    sizes = sparsity_sizes(lm.adapter.n_neurons, parse_floats(fractions, "--fractions"))
    harmful = prompts.load(eval_set, limit=n_eval)
    prompts.check_leakage([prompts.load(positive), prompts.load(negative)], harmful, strict=True)
    ranking = discover_for_sparsity(lm, positive, negative, sizes, progress=not quiet)
    evaluator = Evaluator(
        lm, harmful.prompts, [], circuit=ranking, judge=build_judge(judge, judge_url, judge_model),
        settings=EvalSettings(max_new_tokens=max_new_tokens),
        store=keyed_store(
            out, model=model, dtype=str(lm.dtype), ranking=ranking.to_dict()["neurons"], eval=harmful.sha256,
            tokens=max_new_tokens, judge=judge,
        ),
    )
    plan = [baseline_condition(), *sparsity_conditions(sizes)]
    with condition_progress(len(plan), quiet) as advance:
        results = evaluator.run_all(plan, advance)
    table = Table(title=f"sparsity on {model} ({lm.adapter.n_neurons:,} MLP neurons)")
    for col in ("neurons", "% of all", "refusal % [95% CI]", "quality"):
        table.add_column(col, justify="right")
    for r in results:
        n = r.n_neurons or 0
        table.add_row(str(n), f"{100 * n / lm.adapter.n_neurons:.3f}", str(r.refusal), f"{r.quality:.3f}")
    console.print(table)


@app.command()
def layers(
    model: ModelOpt = DEFAULT_SPEC,
    behaviours: Annotated[
        str,
        typer.Option("--behaviours", help="refusal and/or built-in battery contrast names, comma-separated."),
    ] = "refusal,code-vs-poetry,french-vs-english",
    positive: PositiveOpt = "builtin:harmful",
    negative: NegativeOpt = "builtin:benign",
    fraction: Annotated[float, typer.Option("--fraction", help="Share of all MLP neurons to keep.")] = 0.001,
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "auto",
    trust_remote_code: TrustOpt = False,
) -> None:
    """Where each behaviour's circuit sits: neurons per layer and the share in the last quarter.

    Example: neurogate layers --model zoo:smollm2-135m-instruct --behaviours refusal,code-vs-poetry
    """
    import difflib

    from neurogate.experiments import layer_localisation
    from neurogate.prompts import battery

    contrasts = {name: (pos, neg) for name, pos, neg in battery()}
    chosen: list[tuple[str, Any, Any]] = []
    for name in parse_names(behaviours, "--behaviours"):
        if name == "refusal":
            chosen.append((name, positive, negative))
        elif name in contrasts:
            chosen.append((name, *contrasts[name]))
        else:
            close = difflib.get_close_matches(name, [*contrasts, "refusal"], n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            known = ", ".join(contrasts)
            raise ConfigError(f"unknown behaviour {name!r}; use refusal or one of: {known}.{hint}")
    lm = _load(model, dtype, device, trust_remote_code)
    profiles = layer_localisation(lm, chosen, fraction=fraction, universal_filter=False, progress=False)
    table = Table(title=f"layer localisation on {model} ({lm.adapter.n_layers} layers)")
    for col in ("behaviour", "neurons", "late share", "neurons per layer"):
        table.add_column(col)
    for p in profiles:
        per = ", ".join(f"L{k}:{v}" for k, v in p.per_layer.items())
        table.add_row(p.behaviour, str(p.n_neurons), f"{100 * p.late_share:.0f}%", per)
    console.print(table)


@app.command("base-vs-instruct")
def base_vs_instruct(
    instruct: Annotated[str, typer.Option("--instruct", help="The instruction-tuned model.")] = DEFAULT_SPEC,
    base: Annotated[str, typer.Option("--base", help="The base model (raw prompts).")] = "zoo:gemma-3-270m",
    eval_set: EvalOpt = "builtin:harmful-eval",
    positive: PositiveOpt = "builtin:harmful",
    negative: NegativeOpt = "builtin:benign",
    n_eval: NEvalOpt = 32,
    max_new_tokens: TokensOpt = 40,
    fraction: Annotated[float, typer.Option("--fraction", help="Share of all MLP neurons to keep.")] = 0.001,
    judge: JudgeOpt = "keyword",
    judge_url: JudgeUrlOpt = None,
    judge_model: JudgeModelOpt = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write the results as JSON here.")] = None,
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "auto",
) -> None:
    """The same pipeline on an instruct and a base model: does ablation change behaviour or only content?

    Example: neurogate base-vs-instruct --instruct zoo:qwen2.5-coder-1.5b-instruct --base zoo:gemma-3-270m
    """
    from neurogate import prompts
    from neurogate.atomic import write_json_atomic
    from neurogate.experiments import behaviour_shift

    harmful = prompts.load(eval_set, limit=n_eval)
    prompts.check_leakage([prompts.load(positive), prompts.load(negative)], harmful, strict=True)
    judge_obj = build_judge(judge, judge_url, judge_model)
    settings = EvalSettings(max_new_tokens=max_new_tokens)
    shifts = []
    for spec in (instruct, base):
        lm = _load(spec, dtype, device, False)
        shift = behaviour_shift(
            lm, positive, negative, harmful.prompts, judge=judge_obj, settings=settings, fraction=fraction,
            progress=False,
        )
        shifts.append(shift)
        del lm
    table = Table(title="base vs instruct: ablating each model's own circuit")
    for col in ("model", "prompts", "neurons", "refusal before", "refusal after", "quality before",
                "quality after", "replies changed", "verdict"):
        table.add_column(col)
    for s in shifts:
        table.add_row(
            s.model, "chat" if s.chat else "raw", str(s.n_neurons), str(s.baseline.refusal),
            str(s.steered.refusal), f"{s.baseline.quality:.3f}", f"{s.steered.quality:.3f}",
            f"{100 * s.changed_share:.0f}%", s.verdict,
        )
    console.print(table)
    for s in shifts:
        for ex in s.examples[:2]:
            console.print(f"[bold]{s.model}[/] | {ex['prompt']}", highlight=False)
            console.print(f"  before: {ex['baseline'][:200]!r}", highlight=False)
            console.print(f"  after:  {ex['steered'][:200]!r}", highlight=False)
    if out is not None:
        write_json_atomic(out, [s.to_dict() for s in shifts])
        console.print(f"wrote {out}")
