"""neurogate: find the few MLP neurons that carry a behaviour in a language model, and turn it down or up.

The public API, in the order a study uses it: load a model, discover a circuit, steer it (hooks or folded
weights) or a baseline intervention, generate, and evaluate. Subpackages follow the same pipeline:
:mod:`neurogate.models`, :mod:`neurogate.prompts`, :mod:`neurogate.discovery`, :mod:`neurogate.steering`,
:mod:`neurogate.export`, :mod:`neurogate.evaluation`, :mod:`neurogate.study`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from neurogate.errors import NeurogateError
from neurogate.version import __version__

if TYPE_CHECKING:
    from neurogate import export, prompts
    from neurogate.discovery import (  # type: ignore[no-redef]  # mypy also sees the submodule discover
        Circuit,
        DiscoverConfig,
        ResidualDirections,
        compute_directions,
        discover,
    )
    from neurogate.evaluation import EvalSettings, SweepConfig, get_judge, run_sweep
    from neurogate.export import export_model
    from neurogate.models import LoadedModel, generate, load_model, wrap_model
    from neurogate.steering import Handle, Intervention, fold, make, steer
    from neurogate.study import StudyConfig, StudyResults, run_study
    from neurogate.threads import set_threads

#: Where each public name lives. It is imported on first use, so ``import neurogate`` does not load torch
#: and transformers (the command line's ``--help`` answers in a fraction of a second).
_LAZY = {
    "export": "neurogate.export",  # subpackages: the module itself
    "prompts": "neurogate.prompts",
    **dict.fromkeys(
        ["Circuit", "DiscoverConfig", "ResidualDirections", "compute_directions", "discover"],
        "neurogate.discovery",
    ),
    **dict.fromkeys(["EvalSettings", "SweepConfig", "get_judge", "run_sweep"], "neurogate.evaluation"),
    **dict.fromkeys(["LoadedModel", "generate", "load_model", "wrap_model"], "neurogate.models"),
    **dict.fromkeys(["Handle", "Intervention", "fold", "make", "steer"], "neurogate.steering"),
    "export_model": "neurogate.export",
    **dict.fromkeys(["StudyConfig", "StudyResults", "run_study"], "neurogate.study"),
    "set_threads": "neurogate.threads",
}

__all__ = [
    "Circuit",
    "DiscoverConfig",
    "EvalSettings",
    "Handle",
    "Intervention",
    "LoadedModel",
    "NeurogateError",
    "ResidualDirections",
    "StudyConfig",
    "StudyResults",
    "SweepConfig",
    "__version__",
    "compute_directions",
    "discover",
    "export",
    "export_model",
    "fold",
    "generate",
    "get_judge",
    "load_model",
    "make",
    "prompts",
    "run_study",
    "run_sweep",
    "set_threads",
    "steer",
    "wrap_model",
]

#: Names of neurogate 0.1 that moved or were renamed, with where they live now.
_RENAMED = {
    "Evaluator": "neurogate.evaluation.Evaluator",
    "Condition": "neurogate.evaluation.Condition (kind + value on the kind's own scale)",
    "ConditionResult": "neurogate.evaluation.ConditionResult",
    "plan_sweep": "neurogate.evaluation.plan_sweep",
    "Judge": "neurogate.evaluation.Judge",
    "KeywordJudge": "neurogate.evaluation.KeywordJudge",
    "LLMJudge": "neurogate.evaluation.EndpointJudge (judge name 'endpoint')",
    "Rate": "neurogate.evaluation.Rate",
    "wilson_interval": "neurogate.evaluation.wilson_interval",
    "distinct_ngram_quality": "neurogate.evaluation.distinct_ngram_quality",
    "kl_divergence": "neurogate.evaluation.kl_divergence",
    "perplexity": "neurogate.evaluation.perplexity",
    "Generation": "neurogate.models.Generation",
    "Adapter": "neurogate.models.Adapter",
    "ArchSpec": "neurogate.models.ArchSpec",
    "resolve_adapter": "neurogate.models.resolve_adapter",
    "supported_families": "neurogate.models.supported_families",
    "Neuron": "neurogate.discovery.Neuron",
    "SiteStats": "neurogate.discovery.stats.SiteStats",
    "score_neurons": "neurogate.discovery.scoring.score_neurons",
    "select_top": "neurogate.discovery.selection.select_top",
    "collect_stats": "neurogate.discovery.collect_stats",
    "collect_stats_many": "neurogate.discovery.collect_stats_many",
    "universal_neurons": "neurogate.discovery.universal_neurons",
    "PromptSet": "neurogate.prompts.PromptSet",
    "CircuitError": "neurogate.errors.CircuitError",
    "ConfigError": "neurogate.errors.ConfigError",
    "ModelLoadError": "neurogate.errors.ModelLoadError",
    "PromptSetError": "neurogate.errors.PromptSetError",
    "UnsupportedArchitectureError": "neurogate.errors.UnsupportedArchitectureError",
    "ZooError": "neurogate.errors.ZooError",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module = importlib.import_module(_LAZY[name])
        value = module if name in ("export", "prompts") else getattr(module, name)
        globals()[name] = value  # later lookups find it directly
        return value
    if name in _RENAMED:
        raise AttributeError(f"neurogate.{name} is no longer at the package root: use {_RENAMED[name]}")
    raise AttributeError(f"module 'neurogate' has no attribute {name!r}")
