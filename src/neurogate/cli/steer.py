"""`neurogate steer`: replies with and without an intervention, side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from neurogate.cli.app import DEFAULT_SPEC, DeviceOpt, DtypeOpt, ModelOpt, TrustOpt, app, console, err_console
from neurogate.errors import ConfigError
from neurogate.interventions import KINDS
from neurogate.interventions.base import Intervention
from neurogate.loading import LoadedModel

CircuitOpt = Annotated[
    Path | None, typer.Option("--circuit", "-c", help="Circuit JSON from `neurogate discover` (cna, random).")
]
MultiplierOpt = Annotated[
    float | None,
    typer.Option("--multiplier", help="Neuron multiplier m (0 ablates, 1 = off, >1 amplifies); cna only."),
]
MethodOpt = Annotated[str, typer.Option("--method", help="cna, caa, ablation or random.")]
StrengthOpt = Annotated[
    float | None,
    typer.Option("--strength", help="Strength (0 = off, 1 = full); cna/random use m = 1 - strength."),
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


def resolve_strength(method: str, multiplier: float | None, strength: float | None) -> float:
    """The strength from ``--multiplier`` (cna/random: strength = 1 - m) or ``--strength`` (default 1)."""
    if method not in KINDS:
        raise ConfigError(f"--method must be one of {', '.join(KINDS)}, got {method!r}")
    if multiplier is not None and strength is not None:
        raise ConfigError("give --multiplier or --strength, not both")
    if multiplier is not None:
        if method not in ("cna", "random"):
            raise ConfigError(f"--multiplier applies to cna and random; use --strength with {method}")
        return 1.0 - multiplier
    return 1.0 if strength is None else strength


def label(method: str, strength: float) -> str:
    """A short column title such as ``cna m=0`` or ``caa s=0.5``."""
    if method in ("cna", "random"):
        return f"{method} m={1.0 - strength:g}"
    return f"{method} s={strength:g}"


def build_intervention(
    lm: LoadedModel,
    method: str,
    strength: float,
    *,
    circuit_path: Path | None,
    positive: str,
    negative: str,
    layer: int | None = None,
    seed: int = 0,
    cache: dict[str, Any] | None = None,
) -> Intervention:
    """Turn CLI choices into an intervention; caa/ablation directions are computed once per ``cache``."""
    from neurogate.circuit import Circuit
    from neurogate.interventions import make

    cache = {} if cache is None else cache
    if method in ("cna", "random"):
        if circuit_path is None:
            raise ConfigError(f"--method {method} needs --circuit (create one with `neurogate discover`)")
        if "circuit" not in cache:
            cache["circuit"] = Circuit.load(circuit_path)
        opts: dict[str, Any] = {"seed": seed} if method == "random" else {}
        return make(method, lm, cache["circuit"], strength, **opts)  # type: ignore[arg-type]
    if "directions" not in cache:
        from neurogate import prompts
        from neurogate.directions import compute_directions

        err_console.print(f"computing residual directions from {positive} vs {negative} ...", highlight=False)
        cache["directions"] = compute_directions(
            lm, list(prompts.load(positive)), list(prompts.load(negative))
        )
        err_console.print(f"best layer: {cache['directions'].best_layer}", highlight=False)
    return make(method, lm, cache["directions"], strength, layer=layer)  # type: ignore[arg-type]


def read_prompts(prompt: list[str] | None, prompts_spec: str | None, limit: int | None) -> list[str]:
    """Prompts from repeated ``--prompt`` and/or a ``--prompts`` set."""
    found = list(prompt or [])
    if prompts_spec:
        from neurogate import prompts

        found += list(prompts.load(prompts_spec, limit=limit))
    if not found:
        raise ConfigError("give at least one --prompt TEXT or --prompts FILE")
    return found


@app.command()
def steer(
    model: ModelOpt = DEFAULT_SPEC,
    circuit: CircuitOpt = None,
    prompt: Annotated[list[str] | None, typer.Option("--prompt", help="A prompt (repeatable).")] = None,
    prompts_file: Annotated[
        str | None, typer.Option("--prompts", help="Prompt set: file, builtin:NAME or hf:...")
    ] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="Use the first N of --prompts.")] = None,
    multiplier: MultiplierOpt = None,
    method: MethodOpt = "cna",
    strength: StrengthOpt = None,
    positive: PositiveOpt = "builtin:harmful",
    negative: NegativeOpt = "builtin:benign",
    layer: LayerOpt = None,
    seed: SeedOpt = 0,
    max_new_tokens: MaxNewOpt = 128,
    system_prompt: SystemOpt = None,
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "auto",
    trust_remote_code: TrustOpt = False,
) -> None:
    """Generate replies without and with an intervention and show them side by side.

    Example: neurogate steer --circuit circuit.json --multiplier 0 --prompt "How do I pick a lock?"
    """
    from neurogate.generation import generate
    from neurogate.loading import load_model

    chosen = resolve_strength(method, multiplier, strength)
    texts = read_prompts(prompt, prompts_file, limit)
    lm = load_model(model, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
    iv = build_intervention(
        lm, method, chosen, circuit_path=circuit, positive=positive, negative=negative, layer=layer, seed=seed
    )
    opts: dict[str, Any] = {"max_new_tokens": max_new_tokens, "system_prompt": system_prompt}
    plain = generate(lm, texts, **opts)
    steered = generate(lm, texts, intervention=iv, **opts)
    table = Table(title=f"neurogate steer: {model}", show_lines=True)
    table.add_column("prompt", ratio=1)
    table.add_column("unsteered", ratio=2)
    table.add_column(label(method, chosen), ratio=2)
    for text, a, b in zip(texts, plain, steered, strict=True):
        table.add_row(text, a.text, b.text)
    console.print(table)
