"""`neurogate discover`: find a model's circuit for a contrast of two prompt sets and save it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from neurogate.cli import app as cli
from neurogate.cli.config_file import ConfigOpt, Flag, layered
from neurogate.defaults import DEFAULT_SCORE, SCORER_SUMMARIES
from neurogate.errors import ConfigError
from neurogate.outputs import check_file_target

if TYPE_CHECKING:
    from neurogate.discovery.circuit import Circuit


def parse_layers(text: str | None) -> tuple[int, ...]:
    """``"0,1,-1"`` -> ``(0, 1, -1)``; empty or None -> ``()``."""
    if not text or not text.strip():
        return ()
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ConfigError(
            f"--exclude-layers takes comma-separated layer numbers such as 0,1,-1; got {text!r}"
        ) from None


def circuit_table(circuit: Circuit) -> Table:
    """Neurons per layer, with each layer's share and strongest neuron."""
    table = Table(title=escape(circuit.summary().splitlines()[0]))
    for col in ("layer", "neurons", "share", "top neuron (index: score, diff)"):
        table.add_column(col, justify="right" if col != "top neuron (index: score, diff)" else "left")
    total = max(len(circuit), 1)
    for layer, count in circuit.per_layer().items():
        best = max((n for n in circuit.neurons if n.layer == layer), key=lambda n: n.score)
        table.add_row(
            str(layer),
            str(count),
            f"{100 * count / total:.1f}%",
            f"{circuit.label(best) if circuit.is_moe else best.index}: {best.score:.4g}, {best.diff:+.4g}",
        )
    return table


# Longer than 60 lines only because every CLI option is a parameter; the body builds one config and
# calls the library.
@cli.app.command(rich_help_panel=cli.STEER)
def discover(
    # a str, not a Path: a trailing slash (a folder was meant) must reach the output check
    out: Annotated[str, typer.Option("--out", "-o", help="Where to write the circuit JSON.")],
    model: cli.ModelOpt = cli.DEFAULT_SPEC,
    config: ConfigOpt = None,
    positive: Annotated[
        str,
        typer.Option(
            "--positive", "-p", help="Prompts that show the behaviour: file, builtin:NAME or hf:..."
        ),
    ] = "builtin:harmful",
    negative: Annotated[
        str, typer.Option("--negative", "-n", help="Prompts that do not: file, builtin:NAME or hf:...")
    ] = "builtin:benign",
    fraction: Annotated[
        float | None, typer.Option("--fraction", help="Share of all MLP neurons to keep (default 0.001).")
    ] = None,
    top_k: Annotated[
        int | None, typer.Option("--top-k", help="Keep exactly K neurons (instead of --fraction).")
    ] = None,
    score: Annotated[
        str,
        typer.Option(
            "--score",
            help="Scorer (the paper's is mean-diff): "
            + "; ".join(f"{k}: {v}" for k, v in SCORER_SUMMARIES.items()),
        ),
    ] = DEFAULT_SCORE,
    sign: Annotated[
        str,
        typer.Option(
            "--sign",
            help="both: rank by the score's size; positive/negative: only neurons higher on the "
            "positive/negative prompts.",
        ),
    ] = "both",
    positions: Annotated[
        str,
        typer.Option(
            "--positions",
            help="Prompt tokens read: last (the paper), post-mean or post-max (the chat template's "
            "tokens after the user's message, averaged or maxed).",
        ),
    ] = "last",
    thinking: Annotated[
        str,
        typer.Option(
            "--thinking",
            help="Reasoning models: read the prompt before the thinking block (as the template ends it) "
            "or after a closed, empty one, where the answer starts.",
        ),
    ] = "before",
    weights: Annotated[
        str,
        typer.Option(
            "--weights",
            help="uniform: every neuron takes the multiplier; proportional: each in proportion to its "
            "score (the top neuron takes m).",
        ),
    ] = "uniform",
    no_universal_filter: Annotated[
        bool, typer.Option("--no-universal-filter", help="Keep neurons that fire for every contrast.")
    ] = False,
    universal_threshold: Annotated[
        float,
        typer.Option(
            "--universal-threshold", help="Share of battery contrasts that makes a neuron universal."
        ),
    ] = 0.8,
    exclude_layers: Annotated[
        str | None, typer.Option("--exclude-layers", help="Comma-separated layers to skip, e.g. 0,1.")
    ] = None,
    system_prompt: Annotated[
        str | None, typer.Option("--system-prompt", help="System prompt for every prompt.")
    ] = None,
    no_chat: Annotated[
        bool, typer.Option("--no-chat", help="Use raw prompts, not the chat template.")
    ] = False,
    batch_size: Annotated[str, typer.Option("--batch-size", help="Prompts per batch, or auto.")] = "auto",
    dtype: cli.DtypeOpt = "auto",
    device: cli.DeviceOpt = "auto",
    trust_remote_code: cli.TrustOpt = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
    allow_degenerate: Annotated[
        bool,
        typer.Option(
            "--allow-degenerate",
            help="Save a circuit even when the sets hold the same prompts or every score is 0 (meaningless).",
        ),
    ] = False,
) -> None:
    """Find the neurons that separate --positive from --negative prompts (contrastive neuron attribution).

    Example: neurogate discover --model zoo:smollm2-135m-instruct --top-k 50 --out circuit.json
    """
    from neurogate.discovery.config import DiscoverConfig
    from neurogate.discovery.discover import discover as run_discovery

    flags = {
        "fraction": Flag("fraction", fraction),
        "top_k": Flag("top_k", top_k),
        "score": Flag("score", score),
        "sign": Flag("sign", sign),
        "positions": Flag("positions", positions),
        "thinking": Flag("thinking", thinking),
        "weights": Flag("weights", weights),
        "exclude_layers": Flag("exclude_layers", parse_layers(exclude_layers)),
        "universal_filter": Flag("no_universal_filter", not no_universal_filter),
        "universal_threshold": Flag("universal_threshold", universal_threshold),
        "batch_size": Flag("batch_size", cli.parse_batch_size(batch_size)),
        "system_prompt": Flag("system_prompt", system_prompt),
        "chat": Flag("no_chat", not no_chat),
    }
    settings = layered(DiscoverConfig, flags, config=config, section="discovery")
    check_file_target(out, "--out")  # before the forward passes, not after them
    lm = cli.load(model, dtype, device, trust_remote_code)
    circuit = run_discovery(
        lm, positive, negative, settings, progress=not quiet, allow_degenerate=allow_degenerate
    )
    path = circuit.save(out)
    cli.console.print(circuit_table(circuit))
    cli.console.print("\n".join(circuit.summary().splitlines()[1:]), markup=False, highlight=False)
    if circuit.method.get("routing"):
        from neurogate.discovery.routing import format_routing

        cli.console.print(format_routing(circuit.method["routing"]), markup=False, highlight=False)
    cli.console.print(f"[green]saved:[/] {escape(str(path))}", highlight=False)
