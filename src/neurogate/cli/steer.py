"""`neurogate steer`: replies with and without an intervention, side by side."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from neurogate import prompts
from neurogate.cli import app as cli
from neurogate.cli.option_groups import F, option_group
from neurogate.cli.threads import speed
from neurogate.errors import ConfigError

if TYPE_CHECKING:
    from neurogate.models.loading import LoadedModel
    from neurogate.steering.base import Intervention

CircuitOpt = Annotated[
    Path | None, typer.Option("--circuit", "-c", help="Circuit JSON from `neurogate discover` (cna, random).")
]
MultiplierOpt = Annotated[
    float | None,
    typer.Option(
        "--multiplier",
        "-x",
        help="cna/random: multiply the neurons by m (1 = unchanged, 0 ablates, >1 amplifies). Default 0.",
    ),
]
MethodOpt = Annotated[
    str | None,
    typer.Option(
        "--method",
        help="cna, mean, caa, ablation or random (default: the circuit's recorded intervention, else cna).",
    ),
]
StrengthOpt = Annotated[
    float | None,
    typer.Option("--strength", help="caa/ablation: strength s (0 = unchanged, 1 = full). Default 1."),
]
PositiveOpt = Annotated[
    str, typer.Option("--positive", help="Prompts with the behaviour, for caa/ablation directions.")
]
NegativeOpt = Annotated[
    str, typer.Option("--negative", help="Prompts without it, for caa/ablation directions.")
]
LayerOpt = Annotated[int | None, typer.Option("--layer", help="caa/ablation layer (default: best layer).")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed of the random-neuron control.")]
MaxNewOpt = Annotated[int, typer.Option("--max-new-tokens", help="Most tokens to generate per reply.")]
SystemOpt = Annotated[str | None, typer.Option("--system-prompt", help="System prompt for every prompt.")]


@dataclass(frozen=True)
class SteeringOptions:
    """How to steer, as given on the command line: the method and its value (``None`` where not given),
    the prompts caa/ablation directions come from, their layer, and the random control's seed."""

    method: str | None = None
    multiplier: float | None = None
    strength: float | None = None
    positive: str = "builtin:harmful"
    negative: str = "builtin:benign"
    layer: int | None = None
    seed: int = 0

    def resolved(self, circuit: Path | None) -> tuple[str, float]:
        """The method (what was left out taken from the circuit's recorded intervention, else cna) and the
        value on its own scale."""
        method, multiplier = recorded_choice(circuit, self.method, self.multiplier, self.strength)
        return method, resolve_value(method, multiplier, self.strength)


#: What a command's ``steering`` parameter defaults to (the decorator always passes the options given).
NO_STEERING_OPTIONS = SteeringOptions()


def _options(
    multiplier: MultiplierOpt = None,
    method: MethodOpt = None,
    strength: StrengthOpt = None,
    positive: PositiveOpt = "builtin:harmful",
    negative: NegativeOpt = "builtin:benign",
    layer: LayerOpt = None,
    seed: SeedOpt = 0,
) -> SteeringOptions:
    """The group's parameters (typer reads them off this signature) and what they make."""
    return SteeringOptions(method, multiplier, strength, positive, negative, layer, seed)


_STEERING_GROUP = option_group("steering", _options)


def steering_options(command: F) -> F:
    """Give ``command`` the steering options (chat and steer) in place of its ``steering: SteeringOptions =
    NO_STEERING_OPTIONS`` parameter and call it with the :class:`SteeringOptions` they make."""
    return _STEERING_GROUP(command)


def resolve_value(method: str, multiplier: float | None, strength: float | None) -> float:
    """The number on ``method``'s own scale: ``--multiplier`` for neuron kinds (default 0, ablation),
    ``--strength`` for residual kinds (default 1). The other flag is refused with what to use instead."""
    from neurogate.steering.registry import get_kind

    scale = get_kind(method).scale
    if scale.name == "multiplier":
        if strength is not None:
            raise ConfigError(
                f"--method {method} takes --multiplier m (1 = unchanged, 0 ablates), not --strength; "
                f"neurogate 0.1's --strength s for {method} is --multiplier {1 - strength:g} now"
            )
        return 0.0 if multiplier is None else multiplier
    if multiplier is not None:
        raise ConfigError(f"--method {method} takes --strength s (0 = unchanged, 1 = full), not --multiplier")
    return 1.0 if strength is None else strength


def recorded_choice(
    circuit: Path | None, method: str | None, multiplier: float | None, strength: float | None
) -> tuple[str, float | None]:
    """``--method`` and ``--multiplier``, with what the user left out taken from the intervention the
    circuit records (a tuned circuit's kind and multiplier), else ``cna``."""
    from neurogate.discovery.circuit import Circuit

    if method is not None:
        return method, multiplier
    recorded = Circuit.load(circuit).recorded_intervention() if circuit is not None else None
    if recorded is None:
        return "cna", multiplier
    kind, m = recorded
    if multiplier is None and strength is None:
        multiplier = m
    cli.err_console.print(f"using the circuit's recorded intervention: {kind} m={multiplier:g}", markup=False)
    return kind, multiplier


def build_intervention(
    lm: LoadedModel,
    method: str,
    value: float,
    *,
    circuit_path: Path | None,
    positive: str,
    negative: str,
    layer: int | None = None,
    seed: int = 0,
    cache: dict[str, Any] | None = None,
) -> Intervention:
    """Turn CLI choices into an intervention; caa/ablation directions are computed once per ``cache``."""
    from neurogate.discovery.circuit import Circuit
    from neurogate.discovery.directions import compute_directions
    from neurogate.steering.registry import get_kind, make

    cache = {} if cache is None else cache
    kind = get_kind(method)
    if kind.source == "circuit":
        if circuit_path is None:
            raise ConfigError(f"--method {method} needs --circuit (create one with `neurogate discover`)")
        if "circuit" not in cache:
            cache["circuit"] = Circuit.load(circuit_path)
        options: dict[str, Any] = {"seed": seed} if "seed" in kind.options else {}
        return make(method, lm, cache["circuit"], value, **options)
    if "directions" not in cache:
        cli.err_console.print(
            f"computing residual directions from {positive} vs {negative} ...", markup=False, highlight=False
        )
        cache["directions"] = compute_directions(
            lm, list(prompts.load(positive)), list(prompts.load(negative))
        )
        cli.err_console.print(f"best layer: {cache['directions'].best_layer}", highlight=False)
    return make(method, lm, cache["directions"], value, layer=layer)


def read_prompts(prompt: list[str] | None, prompts_spec: str | None, limit: int | None) -> list[str]:
    """Prompts from repeated ``--prompt`` and/or a ``--prompts`` set."""
    found = list(prompt or [])
    if prompts_spec:
        found += list(prompts.load(prompts_spec, limit=limit))
    if not found:
        raise ConfigError("give at least one --prompt TEXT or --prompts FILE")
    return found


@cli.app.command(rich_help_panel=cli.STEER)
@steering_options
def steer(
    model: cli.CircuitModelOpt = cli.DEFAULT_SPEC,
    circuit: CircuitOpt = None,
    prompt: Annotated[list[str] | None, typer.Option("--prompt", help="A prompt (repeatable).")] = None,
    prompts_file: Annotated[
        str | None, typer.Option("--prompts", help="Prompt set: file, builtin:NAME or hf:...")
    ] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="Use the first N of --prompts.")] = None,
    steering: SteeringOptions = NO_STEERING_OPTIONS,
    max_new_tokens: MaxNewOpt = 128,
    system_prompt: SystemOpt = None,
    dtype: cli.DtypeOpt = "auto",
    device: cli.DeviceOpt = "auto",
    trust_remote_code: cli.TrustOpt = False,
) -> None:
    """Generate replies without and with an intervention and show them side by side.

    Example: neurogate steer --circuit circuit.json --multiplier 0 --prompt "How do I pick a lock?"
    """
    from neurogate.models.generation import generate

    model = cli.circuit_model(model, circuit)
    method, value = steering.resolved(circuit)
    texts = read_prompts(prompt, prompts_file, limit)
    lm = cli.load(model, dtype, device, trust_remote_code)
    iv = build_intervention(
        lm,
        method,
        value,
        circuit_path=circuit,
        positive=steering.positive,
        negative=steering.negative,
        layer=steering.layer,
        seed=steering.seed,
    )
    opts: dict[str, Any] = {"max_new_tokens": max_new_tokens, "system_prompt": system_prompt}
    started = time.perf_counter()
    plain = generate(lm, texts, **opts)
    middle = time.perf_counter()
    steered = generate(lm, texts, intervention=iv, **opts)
    ended = time.perf_counter()
    table = Table(title=f"neurogate steer: {escape(model)}", show_lines=True)
    table.add_column("prompt", ratio=1)
    table.add_column("unsteered", ratio=2)
    table.add_column(iv.label, ratio=2)
    for text, a, b in zip(texts, plain, steered, strict=True):
        table.add_row(Text(text), Text(a.text), Text(b.text))
    cli.console.print(table)
    timings = (("unsteered", plain, middle - started), (iv.label, steered, ended - middle))
    for label, replies, seconds in timings:
        tokens = sum(g.n_generated for g in replies)
        cli.err_console.print(f"{label}: {speed(tokens, seconds)}", markup=False, highlight=False)
