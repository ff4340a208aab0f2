"""`neurogate export`: save a model with a circuit's multiplier folded into its weights."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from neurogate.cli import app as cli
from neurogate.discovery.circuit import Circuit
from neurogate.steering.export import export_model


@cli.app.command("export", rich_help_panel=cli.STEER)
def export_command(
    circuit: Annotated[Path, typer.Option("--circuit", "-c", help="Circuit JSON from `neurogate discover`.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory to write the model to.")],
    model: cli.ModelOpt = cli.DEFAULT_SPEC,
    multiplier: Annotated[
        float,
        typer.Option("--multiplier", "-x", help="Neuron multiplier m to fold in (1 = unchanged, 0 ablates)."),
    ] = 0.0,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace a non-empty --out directory.")
    ] = False,
    dtype: cli.DtypeOpt = "auto",
    device: cli.DeviceOpt = "auto",
    trust_remote_code: cli.TrustOpt = False,
) -> None:
    """Write a standard transformers model directory with the circuit's multiplier folded into the weights.

    Example: neurogate export --circuit circuit.json --multiplier 0 --out steered-model/
    """
    loaded = Circuit.load(circuit)
    lm = cli.load(model, dtype, device, trust_remote_code)
    path = export_model(lm, loaded, multiplier, out, overwrite=overwrite)
    cli.console.print(
        f"[green]exported:[/] {path} ({len(loaded)} neurons, multiplier {multiplier:g}); "
        "load it with AutoModelForCausalLM.from_pretrained",
        highlight=False,
    )
