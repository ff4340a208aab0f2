"""`neurogate export`: a steered model in the format a serving engine reads.

``dir`` (a transformers directory with the fold), ``lora`` (a PEFT adapter equal to the fold), ``gguf``
(the source GGUF with the folded down-projections) and ``control-vector`` (CAA for llama.cpp). A ``mean``
circuit's constant goes into the MLP bias (dir), the LoRA's B bias (lora) or a control vector beside the
GGUF (gguf; :mod:`neurogate.export.mean_constant`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from neurogate import prompts
from neurogate.cli import app as cli
from neurogate.errors import ConfigError
from neurogate.models import zoo
from neurogate.outputs import check_file_target

if TYPE_CHECKING:
    from neurogate.discovery.circuit import Circuit
    from neurogate.discovery.directions import ResidualDirections

FORMATS = ("dir", "lora", "gguf", "control-vector")
CONVERT_HINT = (
    "a transformers directory has no GGUF to copy: export it with --format dir, then convert that folder "
    "with llama.cpp's converter: python convert_hf_to_gguf.py steered-model/ --outtype f16 "
    "--outfile steered.gguf (or pass --model zoo:NAME or a .gguf file)"
)


def gguf_source(model: str) -> Path:
    """The GGUF file behind ``--model``: a zoo model's kept source, or a ``.gguf`` path."""
    if model.startswith("zoo:"):
        return zoo.ensure_gguf(model.removeprefix("zoo:"))
    if model.lower().endswith(".gguf"):
        return Path(model).expanduser()
    raise ConfigError(CONVERT_HINT)


def _recorded(circuit: Circuit, kind: str | None, multiplier: float | None) -> tuple[str, float]:
    """``--kind`` and ``--multiplier``, with what was left out taken from the circuit's recorded
    intervention (a tuned circuit's), else ``cna`` and ``m = 0``."""
    recorded_kind, recorded_m = circuit.recorded_intervention() or ("cna", 0.0)
    kind = kind or recorded_kind
    if kind not in ("cna", "mean"):
        raise ConfigError(f"--kind must be cna or mean, got {kind!r}")
    return kind, recorded_m if multiplier is None else multiplier


def _directions(
    model: str, directions: Path | None, positive: str, negative: str, dtype: str, device: str
) -> ResidualDirections:
    from neurogate.discovery.directions import ResidualDirections, compute_directions

    if directions is not None:
        return ResidualDirections.load(directions)
    lm = cli.load(model, dtype, device)
    cli.err_console.print(
        f"computing residual directions from {positive} vs {negative} ...", markup=False, highlight=False
    )
    return compute_directions(lm, list(prompts.load(positive)), list(prompts.load(negative)))


@cli.app.command("export", rich_help_panel=cli.STEER)
def export_command(
    # a str, not a Path: a trailing slash (a folder was meant) must reach the output checks
    out: Annotated[
        str, typer.Option("--out", "-o", help="Folder (dir, lora) or file (gguf, control-vector).")
    ],
    circuit: Annotated[
        Path | None, typer.Option("--circuit", "-c", help="Circuit JSON from `neurogate discover`.")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="dir, lora, gguf or control-vector.")] = "dir",
    model: cli.CircuitModelOpt = cli.DEFAULT_SPEC,
    multiplier: Annotated[
        float | None,
        typer.Option(
            "--multiplier",
            "-x",
            help="Neuron multiplier m to fold in (1 = unchanged, 0 ablates). Default: the circuit's "
            "recorded multiplier, else 0.",
        ),
    ] = None,
    kind: Annotated[
        str | None,
        typer.Option(
            "--kind",
            help="cna (multiply toward zero) or mean (toward the negative-prompt mean; its constant goes "
            "into an MLP bias (dir, where the family can save one), the LoRA's B bias (lora, for peft) or a "
            "control vector beside the GGUF (gguf, for llama.cpp)). Default: the circuit's recorded kind, "
            "else cna.",
        ),
    ] = None,
    gguf_type: Annotated[
        str, typer.Option("--gguf-type", help="gguf: store folded tensors as f16 or bf16.")
    ] = "f16",
    directions: Annotated[
        Path | None, typer.Option("--directions", help="control-vector: saved residual directions.")
    ] = None,
    strength: Annotated[float, typer.Option("--strength", help="control-vector: CAA strength s.")] = 1.0,
    layer: Annotated[
        int | None, typer.Option("--layer", help="control-vector: layer (default: best).")
    ] = None,
    positive: Annotated[
        str, typer.Option("--positive", help="control-vector: prompts with the behaviour.")
    ] = ("builtin:harmful"),
    negative: Annotated[str, typer.Option("--negative", help="control-vector: prompts without it.")] = (
        "builtin:benign"
    ),
    overwrite: Annotated[
        bool,
        typer.Option("--overwrite", help="Replace --out only when it holds an earlier neurogate export."),
    ] = False,
    dtype: cli.DtypeOpt = "auto",
    device: cli.DeviceOpt = "auto",
    trust_remote_code: cli.TrustOpt = False,
) -> None:
    """Export a steered model: a transformers directory, a LoRA adapter, a GGUF, or a control vector.

    Example: neurogate export --circuit circuit.json --multiplier 0 --format lora --out refusal-off/
    """
    import torch

    from neurogate.discovery.circuit import Circuit, Toward
    from neurogate.export.control_vector import export_control_vector
    from neurogate.export.gguf import export_gguf, gguf_shape, read_gguf
    from neurogate.export.lora import export_lora
    from neurogate.export.model import check_target, export_model
    from neurogate.models.hooks import check_scale

    if fmt not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    if fmt in ("gguf", "control-vector"):  # a file: checked before any model is pulled or loaded
        check_file_target(out, "--out", example="steered.gguf")
    model = cli.circuit_model(model, circuit)
    if fmt == "control-vector":
        found = _directions(model, directions, positive, negative, dtype, device)
        hint = gguf_shape(read_gguf(gguf_source(model)))["arch"] if model.startswith("zoo:") else ""
        path = export_control_vector(
            found, out, strength=strength, layer=layer, model_hint=hint, overwrite=overwrite
        )
        cli.console.print(
            f"[green]exported:[/] {escape(str(path))} (CAA s={strength:g}); llama.cpp: --control-vector "
            f"{escape(str(path))}",
            highlight=False,
        )
        return
    if circuit is None:
        raise ConfigError(f"--format {fmt} needs --circuit (create one with `neurogate discover`)")
    loaded = Circuit.load(circuit)
    kind, multiplier = _recorded(loaded, kind, multiplier)
    toward: Toward = "mean" if kind == "mean" else "zero"
    if fmt == "gguf" and toward == "mean":
        from neurogate.export.mean_constant import export_gguf_mean

        path, vec = export_gguf_mean(
            gguf_source(model), loaded, multiplier, out, store=gguf_type, overwrite=overwrite
        )
        how = (
            f"the constant is in the control vector {escape(str(vec))}; run both with llama.cpp: "
            f"llama-server -m {escape(str(path))} --control-vector {escape(str(vec))} (Ollama cannot load it)"
        )
    elif fmt == "gguf":
        path = export_gguf(gguf_source(model), loaded, multiplier, out, store=gguf_type, overwrite=overwrite)
        how = "run it with llama.cpp (llama-server -m FILE) or Ollama (FROM ./FILE)"
    else:
        check_scale([multiplier], torch.float32, "multiplier")  # the model's own dtype is checked once loaded
        check_target(out, overwrite, [str(circuit), model])  # before the model loads
        lm = cli.load(model, dtype, device, trust_remote_code)
        if fmt == "lora":
            path = export_lora(
                lm, loaded, multiplier, out, overwrite=overwrite, inputs=[str(circuit)], toward=toward
            )
            how = (
                "the constant is the LoRA's B bias: load it with peft (PeftModel.from_pretrained); vLLM does "
                "not apply LoRA biases, so for vLLM export --format dir"
                if toward == "mean"
                else "serve it with vLLM --enable-lora (see `neurogate serve`) or load it with peft"
            )
        else:
            path = export_model(
                lm, loaded, multiplier, out, overwrite=overwrite, inputs=[str(circuit)], toward=toward
            )
            how = "load it with AutoModelForCausalLM.from_pretrained or serve it with vLLM"
    cli.console.print(
        f"[green]exported:[/] {escape(str(path))} ({len(loaded)} neurons, {kind} m={multiplier:g}); {how}",
        highlight=False,
    )
