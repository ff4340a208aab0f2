"""Steering: the interventions (neuron multipliers, CAA, directional ablation, the random control),
exact weight folding, and per-row steering (several circuits in one batch: :mod:`neurogate.steering.rows`).
Build any intervention by kind with :func:`make`. Saving a steered model in a format other tools load (a
model directory, LoRA, GGUF, a control vector) is :mod:`neurogate.export`'s job."""

from neurogate.models.hooks import Handle
from neurogate.steering.base import MULTIPLIER, STRENGTH, Intervention, Scale
from neurogate.steering.controls import random_circuit
from neurogate.steering.fold import fold
from neurogate.steering.neurons import steer
from neurogate.steering.registry import INTERVENTIONS, KINDS, get_kind, make
from neurogate.steering.residual import ablate_direction, add_vector, orthogonalize
from neurogate.steering.rows import generate_rows, steer_rows

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
    "fold",
    "generate_rows",
    "get_kind",
    "make",
    "orthogonalize",
    "random_circuit",
    "steer",
    "steer_rows",
]

#: Names that moved to :mod:`neurogate.export` (which imports steering, never the reverse).
_MOVED = {"export_model": "neurogate.export.export_model"}


def __getattr__(name: str) -> object:
    if name in _MOVED:
        raise AttributeError(f"neurogate.steering.{name} moved: use {_MOVED[name]}")
    raise AttributeError(f"module 'neurogate.steering' has no attribute {name!r}")
