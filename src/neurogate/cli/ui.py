"""`neurogate ui`: the local web explorer for circuits, live steering and study runs."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from neurogate.cli import app as cli
from neurogate.cli.config_file import ConfigOpt, Flag, layered
from neurogate.errors import ConfigError

EXPLORE = "Explore"


@cli.app.command(rich_help_panel=EXPLORE)
def ui(
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="Model for live steering (default: the first circuit's model, else the default).",
        ),
    ] = None,
    circuit: Annotated[
        list[Path] | None, typer.Option("--circuit", "-c", help="Circuit JSON to show (repeat to compare).")
    ] = None,
    runs: Annotated[
        Path | None, typer.Option("--runs", help="Folder of study runs (`neurogate run --out`).")
    ] = None,
    host: Annotated[
        str, typer.Option("--host", help="Address to bind; anything but 127.0.0.1 is reachable by others.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on (0 picks a free one).")] = 8765,
    no_model: Annotated[
        bool, typer.Option("--no-model", help="Browse circuits and runs only; load no model.")
    ] = False,
    max_new_tokens: Annotated[
        int, typer.Option("--max-new-tokens", help="Live reply length; the page can change it (at most 256).")
    ] = 64,
    dtype: cli.DtypeOpt = "auto",
    device: cli.DeviceOpt = "auto",
    config: ConfigOpt = None,
) -> None:
    """Start a local web explorer and print its URL: circuit maps, live steered vs unsteered replies, runs.

    Example: neurogate ui --model zoo:smollm2-135m-instruct --circuit circuit.json --runs runs
    """
    try:
        from neurogate.ui.serve import serve
        from neurogate.ui.settings import UISettings
    except ImportError as exc:
        raise ConfigError(
            f"the explorer needs its web server packages ({exc.name} is missing): pip install 'neurogate[ui]'"
        ) from None
    flags = {
        "model": Flag("model", model),
        "circuits": Flag("circuit", tuple(circuit or ())),
        "runs": Flag("runs", runs),
        "host": Flag("host", host),
        "port": Flag("port", port),
        "max_new_tokens": Flag("max_new_tokens", max_new_tokens),
        "dtype": Flag("dtype", dtype),
        "device": Flag("device", device),
    }
    settings = layered(UISettings, flags, config=config, section="ui")
    named = settings.model is not None  # by --model or the file
    chosen = None if no_model else settings.model or _default_model(list(settings.circuits))
    if chosen is not None:  # like every command: a large zoo model is pulled only when named or confirmed
        source = "the default" if chosen == cli.DEFAULT_SPEC else "the first circuit's model"
        cli.preflight_model(chosen, explicit=named, source=source)
    settings = replace(settings, model=chosen)
    serve(
        settings,
        announce=lambda url: cli.console.print(
            f"neurogate explorer: {url}  (Ctrl+C stops it)", markup=False, highlight=False
        ),
        warn=lambda text: cli.err_console.print(f"[bold yellow]warning:[/] {escape(text)}", highlight=False),
    )


def _default_model(circuits: list[Path]) -> str:
    """The model the first readable circuit was found on, else the default model."""
    from neurogate.discovery.circuit import Circuit
    from neurogate.errors import CircuitError

    for path in circuits:
        try:
            spec = Circuit.load(path).model.get("spec")
        except CircuitError:
            continue
        if isinstance(spec, str) and spec:
            return spec
    return cli.DEFAULT_SPEC
