"""`neurogate export`: save a model with a circuit's multiplier folded into its weights."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from neurogate.cli.app import DEFAULT_SPEC, DeviceOpt, DtypeOpt, ModelOpt, TrustOpt, app, console


@app.command("export")
def export_command(
    circuit: Annotated[Path, typer.Option("--circuit", "-c", help="Circuit JSON from `neurogate discover`.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory to write the model to.")],
    model: ModelOpt = DEFAULT_SPEC,
    multiplier: Annotated[
        float, typer.Option("--multiplier", help="Neuron multiplier to fold in (0 ablates, >1 amplifies).")
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
    from neurogate.circuit import Circuit
    from neurogate.export import export
    from neurogate.loading import load_model

    loaded = Circuit.load(circuit)
    lm = load_model(model, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
    path = export(lm, loaded, multiplier, out, overwrite=overwrite)
    console.print(
        f"[green]exported:[/] {path} ({len(loaded)} neurons, multiplier {multiplier:g}); "
        "load it with AutoModelForCausalLM.from_pretrained",
        highlight=False,
    )
