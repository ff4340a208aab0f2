"""The Typer application, the shared console, and the options every command uses."""

from __future__ import annotations

import logging
from typing import Annotated

import typer
from rich.console import Console
from rich.logging import RichHandler

from neurogate.zoo import DEFAULT_MODEL

console = Console()
err_console = Console(stderr=True)

app = typer.Typer(
    name="neurogate",
    help="Find the few MLP neurons that carry a behaviour in a language model, and turn it down or up.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="rich",
)

DEFAULT_SPEC = f"zoo:{DEFAULT_MODEL}"

ModelOpt = Annotated[
    str,
    typer.Option(
        "--model",
        "-m",
        help="Hub id, local model directory, .gguf file, or zoo:NAME (see `neurogate models list`).",
    ),
]
DtypeOpt = Annotated[
    str, typer.Option("--dtype", help="auto (bf16 where fast, else float32), bfloat16, float16 or float32.")
]
DeviceOpt = Annotated[
    str, typer.Option("--device", help="auto (CUDA when present, else CPU), cpu, cuda, cuda:N.")
]
TrustOpt = Annotated[
    bool,
    typer.Option("--trust-remote-code", help="Allow model code from the hub (only for models you trust)."),
]


def setup_logging(verbose: bool = False) -> None:
    """Route library logging through rich on stderr; quiet the noisier dependencies."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=err_console, show_time=False, show_path=False)],
        force=True,
    )
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover - transformers is a dependency
        pass


@app.callback()
def _root(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show informational log messages.")
    ] = False,
) -> None:
    """neurogate: contrastive neuron attribution and steering for any Hugging Face causal LM.

    Example: neurogate info --model zoo:smollm2-135m-instruct
    """
    setup_logging(verbose)
