"""`neurogate export`: save a model with a circuit's multiplier folded into its weights."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import torch
import typer

from neurogate.cli import app as cli
from neurogate.discovery.circuit import Circuit
from neurogate.models.hooks import check_scale
from neurogate.steering.export import check_target, export_model


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
        bool,
        typer.Option("--overwrite", help="Replace --out only when it holds an earlier neurogate export."),
    ] = False,
    dtype: cli.DtypeOpt = "auto",
    device: cli.DeviceOpt = "auto",
    trust_remote_code: cli.TrustOpt = False,
) -> None:
    """Write a standard transformers model directory with the circuit's multiplier folded into the weights.

    Example: neurogate export --circuit circuit.json --multiplier 0 --out steered-model/
    """
    loaded = Circuit.load(circuit)
    check_scale([multiplier], torch.float32, "multiplier")  # the model's own dtype is checked once loaded
    check_target(out, overwrite, [str(circuit), model])  # before the model loads
    lm = cli.load(model, dtype, device, trust_remote_code)
    path = export_model(lm, loaded, multiplier, out, overwrite=overwrite, inputs=[str(circuit)])
    cli.console.print(
        f"[green]exported:[/] {path} ({len(loaded)} neurons, multiplier {multiplier:g}); "
        "load it with AutoModelForCausalLM.from_pretrained",
        highlight=False,
    )
