"""Steering: the interventions (neuron multipliers, CAA, directional ablation, the random control),
exact weight folding, and exporting a steered model. Build any of them by kind with :func:`make`."""

from neurogate.models.hooks import Handle
from neurogate.steering.base import MULTIPLIER, STRENGTH, Intervention, Scale
from neurogate.steering.controls import random_circuit
from neurogate.steering.export import export_model
from neurogate.steering.fold import fold
from neurogate.steering.neurons import steer
from neurogate.steering.registry import INTERVENTIONS, KINDS, get_kind, make
from neurogate.steering.residual import ablate_direction, add_vector, orthogonalize

__all__ = [
    "INTERVENTIONS",
    "KINDS",
    "MULTIPLIER",
    "STRENGTH",
    "Handle",
    "Intervention",
    "Scale",
    "ablate_direction",
    "add_vector",
    "export_model",
    "fold",
    "get_kind",
    "make",
    "orthogonalize",
    "random_circuit",
    "steer",
]
