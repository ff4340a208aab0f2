"""Exporting a steered model: a standard transformers model directory with the multiplier folded in.

The result loads with plain ``AutoModelForCausalLM.from_pretrained`` (no neurogate, no hooks) and carries
a README stating the circuit, the multiplier and the source model, plus the circuit file itself.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path

import torch

from neurogate.discovery.circuit import Circuit, Multiplier, Toward
from neurogate.errors import ConfigError
from neurogate.export.mlp_bias import savable_mlp_bias
from neurogate.export.output import staged_dir
from neurogate.models.hooks import check_scale
from neurogate.models.loading import LoadedModel
from neurogate.models.moe import down_weights
from neurogate.outputs import OWNER, apply_umask, check_writable_dir
from neurogate.outputs import check_target as check_target_path
from neurogate.steering.fold import fold
from neurogate.version import __version__

logger = logging.getLogger(__name__)


def _describe_multiplier(circuit: Circuit, multiplier: Multiplier) -> str:
    if isinstance(multiplier, int | float):
        return f"{float(multiplier):g} for every neuron"
    factors = circuit.factors(multiplier)
    return f"per neuron, {min(factors):g} to {max(factors):g} (listed in neurogate_export.json)"


def _readme(lm: LoadedModel, circuit: Circuit, multiplier: Multiplier, toward: Toward = "zero") -> str:
    per_layer = ", ".join(f"L{layer}: {count}" for layer, count in circuit.per_layer().items())
    total = lm.adapter.n_neurons
    return "\n".join(
        [
            f"# {Path(lm.spec).name} with a neuron intervention folded into its weights",
            "",
            "This is a standard transformers model directory. Each circuit neuron's input column of its",
            (
                "expert's down-projection (neuron expert * d_expert + j is column j of expert's)"
                if lm.adapter.moe is not None
                else "layer's MLP down-projection"
            )
            + " was multiplied by the multiplier below, which equals multiplying",
            "the neuron's activation at every position"
            + (" routed to its expert." if lm.adapter.moe is not None else ".")
            + (
                " Mean-ablation: each neuron's constant (1 - m) * mean on the negative prompts is written "
                "through the down-projection's bias (other MLP projections got zero biases where the "
                "config needed `mlp_bias`)."
                if toward == "mean"
                else " Nothing else changed."
            ),
            "",
            f"- Source model: `{lm.spec}` ({lm.adapter.family}, {lm.adapter.n_layers} layers x "
            f"{lm.adapter.d_mlp} neurons)",
            f"- Circuit: {len(circuit)} neurons ({100 * len(circuit) / total:.3f}% of {total:,}), found on "
            f"`{circuit.model.get('spec', '?')}` by `{circuit.method.get('score', '?')}`",
            f"- Neurons per layer: {per_layer}",
            f"- Multiplier: {_describe_multiplier(circuit, multiplier)} (0 ablates, 1 leaves unchanged)",
            "- The circuit is in `neurogate_circuit.json`.",
            "",
            "```python",
            "from transformers import AutoModelForCausalLM, AutoTokenizer",
            'model = AutoModelForCausalLM.from_pretrained("PATH")',
            'tokenizer = AutoTokenizer.from_pretrained("PATH")',
            "```",
            "",
        ]
    )


MARKER = "neurogate_export.json"
"""The file every export holds: what was exported, and the files written. ``overwrite`` replaces a folder
only when it holds this marker and nothing beyond the files it lists."""


def _written_by_neurogate(out: Path) -> str | None:
    """``None`` when ``out`` is an earlier export holding only its own files, else why it is not."""
    try:
        meta = json.loads((out / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return f"it holds no {MARKER}, so it is not a neurogate export"
    if not isinstance(meta, dict) or meta.get("kind") != "neurogate.export":
        return f"its {MARKER} does not describe a neurogate export"
    files = meta.get("files")
    if isinstance(files, list):
        extra = sorted(p.name for p in out.iterdir() if p.name not in {*map(str, files), MARKER})
        if extra:
            return f"it holds files the export did not write ({', '.join(extra[:5])})"
    return None


def check_target(out: str | os.PathLike[str], overwrite: bool, inputs: Sequence[str] = ()) -> Path:
    """Refuse an export target that is unsafe to write (see :func:`neurogate.outputs.check_target`), a file,
    or a non-empty folder unless ``overwrite`` and it is an earlier export; return it resolved."""
    target = check_target_path(out, inputs=inputs)
    if target.exists() and not target.is_dir():
        raise ConfigError(f"{out} exists and is not a directory; choose another --out")
    check_writable_dir(target.parent, "--out", str(out))
    if target.is_dir() and any(target.iterdir()):
        if not overwrite:
            raise ConfigError(
                f"{out} is not empty; pass overwrite=True (--overwrite) to replace an earlier export, or "
                "pick a new --out"
            )
        why = _written_by_neurogate(target)
        if why is not None:
            raise ConfigError(
                f"{out} is not empty and {why}; --overwrite replaces only an earlier neurogate export "
                "(neurogate never deletes what it did not write). Pick a new --out"
            )
    return target


def _inputs(lm: LoadedModel) -> list[str]:
    """Local paths the export reads (the model's folder), which the target must not contain."""
    return [p for p in (lm.source, lm.spec) if p and Path(p).expanduser().exists()]


def _write_export(
    lm: LoadedModel, circuit: Circuit, multiplier: Multiplier, tmp: Path, toward: Toward = "zero"
) -> None:
    with (
        savable_mlp_bias(lm, circuit) if toward == "mean" else nullcontext(),
        fold(lm, circuit, multiplier, toward),
    ):
        check_folded_finite(lm, circuit)
        lm.model.save_pretrained(tmp)
    lm.tokenizer.save_pretrained(tmp)
    circuit.save(tmp / "neurogate_circuit.json")
    (tmp / "README.md").write_text(_readme(lm, circuit, multiplier, toward))
    meta = {
        "kind": "neurogate.export",
        "neurogate_version": __version__,
        "source_model": lm.spec,
        "circuit_sha256": hashlib.sha256((tmp / "neurogate_circuit.json").read_bytes()).hexdigest(),
        "neurons": len(circuit),
        "toward": toward,
        "per_layer": {str(k): v for k, v in circuit.per_layer().items()},
        "multiplier": float(multiplier)
        if isinstance(multiplier, int | float)
        else [
            {"layer": n.layer, "index": n.index, "multiplier": f}
            for n, f in zip(circuit.neurons, circuit.factors(multiplier), strict=True)
        ],
        "files": sorted(p.name for p in tmp.iterdir() if p.name != OWNER),
    }
    (tmp / MARKER).write_text(json.dumps(meta, indent=1) + "\n")
    apply_umask(tmp)


def check_folded_finite(lm: LoadedModel, circuit: Circuit) -> None:
    """Raise when a folded down-projection (weights, and bias for mean-ablation) holds inf or NaN in the
    model's own dtype: a multiplier too large for the dtype would otherwise write a broken model."""
    for layer in circuit.per_layer():
        module = lm.adapter.down_proj(layer)
        parts = (
            {f"expert {i}": w for i, w in enumerate(down_weights(module))}
            if lm.adapter.moe is not None
            else {name: getattr(module, name, None) for name in ("weight", "bias")}
        )
        for name, tensor in parts.items():
            if isinstance(tensor, torch.Tensor) and not bool(torch.isfinite(tensor).all()):
                raise ConfigError(
                    f"folding the multiplier makes layer {layer}'s down-projection {name} overflow to inf or "
                    f"NaN in {str(tensor.dtype).removeprefix('torch.')} (largest finite value "
                    f"{torch.finfo(tensor.dtype).max:.3g}); nothing was written. Use a smaller multiplier"
                )


def export_model(
    lm: LoadedModel,
    circuit: Circuit,
    multiplier: Multiplier,
    out_dir: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    inputs: Sequence[str] = (),
    toward: Toward = "zero",
) -> Path:
    """Save ``lm`` with ``multiplier`` folded into the circuit's down-projection weights to ``out_dir``.

    Written to a temporary directory next to ``out_dir`` and renamed into place, so a crash never leaves
    a half-written model; the weights of ``lm`` are restored afterwards. ``overwrite`` replaces only an
    earlier export (its :data:`MARKER` lists every file in it); ``inputs`` are paths the target must not
    contain (the model's own folder always counts). Folded weights are checked to be finite first.
    ``toward="mean"`` folds mean-ablation (the constant goes into the MLP bias; see
    :mod:`neurogate.export.mlp_bias` for the families that can save one).
    """
    circuit.check_model(lm)
    check_scale(circuit.factors(multiplier), lm.dtype, "the multiplier")
    out = check_target(out_dir, overwrite, [*inputs, *_inputs(lm)])
    with staged_dir(out) as tmp:
        _write_export(lm, circuit, multiplier, tmp, toward)
    logger.info("exported %s with %d folded neurons to %s", lm.spec, len(circuit), out)
    return out
