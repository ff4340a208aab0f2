"""A circuit at multiplier m as a PEFT LoRA adapter on the down-projections that equals the fold exactly.

Folding scales the circuit's input columns of ``W_down`` by ``m``: ``W' = W + W[:, idx] (m - 1) S`` where
``S`` selects the circuit's neurons. That update has rank ``k`` (the layer's neuron count), so it is a
LoRA update ``B A`` with ``A = S`` (one-hot rows) and ``B = W[:, idx] (m - 1)`` at scaling 1. Each layer's
rank is its neuron count padded with zero rows up to a size serving engines accept (:data:`ENGINE_RANKS`);
``lora_alpha`` equals each layer's rank, so the scaling is exactly 1 in PEFT and in engines that read only
the global ``r`` and ``lora_alpha``. One base model can then serve many circuits and multipliers as
adapters, per request (vLLM multi-LoRA or any PEFT-compatible server), with no change to the engine.

Mean-ablation (``toward="mean"``) adds a constant to the down-projection's output, ``c_L = sum_i
(1 - m_i) mean_neg_i W[:, i]``: it goes into the bias of the B side (PEFT's ``lora_bias``, PEFT >= 0.14),
which PEFT adds to the module's output at every position at scaling 1, so the adapter equals the hooked
model there too.
vLLM does not load LoRA biases (its support was removed in 2025, vllm-project/vllm#25807), so such an adapter
is for PEFT / transformers; ``merge_and_unload`` needs a base layer with a bias (GPT-2, GPT-NeoX).

The adapter is written without ``peft`` (plain safetensors and JSON in PEFT's layout); ``peft`` loads it.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from neurogate.discovery.circuit import Circuit, Multiplier, Toward
from neurogate.errors import ConfigError
from neurogate.export.model import check_target
from neurogate.export.output import check_finite, circuit_lines, staged_dir, write_meta
from neurogate.models.devices import dtype_name, resolve_dtype
from neurogate.models.loading import LoadedModel
from neurogate.steering.fold import resident_weight

logger = logging.getLogger(__name__)

ENGINE_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)
"""LoRA ranks every engine accepts (vLLM's ``--max-lora-rank`` takes a value from a fixed set like this)."""

WEIGHTS = "adapter_model.safetensors"
CONFIG = "adapter_config.json"


def padded_rank(neurons: int) -> int:
    """The smallest rank in :data:`ENGINE_RANKS` that holds ``neurons``; past the largest, the next
    multiple of 256 (vLLM does not serve ranks above 512; PEFT does)."""
    for rank in ENGINE_RANKS:
        if neurons <= rank:
            return rank
    return -(-neurons // 256) * 256


@dataclass(frozen=True)
class LoraLayer:
    """One layer's update: ``module`` (its name in the model), ``lora_a`` [rank, d_mlp] and ``lora_b``
    [d_model, rank] in float32, the number of real (non-padding) rows, and ``bias`` [d_model] (float32,
    mean-ablation's constant; ``None`` otherwise)."""

    layer: int
    module: str
    lora_a: torch.Tensor
    lora_b: torch.Tensor
    neurons: int
    bias: torch.Tensor | None = None

    @property
    def rank(self) -> int:
        return int(self.lora_a.shape[0])


def lora_layers(
    lm: LoadedModel, circuit: Circuit, multiplier: Multiplier, toward: Toward = "zero"
) -> list[LoraLayer]:
    """The exact LoRA factors of folding ``multiplier`` into each circuit layer, on the CPU in float32
    (``toward="mean"``: with each layer's constant as the bias). Only the circuit's columns are read, from
    whichever device (or offloaded copy) holds each layer."""
    circuit.check_model(lm)
    if lm.adapter.moe is not None:
        raise ConfigError(
            f"{lm.spec} is a mixture-of-experts model: its experts' down-projections are fused 3-D "
            "parameters (transformers 5), not nn.Linear modules, so there is no module for a LoRA adapter "
            "to target. LoRA on fused experts (vLLM's FusedMoE LoRA, PEFT's target_parameters) is "
            "engine- and version-specific and neurogate does not write it. Export the folded model "
            "directory (`neurogate export --format dir`) or a GGUF (`--format gguf`) instead"
        )
    names = {id(module): name for name, module in lm.model.named_modules()}
    conv = lm.adapter.spec.layout == "conv1d"
    out = []
    for layer, scale in circuit.scales(multiplier, toward).items():
        module = lm.adapter.down_proj(layer)
        weight = resident_weight(module)
        k = int(scale.index.numel())
        rank = padded_rank(k)
        index = scale.index.to(weight.device)
        columns = (weight.index_select(0, index).T if conv else weight.index_select(1, index)).float().cpu()
        lora_b = torch.zeros(lm.adapter.d_model, rank)
        lora_b[:, :k] = columns * (scale.factor - 1.0)
        lora_a = torch.zeros(rank, lm.adapter.d_mlp)
        lora_a[torch.arange(k), scale.index] = 1.0
        bias = None if scale.offset is None else columns @ scale.offset
        out.append(LoraLayer(layer, names[id(module)], lora_a, lora_b, k, bias))
    return out


def adapter_config(lm: LoadedModel, layers: list[LoraLayer], base_model: str) -> dict[str, object]:
    """PEFT's ``adapter_config.json`` for ``layers``: per-layer ranks, scaling 1 everywhere, and
    ``lora_bias`` only when a layer carries mean-ablation's constant (plain adapters stay as before)."""
    rank = max(item.rank for item in layers)
    target = lm.adapter.spec.down_proj
    layers_path = next(p for p in lm.adapter.spec.layers if _has_path(lm, p))
    biased = {"lora_bias": True} if any(item.bias is not None for item in layers) else {}
    return {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model,
        "r": rank,
        "lora_alpha": rank,
        "rank_pattern": {item.module: item.rank for item in layers if item.rank != rank},
        "alpha_pattern": {item.module: item.rank for item in layers if item.rank != rank},
        "target_modules": [target],
        "layers_to_transform": [item.layer for item in layers],
        "layers_pattern": layers_path.rsplit(".", 1)[-1],
        "lora_dropout": 0.0,
        "bias": "none",
        "fan_in_fan_out": lm.adapter.spec.layout == "conv1d",
        "use_rslora": False,
        "use_dora": False,
        "init_lora_weights": True,
        "inference_mode": True,
        "modules_to_save": None,
        **biased,
    }


def _has_path(lm: LoadedModel, path: str) -> bool:
    obj: object = lm.model
    for part in path.split("."):
        obj = getattr(obj, part, None)
    return obj is lm.adapter.layers


def _readme(
    lm: LoadedModel, circuit: Circuit, multiplier: Multiplier, rank: int, size: int, toward: Toward
) -> str:
    if toward == "mean":
        how = [
            "Mean-ablation: `lora_B.bias` holds each layer's constant, sum of (1 - m) * mean * W[:, i]",
            "(PEFT `lora_bias`). PEFT and transformers apply it; vLLM does not load LoRA biases, so serve",
            "this adapter with PEFT (or export --format dir for vLLM).",
            "",
            "```python",
            "from peft import PeftModel",
            'model = PeftModel.from_pretrained(base_model, "PATH")',
            "```",
        ]
    else:
        how = [
            "```bash",
            f"vllm serve MODEL --enable-lora --max-lora-rank {rank} --lora-modules steered=PATH",
            "```",
        ]
    return "\n".join(
        [
            f"# LoRA adapter: a neuron intervention on {Path(lm.spec).name}",
            "",
            "A PEFT LoRA adapter on the MLP down-projections. Applied to the source model it equals",
            "multiplying each circuit neuron's activation by the multiplier at every position (the same",
            "change as `neurogate export --format dir`, exactly: `lora_A` selects the neurons, `lora_B` is",
            "their down-projection columns times (m - 1), scaling 1).",
            "",
            f"- Source model: `{lm.spec}`",
            *circuit_lines(circuit, multiplier, lm.adapter.n_neurons),
            f"- Rank: {rank} (largest layer; per-layer ranks in adapter_config.json), {size:,} bytes",
            "",
            *how,
            "",
        ]
    )


def export_lora(
    lm: LoadedModel,
    circuit: Circuit,
    multiplier: Multiplier,
    out_dir: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    dtype: str | torch.dtype | None = None,
    base_model: str | None = None,
    inputs: Sequence[str] = (),
    toward: Toward = "zero",
) -> Path:
    """Write the fold of ``multiplier`` as a PEFT LoRA adapter folder (``adapter_config.json`` and
    ``adapter_model.safetensors``) at ``out_dir``. ``dtype``: of the stored factors (default: the
    model's); ``base_model``: what the config names as the base (default: ``lm``'s source); ``overwrite``
    and ``inputs`` as in :func:`neurogate.export.model.export_model`. ``toward="mean"`` stores
    mean-ablation's constant as the B side's bias (for PEFT; vLLM does not read it)."""
    out = check_target(out_dir, overwrite, [*inputs, lm.source, lm.spec])
    layers = lora_layers(lm, circuit, multiplier, toward)
    if not layers:
        raise ConfigError("the circuit has no neurons, so there is nothing to export")
    store = lm.dtype if dtype is None else resolve_dtype(dtype)
    tensors: dict[str, torch.Tensor] = {}
    for item in layers:
        check_finite(item.lora_b, store, f"lora_B of layer {item.layer}")
        prefix = f"base_model.model.{item.module}"
        tensors[f"{prefix}.lora_A.weight"] = item.lora_a.to(store).contiguous()
        tensors[f"{prefix}.lora_B.weight"] = item.lora_b.to(store).contiguous()
        if item.bias is not None:
            check_finite(item.bias, store, f"the mean constant of layer {item.layer}")
            tensors[f"{prefix}.lora_B.bias"] = item.bias.to(store).contiguous()
    config = adapter_config(lm, layers, base_model or lm.source or lm.spec)
    rank = int(config["r"])  # type: ignore[call-overload]
    with staged_dir(out) as tmp:
        save_file(tensors, str(tmp / WEIGHTS), metadata={"format": "pt"})
        (tmp / CONFIG).write_text(json.dumps(config, indent=1) + "\n")
        size = (tmp / WEIGHTS).stat().st_size
        ranks = {str(item.layer): item.rank for item in layers}
        (tmp / "README.md").write_text(_readme(lm, circuit, multiplier, rank, size, toward))
        extra = {"rank": rank, "ranks": ranks, "dtype": dtype_name(store), "bytes": size, "toward": toward}
        write_meta(tmp, "lora", lm.spec, circuit, multiplier, **extra)
    logger.info("exported a rank-%d LoRA adapter (%d bytes) to %s", rank, size, out)
    return out
