"""Discovery: capture activations, score neurons, select a circuit (and residual directions for the
baselines). The pipeline is capture -> stats -> scoring -> selection -> universal filter -> Circuit."""

from neurogate.discovery.capture import CaptureOptions, collect_stats, collect_stats_many
from neurogate.discovery.circuit import Circuit, Neuron
from neurogate.discovery.config import DiscoverConfig
from neurogate.discovery.directions import ResidualDirections, compute_directions
from neurogate.discovery.discover import discover
from neurogate.discovery.scoring import SCORERS, get_scorer
from neurogate.discovery.universal import universal_neurons

__all__ = [
    "SCORERS",
    "CaptureOptions",
    "Circuit",
    "DiscoverConfig",
    "Neuron",
    "ResidualDirections",
    "collect_stats",
    "collect_stats_many",
    "compute_directions",
    "discover",
    "get_scorer",
    "universal_neurons",
]
