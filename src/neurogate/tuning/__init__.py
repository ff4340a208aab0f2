"""Tuning: a multi-objective search over neuron circuits (scorer, positions, size, layers, intervention,
multiplier), resumable in SQLite, with a held-out final check and a Pareto-front report."""

from neurogate.tuning.config import TuneConfig
from neurogate.tuning.final import TuneResults
from neurogate.tuning.run import run_tune

__all__ = ["TuneConfig", "TuneResults", "run_tune"]
