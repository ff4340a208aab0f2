"""`neurogate info`: what neurogate sees in a model."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from neurogate.cli import app as cli


@cli.app.command(rich_help_panel=cli.MODELS)
def info(
    model: cli.ModelOpt = cli.DEFAULT_SPEC,
    dtype: cli.DtypeOpt = "auto",
    device: cli.DeviceOpt = "auto",
    trust_remote_code: cli.TrustOpt = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the same facts as JSON.")] = False,
) -> None:
    """Show a model's architecture family, layers, neurons per layer, dtype, device and chat template.

    Example: neurogate info --model zoo:smollm2-135m-instruct --json
    """
    lm = cli.load(model, dtype, device, trust_remote_code)
    facts = lm.info()
    if as_json:
        cli.console.print_json(json.dumps(facts))
        return
    table = Table(title=f"neurogate info: {escape(model)}", show_header=False)
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
        table.add_row(label, escape(text))
    cli.console.print(table)
