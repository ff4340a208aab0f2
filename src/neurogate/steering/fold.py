"""Weight folding: the neuron intervention applied to the down-projection weights instead of through a hook.

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

from neurogate.discovery.circuit import Circuit, Multiplier, Toward
from neurogate.errors import ConfigError
from neurogate.models.hooks import Handle, check_scale
from neurogate.models.loading import LoadedModel
from neurogate.steering.fold_moe import fold_experts


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
    none, and removed again by the handle). In a mixture-of-experts model each neuron's factor goes into
    its expert's down-projection (:mod:`neurogate.steering.fold_moe`).
    """
    circuit.check_model(lm)
    check_scale(circuit.factors(multiplier), lm.dtype, "multiplier")
    if lm.adapter.moe is not None:
        steps = fold_experts(lm, circuit.scales(multiplier, toward))
        return Handle(steps, label=f"fold {len(circuit)} neurons")
    dim = 0 if lm.adapter.spec.layout == "conv1d" else 1
    undo: list[Callable[[], None]] = []
    scales = circuit.scales(multiplier, toward)
    weights = {layer: writable_weight(lm.adapter.down_proj(layer), layer) for layer in scales}
    with torch.no_grad():
        for layer, scale in scales.items():
            module, weight = lm.adapter.down_proj(layer), weights[layer]
            if scale.offset is not None:
                columns = weight.index_select(dim, scale.index.to(weight.device)).float()
                write = (
                    scale.offset.to(weight.device) @ columns
                    if dim == 0
                    else columns @ scale.offset.to(weight.device)
                )
                undo.append(_add_bias(module, weight, write))
            original = _fold_layer(weight, scale.index, scale.factor, dim)
            undo.append(_restorer(weight, scale.index, original, dim))
    return Handle(undo, label=f"fold {len(circuit)} neurons")
