"""`neurogate serve`: the vLLM command that serves a base model with one LoRA adapter per multiplier."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Annotated

import typer

from neurogate.cli import app as cli
from neurogate.errors import ConfigError

LOCAL_VLLM = Path(".venv-vllm/bin/python")


def default_python() -> str:
    """The Python that runs vLLM: ``$NEUROGATE_VLLM_PYTHON``, else ``.venv-vllm`` here (``make vllm``), else
    ``python3`` on the PATH."""
    found = os.environ.get("NEUROGATE_VLLM_PYTHON")
    if found:
        return found
    return str(LOCAL_VLLM.absolute()) if LOCAL_VLLM.is_file() else "python3"


@cli.app.command("serve", rich_help_panel=cli.STEER)
def serve_command(
    circuit: Annotated[Path, typer.Option("--circuit", "-c", help="Circuit JSON from `neurogate discover`.")],
    multiplier: Annotated[
        list[float],
        typer.Option("--multiplier", "-x", help="Multiplier m to serve; repeat for several adapters."),
    ],
    model: cli.CircuitModelOpt = cli.DEFAULT_SPEC,
    adapters: Annotated[
        Path, typer.Option("--adapters", help="Folder for the exported adapters (or folded models).")
    ] = Path("served"),
    folded: Annotated[
        bool,
        typer.Option(
            "--folded", help="Serve a folded model (one multiplier) instead of LoRA: faster on CPU."
        ),
    ] = False,
    run: Annotated[
        bool, typer.Option("--run", help="Start the server instead of printing the command.")
    ] = False,
    python: Annotated[str | None, typer.Option("--python", help="Python that has vLLM installed.")] = None,
    host: Annotated[str, typer.Option("--host", help="Address the server listens on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port the server listens on.")] = 8000,
    max_model_len: Annotated[int, typer.Option("--max-model-len", help="Longest prompt + reply.")] = 4096,
    dtype: cli.DtypeOpt = "auto",
    device: cli.DeviceOpt = "auto",
) -> None:
    """Export one LoRA adapter per --multiplier and print (or --run) the vLLM server command.

    Requests then pick a condition by name: model="base" (unchanged) or model="cna-m0" (multiplier 0).
    Example: neurogate serve --circuit circuit.json --multiplier 0 --multiplier 0.5
    """
    from neurogate.discovery.circuit import Circuit, Toward
    from neurogate.export.model import export_model
    from neurogate.export.serving import VllmPlan, adapter_name, engine_rank, export_adapters, model_source

    model = cli.circuit_model(model, circuit)
    loaded = Circuit.load(circuit)
    recorded = loaded.recorded_intervention()
    mean = recorded is not None and recorded[0] == "mean"
    if mean and not folded:
        raise ConfigError(
            f"{circuit} records a mean intervention, whose per-layer constant vLLM's LoRA adapters cannot "
            "carry; serve it --folded (the constant goes into the MLP bias where the model family keeps "
            "one), or export it for llama.cpp with `neurogate export --format gguf` (GGUF + control vector)"
        )
    lm = cli.load(model, dtype, device)
    plan = VllmPlan(
        model=model_source(model),
        python=python or default_python(),
        host=host,
        port=port,
        dtype="auto" if dtype == "auto" else dtype,
        max_model_len=max_model_len,
    )
    if folded:
        if len(multiplier) != 1:
            raise ConfigError("--folded serves one multiplier; give exactly one --multiplier")
        name = adapter_name(multiplier[0], "mean" if mean else "cna")
        toward: Toward = "mean" if mean else "zero"
        plan.model = str(
            export_model(lm, loaded, multiplier[0], adapters / name, overwrite=True, toward=toward)
        )
        cli.err_console.print(
            f"served as model {'base'!r}: {name} folded into {plan.model}", markup=False, highlight=False
        )
    else:
        plan.adapters, rank = export_adapters(lm, loaded, multiplier, adapters)
        plan.max_lora_rank = engine_rank(rank)
        names = ", ".join(plan.adapters)
        cli.err_console.print(f"adapters: {names} (model 'base' is unchanged)", markup=False, highlight=False)
    if not run:
        cli.console.print(plan.shell(), markup=False, highlight=False, soft_wrap=True)
        return
    if shutil.which(plan.python) is None and not Path(plan.python).is_file():
        raise ConfigError(f"{plan.python} not found: run `make vllm` or pass --python PATH-TO-VLLM-PYTHON")
    cli.err_console.print(f"starting vLLM at {plan.base_url} ...", markup=False, highlight=False)
    sys.stdout.flush()
    os.execv(shutil.which(plan.python) or plan.python, plan.command())
