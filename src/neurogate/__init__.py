"""neurogate: find the few MLP neurons that carry a behaviour in a language model, and turn it down or up.

The public API, in the order a study uses it: load a model, load prompt sets, discover a circuit, steer or
fold it (or a baseline intervention), generate, and evaluate.
"""

from __future__ import annotations

__version__ = "0.1.0"

from neurogate import prompts
from neurogate.adapters import Adapter, ArchSpec, resolve_adapter, supported_families
from neurogate.capture import collect_stats, collect_stats_many
from neurogate.circuit import Circuit, Neuron
from neurogate.directions import ResidualDirections, compute_directions
from neurogate.discovery import discover
from neurogate.errors import (
    CircuitError,
    ConfigError,
    ModelLoadError,
    NeurogateError,
    PromptSetError,
    UnsupportedArchitectureError,
    ZooError,
)
from neurogate.export import export
from neurogate.generation import Generation, generate
from neurogate.interventions import Handle, Intervention, fold, make, steer
from neurogate.judges import Judge, KeywordJudge, LLMJudge, get_judge
from neurogate.loading import LoadedModel, load_model, wrap_model
from neurogate.metrics import Rate, distinct_ngram_quality, kl_divergence, perplexity, wilson_interval
from neurogate.prompts import PromptSet
from neurogate.stats import SiteStats, score_neurons, select_top
from neurogate.study import StudyConfig, run_study
from neurogate.sweep import Condition, ConditionResult, EvalSettings, Evaluator, plan_sweep
from neurogate.universal import universal_neurons

__all__ = [
    "Adapter",
    "ArchSpec",
    "Circuit",
    "CircuitError",
    "Condition",
    "ConditionResult",
    "ConfigError",
    "EvalSettings",
    "Evaluator",
    "Generation",
    "Handle",
    "Intervention",
    "Judge",
    "KeywordJudge",
    "LLMJudge",
    "LoadedModel",
    "ModelLoadError",
    "NeurogateError",
    "Neuron",
    "PromptSet",
    "PromptSetError",
    "Rate",
    "ResidualDirections",
    "SiteStats",
    "StudyConfig",
    "UnsupportedArchitectureError",
    "ZooError",
    "__version__",
    "collect_stats",
    "collect_stats_many",
    "compute_directions",
    "discover",
    "distinct_ngram_quality",
    "export",
    "fold",
    "generate",
    "get_judge",
    "kl_divergence",
    "load_model",
    "make",
    "perplexity",
    "plan_sweep",
    "prompts",
    "resolve_adapter",
    "run_study",
    "score_neurons",
    "select_top",
    "steer",
    "supported_families",
    "universal_neurons",
    "wilson_interval",
    "wrap_model",
]
