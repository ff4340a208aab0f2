"""Weight folding: the neuron multiplier applied to the down-projection weights instead of through a hook.

Scaling neuron ``j`` by ``m`` before the down-projection equals scaling the weight's input column ``j``
(``"linear"`` layout, weight ``[d_model, d_mlp]``) or row ``j`` (``"conv1d"`` layout, ``[d_mlp, d_model]``).
The bias is untouched. The original columns are kept, so :meth:`Handle.remove` restores the weights
bit-exactly. Overlapping folds must be removed in reverse order (as nested ``with`` blocks do). Layers may
sit on different devices (a model spread over GPUs): each edit happens on its weight's own device.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from neurogate.discovery.circuit import Circuit, Multiplier
from neurogate.errors import ConfigError
from neurogate.models.hooks import Handle
from neurogate.models.loading import LoadedModel


def resident_weight(module: nn.Module) -> torch.Tensor:
    """The weight of ``module`` with real values: the parameter itself, or, when accelerate offloaded the
    module (the parameter sits on the ``meta`` device between forward passes), the offloaded copy its hook
    loads from. Read it only: writes to an offloaded copy are not guaranteed to reach the model."""
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor):
        raise ConfigError(f"{type(module).__name__} has no weight tensor")
    if weight.device.type != "meta":
        return weight.data
    weights_map = getattr(getattr(module, "_hf_hook", None), "weights_map", None)
    if weights_map is not None and "weight" in weights_map:
        return torch.as_tensor(weights_map["weight"])
    raise ConfigError(f"the weight of {type(module).__name__} is on the meta device and holds no values")


def writable_weight(module: nn.Module, layer: int) -> torch.Tensor:
    """The parameter data that folding edits in place; offloaded weights are refused with what to do."""
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor):
        raise ConfigError(f"{type(module).__name__} has no weight tensor")
    if weight.device.type == "meta":
        raise ConfigError(
            f"layer {layer}'s down-projection is offloaded (accelerate keeps it off the GPUs between forward "
            "passes), so its weights cannot be edited in place. Steer with hooks (Circuit.apply / steer), "
            "export a LoRA adapter or a GGUF (both read the offloaded weights), or give the model enough GPU "
            "memory to hold every layer"
        )
    return weight.data


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
    scales = circuit.scales(multiplier)
    weights = {layer: writable_weight(lm.adapter.down_proj(layer), layer) for layer in scales}
    with torch.no_grad():
        for layer, scale in scales.items():
            original = _fold_layer(weights[layer], scale.index, scale.factor, dim)
            undo.append(_restorer(weights[layer], scale.index, original, dim))
    return Handle(undo, label=f"fold {len(circuit)} neurons")
