"""Exporting a steered model: a standard transformers model directory with the multiplier folded in.

The result loads with plain ``AutoModelForCausalLM.from_pretrained`` (no neurogate, no hooks) and carries
a README stating the circuit, the multiplier and the source model, plus the circuit file itself.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from neurogate.discovery.circuit import Circuit, Multiplier
from neurogate.errors import ConfigError
from neurogate.models.loading import LoadedModel
from neurogate.steering.fold import fold

logger = logging.getLogger(__name__)


def _describe_multiplier(circuit: Circuit, multiplier: Multiplier) -> str:
    if isinstance(multiplier, int | float):
        return f"{float(multiplier):g} for every neuron"
    factors = circuit.factors(multiplier)
    return f"per neuron, {min(factors):g} to {max(factors):g} (listed in neurogate_export.json)"


def _readme(lm: LoadedModel, circuit: Circuit, multiplier: Multiplier) -> str:
    per_layer = ", ".join(f"L{layer}: {count}" for layer, count in circuit.per_layer().items())
    total = lm.adapter.n_neurons
    return "\n".join(
        [
            f"# {Path(lm.spec).name} with a neuron intervention folded into its weights",
            "",
            "This is a standard transformers model directory. Each circuit neuron's input column of its",
            "layer's MLP down-projection was multiplied by the multiplier below, which equals multiplying",
            "the neuron's activation at every position. Nothing else changed.",
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


def _check_target(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} exists and is not a directory; choose another --out")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ConfigError(
            f"{out} is not empty; pass overwrite=True (--overwrite) to replace it, or pick a new --out"
        )


def export_model(
    lm: LoadedModel,
    circuit: Circuit,
    multiplier: Multiplier,
    out_dir: str | os.PathLike[str],
    *,
    overwrite: bool = False,
) -> Path:
    """Save ``lm`` with ``multiplier`` folded into the circuit's down-projection weights to ``out_dir``.

    Written to a temporary directory next to ``out_dir`` and renamed into place, so a crash never leaves
    a half-written model; the weights of ``lm`` are restored afterwards.
    """
    circuit.check_model(lm)
    out = Path(out_dir).expanduser().resolve()
    _check_target(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        with fold(lm, circuit, multiplier):
            lm.model.save_pretrained(tmp)
        lm.tokenizer.save_pretrained(tmp)
        circuit.save(tmp / "neurogate_circuit.json")
        meta = {
            "kind": "neurogate.export",
            "source_model": lm.spec,
            "neurons": len(circuit),
            "per_layer": {str(k): v for k, v in circuit.per_layer().items()},
            "multiplier": float(multiplier)
            if isinstance(multiplier, int | float)
            else [
                {"layer": n.layer, "index": n.index, "multiplier": f}
                for n, f in zip(circuit.neurons, circuit.factors(multiplier), strict=True)
            ],
        }
        (tmp / "neurogate_export.json").write_text(json.dumps(meta, indent=1) + "\n")
        (tmp / "README.md").write_text(_readme(lm, circuit, multiplier))
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
            os.replace(out, old / out.name)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("exported %s with %d folded neurons to %s", lm.spec, len(circuit), out)
    return out
