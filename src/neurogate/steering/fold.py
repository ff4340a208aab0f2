"""Weight folding: the neuron intervention applied to the down-projection weights instead of through a hook.

Scaling neuron ``j`` by ``m`` before the down-projection equals scaling the weight's input column ``j``
(``"linear"`` layout, weight ``[d_model, d_mlp]``) or row ``j`` (``"conv1d"`` layout, ``[d_mlp, d_model]``).
The bias is untouched. The original columns are kept, so :meth:`Handle.remove` restores the weights
bit-exactly. Overlapping folds must be removed in reverse order (as nested ``with`` blocks do).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from neurogate.discovery.circuit import Circuit, Multiplier, Toward
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


def _add_bias(module: torch.nn.Module, weight: torch.Tensor, offset: torch.Tensor) -> Callable[[], None]:
    """Add ``offset`` (the write of constant neuron values, ``[d_model]``) to ``module``'s bias, creating a
    zero bias first when it has none; return the undo."""
    bias = getattr(module, "bias", None)
    created = bias is None
    if created:
        module.bias = torch.nn.Parameter(
            torch.zeros(offset.shape[0], dtype=weight.dtype, device=weight.device)
        )
        bias = module.bias
    assert isinstance(bias, torch.Tensor)
    original = bias.data.clone()
    bias.data.copy_((bias.data.float() + offset.to(bias.device)).to(bias.dtype))

    def restore() -> None:
        with torch.no_grad():
            if created:
                module.register_parameter("bias", None)
            else:
                bias.data.copy_(original)

    return restore


def fold(lm: LoadedModel, circuit: Circuit, multiplier: Multiplier = 0.0, toward: Toward = "zero") -> Handle:
    """Fold ``multiplier`` for each circuit neuron into the down-projection weights, until removed.

    Same result as :func:`neurogate.steering.steer` with no hook cost at inference; the handle (also a
    context manager) writes the kept original slices back. With ``toward="mean"`` the constant part
    ``(1 - m) * mean_neg`` of each neuron goes into the down-projection's bias (created when the layer has
    none, and removed again by the handle).
    """
    circuit.check_model(lm)
    dim = 0 if lm.adapter.spec.layout == "conv1d" else 1
    undo: list[Callable[[], None]] = []
    with torch.no_grad():
        for layer, scale in circuit.scales(multiplier, toward).items():
            module = lm.adapter.down_proj(layer)
            weight = module.weight
            assert isinstance(weight, torch.Tensor)
            if scale.offset is not None:
                columns = weight.data.index_select(dim, scale.index.to(weight.device)).float()
                write = (
                    scale.offset.to(weight.device) @ columns
                    if dim == 0
                    else columns @ scale.offset.to(weight.device)
                )
                undo.append(_add_bias(module, weight, write))
            original = _fold_layer(weight.data, scale.index, scale.factor, dim)
            undo.append(_restorer(weight.data, scale.index, original, dim))
    return Handle(undo, label=f"fold {len(circuit)} neurons")
