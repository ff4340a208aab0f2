"""Neuron multipliers: scale chosen MLP neurons at every position through a forward pre-hook.

The neuron site is the input of each layer's down-projection, ``[batch, pos, d_mlp]``. A steer multiplies
the circuit's neurons there by ``m`` (``m = 0`` ablates, ``m > 1`` amplifies) for prompt and generated
tokens alike. Steers compose: two steers on the same neuron multiply.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from neurogate.circuit import Circuit
from neurogate.errors import ConfigError
from neurogate.interventions.base import Handle, Intervention
from neurogate.loading import LoadedModel

Multiplier = float | Mapping[tuple[int, int], float] | torch.Tensor


@dataclass(frozen=True)
class LayerScale:
    """Neurons of one layer and the factor for each (``index`` and ``factor`` have the same length)."""

    index: torch.Tensor  # long [k]
    factor: torch.Tensor  # float32 [k]


def per_layer_scales(circuit: Circuit, multiplier: Multiplier) -> dict[int, LayerScale]:
    """Resolve ``multiplier`` into one :class:`LayerScale` per layer of the circuit.

    ``multiplier``: one number for every neuron; a mapping ``{(layer, index): m}`` (neurons it does not
    name keep ``m = 1``); or a tensor of ``len(circuit)`` factors in ``circuit.neurons`` order.
    """
    factors = neuron_factors(circuit, multiplier)
    grouped: dict[int, tuple[list[int], list[float]]] = {}
    for neuron, m in zip(circuit.neurons, factors, strict=True):
        idx, fac = grouped.setdefault(neuron.layer, ([], []))
        idx.append(neuron.index)
        fac.append(m)
    return {
        layer: LayerScale(torch.tensor(idx, dtype=torch.long), torch.tensor(fac, dtype=torch.float32))
        for layer, (idx, fac) in sorted(grouped.items())
    }


def neuron_factors(circuit: Circuit, multiplier: Multiplier) -> list[float]:
    """One factor per circuit neuron, in ``circuit.neurons`` order (validated)."""
    n = len(circuit)
    if isinstance(multiplier, torch.Tensor):
        if multiplier.dim() != 1 or multiplier.numel() != n:
            raise ConfigError(
                f"a multiplier tensor must have one factor per circuit neuron (shape [{n}]), "
                f"got shape {list(multiplier.shape)}"
            )
        values = [float(v) for v in multiplier.detach().float().cpu().tolist()]
    elif isinstance(multiplier, Mapping):
        known = {(nr.layer, nr.index) for nr in circuit.neurons}
        unknown = [key for key in multiplier if tuple(key) not in known]
        if unknown:
            raise ConfigError(
                f"multiplier names neurons that are not in the circuit: {unknown[:5]}; keys must be "
                "(layer, index) pairs of circuit neurons"
            )
        values = [float(multiplier.get((nr.layer, nr.index), 1.0)) for nr in circuit.neurons]
    elif isinstance(multiplier, int | float) and not isinstance(multiplier, bool):
        values = [float(multiplier)] * n
    else:
        raise ConfigError(
            "multiplier must be a number, a {(layer, index): m} mapping or a tensor, not "
            f"{type(multiplier).__name__}"
        )
    bad = [v for v in values if not math.isfinite(v)]
    if bad:
        raise ConfigError(f"multipliers must be finite numbers, got {bad[0]}")
    return values


def _scale_hook(scale: LayerScale) -> Any:
    """A forward pre-hook that multiplies the selected neurons of the down-projection input."""
    cache: dict[tuple[torch.device, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}

    def hook(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        if not args or not isinstance(args[0], torch.Tensor):
            return None
        x = args[0]
        key = (x.device, x.dtype)
        if key not in cache:
            cache[key] = (scale.index.to(x.device), scale.factor.to(device=x.device, dtype=x.dtype))
        index, factor = cache[key]
        if x.requires_grad and torch.is_grad_enabled():
            x = x.index_copy(-1, index, x.index_select(-1, index) * factor)
            return (x, *args[1:])
        # In place: the down-projection input is a fresh intermediate, so scaling it costs one gather.
        x[..., index] = x[..., index] * factor
        return None

    return hook


def steer(lm: LoadedModel, circuit: Circuit, multiplier: Multiplier = 0.0) -> Handle:
    """Multiply each circuit neuron's activation by ``multiplier`` at every position until removed.

    Returns a :class:`Handle` (also a context manager): ``with steer(lm, circuit, 0.0): ...``.
    Raises :class:`~neurogate.errors.CircuitError` when the circuit was found on a different model.
    """
    circuit.check_model(lm)
    scales = per_layer_scales(circuit, multiplier)
    hooks = [
        lm.adapter.down_proj(layer).register_forward_pre_hook(_scale_hook(scale))
        for layer, scale in scales.items()
    ]
    return Handle.of_hooks(hooks, label=f"steer {len(circuit)} neurons")


class NeuronIntervention(Intervention):
    """CNA (``kind="cna"``) or its random-neuron control (``kind="random"``): multiplier ``m = 1 - strength``.

    Strength 1 ablates the neurons (m = 0), strength 0 leaves them alone, negative strength amplifies.
    """

    def __init__(self, lm: LoadedModel, circuit: Circuit, strength: float, kind: str = "cna") -> None:
        super().__init__()
        circuit.check_model(lm)
        self.lm = lm
        self.circuit = circuit
        self.strength = float(strength)
        self.kind = kind

    @property
    def multiplier(self) -> float:
        return 1.0 - self.strength

    def attach(self) -> Handle:
        return steer(self.lm, self.circuit, self.multiplier)

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "strength": self.strength,
            "multiplier": self.multiplier,
            "neurons": len(self.circuit),
        }
