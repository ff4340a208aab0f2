"""Weight folding: the neuron multiplier applied to the down-projection weights instead of through a hook.

Scaling neuron ``j`` by ``m`` before the down-projection equals scaling the weight's input column ``j``
(``"linear"`` layout, weight ``[d_model, d_mlp]``) or row ``j`` (``"conv1d"`` layout, ``[d_mlp, d_model]``).
The bias is untouched. The original columns are kept, so :meth:`Handle.remove` restores the weights
bit-exactly. Overlapping folds must be removed in reverse order (as nested ``with`` blocks do).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from neurogate.discovery.circuit import Circuit, Multiplier
from neurogate.models.hooks import Handle
from neurogate.models.loading import LoadedModel


def _fold_layer(weight: torch.Tensor, index: torch.Tensor, factor: torch.Tensor, dim: int) -> torch.Tensor:
    """Scale ``weight``'s slices ``index`` along ``dim`` in place; return the original slices."""
    index = index.to(weight.device)
    original = weight.index_select(dim, index).clone()
    shape = [1, 1]
    shape[dim] = -1
    scaled = original.float() * factor.to(weight.device).view(shape)
    weight.index_copy_(dim, index, scaled.to(weight.dtype))
    return original


def _restorer(
    weight: torch.Tensor, index: torch.Tensor, original: torch.Tensor, dim: int
) -> Callable[[], None]:
    def restore() -> None:
        with torch.no_grad():
            weight.index_copy_(dim, index.to(weight.device), original)

    return restore


def fold(lm: LoadedModel, circuit: Circuit, multiplier: Multiplier = 0.0) -> Handle:
    """Fold ``multiplier`` for each circuit neuron into the down-projection weights, until removed.

    Same result as :func:`neurogate.interventions.steer` with no hook cost at inference; the handle
    (also a context manager) writes the kept original slices back.
    """
    circuit.check_model(lm)
    dim = 0 if lm.adapter.spec.layout == "conv1d" else 1
    undo = []
    with torch.no_grad():
        for layer, scale in circuit.scales(multiplier).items():
            weight = lm.adapter.down_proj(layer).weight
            assert isinstance(weight, torch.Tensor)
            original = _fold_layer(weight.data, scale.index, scale.factor, dim)
            undo.append(_restorer(weight.data, scale.index, original, dim))
    return Handle(undo, label=f"fold {len(circuit)} neurons")
