"""`neurogate export`: save a model with a circuit's multiplier folded into its weights."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from neurogate.cli.app import DEFAULT_SPEC, DeviceOpt, DtypeOpt, ModelOpt, TrustOpt, app, console, load
from neurogate.discovery.circuit import Circuit
from neurogate.steering.export import export_model


@app.command("export")
def export_command(
    circuit: Annotated[Path, typer.Option("--circuit", "-c", help="Circuit JSON from `neurogate discover`.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory to write the model to.")],
    model: ModelOpt = DEFAULT_SPEC,
    multiplier: Annotated[
        float,
        typer.Option("--multiplier", "-x", help="Neuron multiplier m to fold in (1 = unchanged, 0 ablates)."),
    ] = 0.0,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace a non-empty --out directory.")
    ] = False,
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "auto",
    trust_remote_code: TrustOpt = False,
) -> None:
    """Write a standard transformers model directory with the circuit's multiplier folded into the weights.

    Example: neurogate export --circuit circuit.json --multiplier 0 --out steered-model/
    """
    loaded = Circuit.load(circuit)
    lm = load(model, dtype, device, trust_remote_code)
    path = export_model(lm, loaded, multiplier, out, overwrite=overwrite)
    console.print(
        f"[green]exported:[/] {path} ({len(loaded)} neurons, multiplier {multiplier:g}); "
        "load it with AutoModelForCausalLM.from_pretrained",
        highlight=False,
    )
