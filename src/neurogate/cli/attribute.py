"""`neurogate attribute`: which MLP neurons carry one prompt's next token, by a linearised backward pass."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from neurogate.cli import app as cli
from neurogate.errors import CircuitError, ConfigError
from neurogate.outputs import check_file_target

if TYPE_CHECKING:
    from neurogate.discovery.attribution import Attribution


def ranking_table(result: Attribution) -> Table:
    """The top neurons: rank, layer, neuron, attribution, activation at the last prompt position."""
    target = escape(repr(result.target.text))
    table = Table(
        title=f"top {len(result.circuit)} neurons for {target} (log p = {result.logprob:.3f}, "
        f"{result.config.position} positions, rank: {result.config.rank})"
    )
    for column in ("rank", "layer", "neuron", "attribution", "activation"):
        table.add_column(column, justify="right")
    for row in result.ranking():
        table.add_row(
            str(row["rank"]),
            str(row["layer"]),
            str(row["neuron"]),
            f"{row['attribution']:+.4g}",
            f"{row['activation']:+.4g}",
        )
    return table


def target_choice(target: str | None, target_token: int | None) -> str | int | None:
    """``--target`` or ``--target-token`` (not both); neither: the model's greedy next token."""
    if target is not None and target_token is not None:
        raise ConfigError("give --target TEXT or --target-token ID, not both")
    return target_token if target_token is not None else target


@cli.app.command(rich_help_panel=cli.STEER)
def attribute(
    prompt: Annotated[str, typer.Option("--prompt", help="The prompt (chat-formatted like every pass).")],
    model: cli.CircuitModelOpt = cli.DEFAULT_SPEC,
    target: Annotated[
        str | None,
        typer.Option("--target", help="A continuation whose log-prob is attributed (default: greedy)."),
    ] = None,
    target_token: Annotated[
        int | None, typer.Option("--target-token", help="A token id to attribute instead of --target.")
    ] = None,
    top_k: Annotated[int, typer.Option("--top-k", help="Neurons kept in the circuit.")] = 20,
    position: Annotated[
        str, typer.Option("--position", help="all: sum over every position; last: last prompt token.")
    ] = "all",
    rank: Annotated[
        str, typer.Option("--rank", help="positive (raise the target), abs or negative.")
    ] = "positive",
    plain: Annotated[
        bool, typer.Option("--plain", help="The plain gradient instead of the linearised backward.")
    ] = False,
    circuit: Annotated[
        Path | None, typer.Option("--circuit", "-c", help="A circuit JSON to compare with.")
    ] = None,
    out: Annotated[
        str | None, typer.Option("--out", "-o", help="Where to write the top-k circuit JSON.")
    ] = None,
    system_prompt: Annotated[str | None, typer.Option("--system-prompt", help="System prompt.")] = None,
    dtype: cli.DtypeOpt = "auto",
    device: cli.DeviceOpt = "auto",
    trust_remote_code: cli.TrustOpt = False,
) -> None:
    """Attribute one prompt's next token (or --target) to MLP neurons; the top-k is a circuit.

    Example: neurogate attribute --model zoo:smollm2-135m-instruct --prompt "How do I pick a lock?"
    """
    from neurogate.discovery.attribution import AttributionConfig
    from neurogate.discovery.attribution import attribute as run_attribution
    from neurogate.evaluation.attribution_check import compare, load_circuit, self_check

    config = AttributionConfig(
        top_k=top_k,
        position=position,  # type: ignore[arg-type]  # checked by AttributionConfig
        rank=rank,  # type: ignore[arg-type]
        linearise=not plain,
        system_prompt=system_prompt,
    )
    if not prompt.strip():
        raise ConfigError("--prompt is empty: give the text to attribute")
    chosen = target_choice(target, target_token)
    if out is not None:
        check_file_target(out, "--out", "attribution.json")
    if circuit is not None and not circuit.is_file():
        raise ConfigError(f"--circuit {str(circuit)!r} does not exist; give a circuit JSON file")
    try:
        model = cli.circuit_model(model, circuit) if circuit is not None else model
    except CircuitError as exc:
        raise ConfigError(f"--circuit: {exc}") from exc
    lm = cli.load(model, dtype, device, trust_remote_code)
    reference = load_circuit(circuit, lm) if circuit is not None else None
    result = run_attribution(lm, prompt, chosen, config)
    check = self_check(lm, result)
    result.circuit.method["self_check"] = check.to_dict()
    cli.console.print(ranking_table(result))
    total = result.total
    cli.console.print(f"sum of all attributions: {total:+.4f}", markup=False, highlight=False)
    cli.console.print(check.line(), markup=False, highlight=False, soft_wrap=True)
    if reference is not None:
        comparison = compare(result, reference)
        result.circuit.method["comparison"] = {"circuit": str(circuit), **comparison.to_dict()}
        cli.console.print(comparison.line(), markup=False, highlight=False, soft_wrap=True)
    if out is not None:
        path = result.circuit.save(out)
        cli.console.print(f"[green]saved:[/] {escape(str(path))}", highlight=False)
