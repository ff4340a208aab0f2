"""Weight folding in mixture-of-experts layers: each expert neuron's factor goes into its own expert's
down-projection column.

Expert ``e``'s down-projection is the slice ``experts.down_proj[e]`` (``[d_model, d_expert]``) of the fused
3-D parameter, and the shared expert's is an ordinary ``nn.Linear``; scaling column ``j`` by ``m`` equals
scaling neuron ``j``'s activation on every token routed to that expert, which is exactly what the hook does
(:func:`neurogate.models.moe.scale_block`). The original columns are kept for an exact undo.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from neurogate.discovery.circuit import LayerScale
from neurogate.errors import ConfigError
from neurogate.models.loading import LoadedModel
from neurogate.models.moe import down_weights, split_scale


def _scale_columns(weight: torch.Tensor, index: torch.Tensor, factor: torch.Tensor) -> Callable[[], None]:
    index = index.to(weight.device)
    original = weight.index_select(1, index).clone()
    scaled = original.float() * factor.to(weight.device).view(1, -1)
    weight.index_copy_(1, index, scaled.to(weight.dtype))

    def restore() -> None:
        with torch.no_grad():
            weight.index_copy_(1, index, original)

    return restore


def fold_experts(lm: LoadedModel, scales: Mapping[int, LayerScale]) -> list[Callable[[], None]]:
    """Scale the circuit's columns of each expert's down-projection in place; return the undo steps."""
    layout = lm.adapter.moe
    assert layout is not None
    if any(scale.offset is not None for scale in scales.values()):
        raise ConfigError(
            "mean-ablation (toward='mean') cannot be folded into a mixture-of-experts model: the experts' "
            "down-projections have no bias, and a constant would reach tokens not routed to the expert. "
            "Fold with toward='zero', or steer with hooks"
        )
    undo: list[Callable[[], None]] = []
    try:
        with torch.no_grad():
            for layer, scale in scales.items():
                weights = down_weights(lm.adapter.down_proj(layer))
                for expert, (index, factor, _) in split_scale(
                    layout, (scale.index, scale.factor, None)
                ).items():
                    weight = weights[layout.n_experts if expert is None else expert]
                    if weight.device.type == "meta":
                        raise ConfigError(
                            f"layer {layer}'s experts are offloaded, so their weights cannot be edited in "
                            "place; steer with hooks or give the model enough GPU memory"
                        )
                    undo.append(_scale_columns(weight, index, factor))
    except BaseException:
        for step in reversed(undo):
            step()
        raise
    return undo
