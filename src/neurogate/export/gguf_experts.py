"""Where a circuit's neurons live in a GGUF: llama.cpp's tensor names for dense and mixture-of-experts layers.

A dense layer's neurons are the columns of ``blk.{L}.ffn_down.weight`` (``[n_embd, n_ff]``). llama.cpp stores
a sparse layer's routed experts as one 3-D tensor ``blk.{L}.ffn_down_exps.weight`` (numpy order ``[n_expert,
n_embd, n_ff_exp]``: expert ``e``'s down-projection is slice ``e``) and Qwen2-MoE's shared expert as
``blk.{L}.ffn_down_shexp.weight``. A circuit found on a mixture-of-experts model numbers its neurons flat
(:mod:`neurogate.models.moe`); :func:`targets` maps them back to tensor, expert slice and column.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from neurogate.discovery.circuit import Circuit, LayerScale
from neurogate.models.moe import MoeLayout, split_scale

Edit = tuple[int | None, torch.Tensor, torch.Tensor]
"""One change to a tensor: the expert slice (``None``: a 2-D tensor), column indices and their factors."""

GGUF_ARCH = {"qwen2_moe": "qwen2moe", "qwen3_moe": "qwen3moe", "mixtral": "llama"}
"""llama.cpp's architecture name where it differs from neurogate's family name."""


def moe_width(field: Any, arch: str) -> int | None:
    """The flat neuron count of a GGUF's sparse layers (``field(key)`` reads its metadata), or ``None`` for
    a dense model: experts times each expert's width, plus the shared expert's."""
    n_experts = field(f"{arch}.expert_count")
    if not n_experts:
        return None
    d_expert = field(f"{arch}.expert_feed_forward_length") or field(f"{arch}.feed_forward_length")
    d_shared = field(f"{arch}.expert_shared_feed_forward_length") or 0
    return int(n_experts) * int(d_expert) + int(d_shared)


def targets(circuit: Circuit, scales: Mapping[int, LayerScale]) -> dict[str, list[Edit]]:
    """The tensors to fold, by llama.cpp name, each with its edits."""
    moe = circuit.shape.get("moe")
    if not moe:
        return {f"blk.{layer}.ffn_down.weight": [(None, s.index, s.factor)] for layer, s in scales.items()}
    layout = MoeLayout(**{k: int(v) for k, v in moe.items()})
    out: dict[str, list[Edit]] = {}
    for layer, scale in scales.items():
        for expert, (index, factor, _) in split_scale(layout, (scale.index, scale.factor, None)).items():
            if expert is None:
                out.setdefault(f"blk.{layer}.ffn_down_shexp.weight", []).append((None, index, factor))
            else:
                out.setdefault(f"blk.{layer}.ffn_down_exps.weight", []).append((expert, index, factor))
    return out


def apply_edits(values: torch.Tensor, edits: list[Edit]) -> torch.Tensor:
    """Scale the edited columns of a dequantized tensor (2-D, or 3-D with experts first), in place."""
    for expert, index, factor in edits:
        part = values if expert is None else values[expert]
        part[:, index] = part[:, index] * factor
    return values
