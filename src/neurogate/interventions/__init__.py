"""Interventions on a model: neuron multipliers (hooks or folded weights) and residual-stream baselines.

Strength scales (0 always means no change):

- ``cna``: multiply the circuit's neurons by ``m = 1 - strength`` (1 ablates, negative amplifies).
- ``caa``: ``h <- h - strength * (mean_pos - mean_neg)`` after one layer (default: the best layer).
- ``ablation``: ``h <- h - strength * (h . r) r`` at every residual site, ``r`` the unit direction.
- ``random``: ``cna`` on random neurons with the circuit's per-layer counts (``seed=`` option).
"""

from __future__ import annotations

from typing import Any, Literal

from neurogate.circuit import Circuit
from neurogate.directions import ResidualDirections
from neurogate.errors import ConfigError
from neurogate.interventions.base import Handle, Intervention
from neurogate.interventions.fold import fold
from neurogate.interventions.neurons import NeuronIntervention, per_layer_scales, steer
from neurogate.interventions.random_control import random_circuit
from neurogate.interventions.residual import (
    ActivationAddition,
    DirectionalAblation,
    ablate_direction,
    add_vector,
    orthogonalize,
)
from neurogate.loading import LoadedModel

Kind = Literal["cna", "caa", "ablation", "random"]
KINDS: tuple[str, ...] = ("cna", "caa", "ablation", "random")

__all__ = [
    "KINDS",
    "ActivationAddition",
    "DirectionalAblation",
    "Handle",
    "Intervention",
    "NeuronIntervention",
    "ablate_direction",
    "add_vector",
    "fold",
    "make",
    "orthogonalize",
    "per_layer_scales",
    "random_circuit",
    "steer",
]


def make(
    kind: Kind, lm: LoadedModel, source: Circuit | ResidualDirections, strength: float, **opts: Any
) -> Intervention:
    """Build an intervention of ``kind`` at ``strength`` (see the module docstring for each scale).

    ``source``: a :class:`Circuit` for ``cna`` and ``random``; :class:`ResidualDirections` for ``caa`` and
    ``ablation``.
    Options: ``layer=`` (``caa``, ``ablation``), ``seed=`` (``random``).
    """
    allowed = {"cna": set(), "random": {"seed"}, "caa": {"layer"}, "ablation": {"layer"}}
    if kind not in allowed:
        raise ConfigError(f"unknown intervention kind {kind!r}; choose one of {', '.join(KINDS)}")
    extra = set(opts) - allowed[kind]
    if extra:
        raise ConfigError(
            f"kind {kind!r} takes no option(s) {sorted(extra)}; it takes {sorted(allowed[kind]) or 'none'}"
        )
    if kind in ("cna", "random"):
        if not isinstance(source, Circuit):
            raise ConfigError(
                f"kind {kind!r} needs a Circuit (from `neurogate discover`), not {type(source).__name__}"
            )
        if kind == "random":
            control = random_circuit(source, seed=int(opts.get("seed", 0)))
            return NeuronIntervention(lm, control, strength, "random")
        return NeuronIntervention(lm, source, strength, "cna")
    if not isinstance(source, ResidualDirections):
        raise ConfigError(
            f"kind {kind!r} needs ResidualDirections (neurogate.directions.compute_directions), "
            f"not {type(source).__name__}"
        )
    cls = ActivationAddition if kind == "caa" else DirectionalAblation
    return cls(lm, source, strength, layer=opts.get("layer"))
