"""`neurogate info`: what neurogate sees in a model."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from neurogate.cli.app import DEFAULT_SPEC, DeviceOpt, DtypeOpt, ModelOpt, TrustOpt, app, console, load


@app.command()
def info(
    model: ModelOpt = DEFAULT_SPEC,
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "auto",
    trust_remote_code: TrustOpt = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the same facts as JSON.")] = False,
) -> None:
    """Show a model's architecture family, layers, neurons per layer, dtype, device and chat template.

    Example: neurogate info --model zoo:smollm2-135m-instruct --json
    """
    lm = load(model, dtype, device, trust_remote_code)
    facts = lm.info()
    if as_json:
        console.print_json(json.dumps(facts))
        return
    table = Table(title=f"neurogate info: {model}", show_header=False)
    labels = {
        "family": "architecture family",
        "model_type": "model type",
        "layers": "layers",
        "neurons_per_layer": "neurons per layer",
        "total_neurons": "total MLP neurons",
        "hidden_size": "hidden size",
        "parameters": "parameters",
        "dtype": "dtype",
        "device": "device",
        "chat_template": "chat template",
        "source": "loaded from",
    }
    for key, label in labels.items():
        value = facts[key]
        if isinstance(value, bool):
            text = "yes" if value else "no (raw-prompt mode)"
        elif isinstance(value, int):
            text = f"{value:,}"
        else:
            text = str(value)
        table.add_row(label, text)
    console.print(table)
