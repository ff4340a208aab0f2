"""The Typer application, the shared console, and the options every command uses."""

from __future__ import annotations

import logging
import os
import sys
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.logging import RichHandler

from neurogate.cli.threads import RootOpt as ThreadsOpt
from neurogate.cli.threads import ThreadedGroup, remember_root
from neurogate.errors import ConfigError

try:  # newer typer runs on its own copy of click: its context stack is the one commands run in
    from typer._click.core import ParameterSource
    from typer._click.globals import get_current_context
except ImportError:  # typer on the click package
    from click import get_current_context  # type: ignore[no-redef]
    from click.core import ParameterSource  # type: ignore[assignment]
from neurogate.models import zoo
from neurogate.models.zoo import DEFAULT_MODEL

if TYPE_CHECKING:
    from neurogate.models.inputs import BatchSize
    from neurogate.models.loading import LoadedModel

console = Console()
err_console = Console(stderr=True)

#: The word the help shows for an option's value, by the value's type (a flag shows none; the help text says
#: what each value means, so typer's ``<str>``/``<bool>`` on every row only takes width at 80 columns).
METAVARS = {"boolean": "", "integer": "N", "float": "NUM", "path": "PATH"}


def _tidy_help(command: Any) -> None:
    """Give every option of ``command`` and its subcommands a short value word (see :data:`METAVARS`)."""
    for sub in getattr(command, "commands", {}).values():
        _tidy_help(sub)
    for param in command.params:
        if param.param_type_name == "option" and param.metavar is None:
            param.metavar = _value_word(param)
    made = command.get_help_option  # --help is made when first asked for: give it no value word either

    def get_help_option(ctx: Any) -> Any:
        option = made(ctx)
        if option is not None:
            option.metavar = ""
        return option

    command.get_help_option = get_help_option


def _value_word(param: Any) -> str:
    """The help's word for an option's value: none for a flag, else by the type of the value."""
    if param.is_flag:
        return ""
    described = getattr(param, "type_descriptor", None)  # typer on its own click copy
    if described is not None:
        if described.is_path:
            return "PATH"
        kind = described.annotation
        kind = typing.get_args(kind)[0] if described.is_list and typing.get_args(kind) else kind
        if kind is Path:
            return "PATH"
        name = getattr(kind, "__name__", "")
        name = {"int": "integer", "float": "float", "bool": "boolean"}.get(name, name)
    else:
        name = param.type.name
    return METAVARS.get(name, "TEXT")


class NeurogateGroup(ThreadedGroup):
    """The root group: every command takes ``--threads``, and option values read as short words in help."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        _tidy_help(self)


app = typer.Typer(
    name="neurogate",
    help="Find the few MLP neurons that carry a behaviour in a language model, and turn it down or up.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="markdown",
    cls=NeurogateGroup,  # every command takes --threads; short value words in help
)

DEFAULT_SPEC = f"zoo:{DEFAULT_MODEL}"
ASK_MIB = 500  # a zoo model larger than this is pulled only when named, confirmed or --yes

# help panels, in pipeline order
MODELS = "Models"
STEER = "Find and steer a circuit"
EVAL = "Evaluate"

ModelOpt = Annotated[
    str,
    typer.Option(
        "--model",
        "-m",
        help="Hub id, local model directory, .gguf file, or zoo:NAME (see `neurogate models list`).",
    ),
]
CircuitModelOpt = Annotated[
    str,
    typer.Option(
        "--model",
        "-m",
        help="Hub id, local model directory, .gguf file, or zoo:NAME (default: the model the circuit was "
        "found on, else the default model).",
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


def quiet_transformers() -> None:
    """transformers' own warnings and progress bars off: set now where it is loaded, else by the variables
    it reads when it loads (not loading it here keeps ``--help`` fast)."""
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    else:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def setup_logging(verbose: bool = False) -> None:
    """Route library logging through rich on stderr; quiet the noisier dependencies."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=err_console, show_time=False, show_path=False)],
        force=True,
    )
    quiet_transformers()


class RunState:
    """What the root options and the running command tell the top level (``main``)."""

    yes: bool = False
    saved: list[str] = []  # noqa: RUF012 - one process, one command
    model_source: str = "the default"  # where the model came from when --model was not given


def note_saved(text: str) -> None:
    """Record where this command keeps finished work, for the message printed on Ctrl-C."""
    RunState.saved.append(text)


@app.callback()
def _root(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show informational log messages.")
    ] = False,
    yes: Annotated[
        bool,
        typer.Option("--yes", "-y", help=f"Pull a large zoo model without asking (over {ASK_MIB} MiB)."),
    ] = False,
    threads: ThreadsOpt = None,
) -> None:
    """neurogate: contrastive neuron attribution and steering for any Hugging Face causal LM.

    Example: neurogate info --model zoo:smollm2-135m-instruct
    """
    setup_logging(verbose)
    RunState.yes = yes
    RunState.saved = []
    RunState.model_source = "the default"
    remember_root(threads)


def given(param: str) -> bool:
    """Whether the running command's option ``param`` was given (on the command line or by environment)."""
    ctx = get_current_context(silent=True)
    source = ctx.get_parameter_source(param) if ctx is not None else None
    return source in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)


def preflight_model(spec: str, explicit: bool, source: str = "the default") -> None:
    """Check a model spec before any expensive step: the path exists and looks like a model, the zoo name is
    known, and a zoo model that must be pulled first is either small, named explicitly, or confirmed
    (``--yes``, or a prompt when interactive; otherwise an error saying what to pass)."""
    if not spec.startswith("zoo:"):
        from neurogate.models.loading import resolve_source

        resolve_source(spec)
        return
    name = spec.removeprefix("zoo:")
    entry = zoo.get(name)
    if zoo.is_pulled(name) or RunState.yes or explicit:
        return
    mib = entry.size / 2**20
    if mib <= ASK_MIB:
        return
    question = f"--model was not given, so {source} {spec} ({mib:,.0f} MiB download) would be pulled now"
    if sys.stdin.isatty() and typer.confirm(f"{question}. Pull it?", default=False, err=True):
        return
    raise ConfigError(
        f"{question}. Pass --model (e.g. --model zoo:{zoo.TEST_MODEL}, {zoo.ZOO[zoo.TEST_MODEL].size >> 20} "
        "MiB) or `neurogate --yes ...` to pull it"
    )


def load(model: str, dtype: str, device: str, trust_remote_code: bool = False) -> LoadedModel:
    """Load ``--model`` with the common options (after :func:`preflight_model`)."""
    preflight_model(model, explicit=given("model"), source=RunState.model_source)
    from neurogate.models.loading import load_model

    return load_model(model, dtype=dtype, device=device, trust_remote_code=trust_remote_code)


def circuit_model(model: str, circuit: str | os.PathLike[str] | None) -> str:
    """The model a command that applies a circuit loads: ``--model`` when given, else the model the circuit
    was found on (said on stderr), else the default. A ``--model`` named otherwise than the circuit's model
    (a local copy, a fine-tune, a hub id for a zoo model) is used, with a note naming both; one whose shape
    does not fit the circuit is refused when it loads (:meth:`Circuit.check_model` names both)."""
    from neurogate.discovery.circuit import Circuit

    spec = Circuit.load(circuit).model.get("spec") if circuit is not None else None
    recorded = spec if isinstance(spec, str) and spec else None
    if recorded is None:
        return model
    if not given("model"):
        RunState.model_source = "the circuit's model"
        err_console.print(
            f"model: {recorded} (the circuit's model)", markup=False, highlight=False, soft_wrap=True
        )
        return recorded
    if not same_model(model, recorded):
        err_console.print(
            f"model: {model} (the circuit {circuit} was found on {recorded}; a model of another shape is "
            "refused once it loads)",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    return model


def same_model(a: str, b: str) -> bool:
    """Whether two model specs name the same model: equal, or the same local folder or file (a zoo name
    counts as its converted folder)."""
    if a == b:
        return True
    where = [_local_path(s) for s in (a, b)]
    return where[0] is not None and where[0] == where[1]


def _local_path(spec: str) -> Path | None:
    """The resolved local path a spec loads from, or ``None`` for a hub id or a missing path."""
    if spec.startswith("zoo:"):
        name = spec.removeprefix("zoo:")
        return zoo.model_dir(name).resolve() if name in zoo.ZOO else None
    path = Path(spec).expanduser()
    return path.resolve() if path.exists() else None


def parse_floats(text: str, option: str) -> list[float]:
    """``"0,0.5,1"`` -> ``[0.0, 0.5, 1.0]``."""
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"{option} takes comma-separated numbers such as 0,0.5,1; got {text!r}") from None
    if not values:
        raise ConfigError(f"{option} needs at least one number")
    return values


def parse_names(text: str, option: str) -> list[str]:
    """``"a, b"`` -> ``["a", "b"]``."""
    names = [x.strip() for x in text.split(",") if x.strip()]
    if not names:
        raise ConfigError(f"{option} needs at least one name")
    return names


def parse_batch_size(text: str) -> BatchSize:
    """``"auto"`` or a whole number."""
    if text == "auto":
        return "auto"
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"--batch-size takes 'auto' or a whole number, got {text!r}") from None
