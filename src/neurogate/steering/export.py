"""Exporting a steered model: a standard transformers model directory with the multiplier folded in.

The result loads with plain ``AutoModelForCausalLM.from_pretrained`` (no neurogate, no hooks) and carries
a README stating the circuit, the multiplier and the source model, plus the circuit file itself. The other
formats (a LoRA adapter, a GGUF file, a llama.cpp control vector) live in :mod:`neurogate.steering.lora`,
:mod:`neurogate.steering.gguf` and :mod:`neurogate.steering.control_vector`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from neurogate.discovery.circuit import Circuit, Multiplier
from neurogate.models.loading import LoadedModel
from neurogate.steering.fold import fold, writable_weight
from neurogate.steering.output import check_finite, circuit_lines, staged_dir, write_meta

logger = logging.getLogger(__name__)


def _readme(lm: LoadedModel, circuit: Circuit, multiplier: Multiplier) -> str:
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
            *circuit_lines(circuit, multiplier, lm.adapter.n_neurons),
            "",
            "```python",
            "from transformers import AutoModelForCausalLM, AutoTokenizer",
            'model = AutoModelForCausalLM.from_pretrained("PATH")',
            'tokenizer = AutoTokenizer.from_pretrained("PATH")',
            "```",
            "",
        ]
    )


def check_folded_finite(lm: LoadedModel, circuit: Circuit, multiplier: Multiplier) -> None:
    """Raise before anything is written when a folded weight would overflow the model's dtype."""
    conv = lm.adapter.spec.layout == "conv1d"
    for layer, scale in circuit.scales(multiplier).items():
        weight = writable_weight(lm.adapter.down_proj(layer), layer)
        index = scale.index.to(weight.device)
        columns = weight.index_select(0 if conv else 1, index).float()
        factor = scale.factor.to(weight.device).view((-1, 1) if conv else (1, -1))
        check_finite(columns * factor, weight.dtype, f"the folded down-projection of layer {layer}")


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
    a half-written model; the weights of ``lm`` are restored afterwards. ``overwrite`` replaces only an
    empty folder or an earlier neurogate export.
    """
    circuit.check_model(lm)
    check_folded_finite(lm, circuit, multiplier)
    with staged_dir(out_dir, overwrite) as tmp:
        with fold(lm, circuit, multiplier):
            lm.model.save_pretrained(tmp)
        lm.tokenizer.save_pretrained(tmp)
        write_meta(tmp, "dir", lm.spec, circuit, multiplier)
        (tmp / "README.md").write_text(_readme(lm, circuit, multiplier))
    out = Path(out_dir).expanduser().resolve()
    logger.info("exported %s with %d folded neurons to %s", lm.spec, len(circuit), out)
    return out
