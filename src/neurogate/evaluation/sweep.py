"""A sweep: every method at every value of its scale on one model, with a resumable result store.

:func:`run_sweep` is what ``neurogate sweep`` runs; the study runs the same engine with more conditions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from neurogate import settings
from neurogate.discovery.circuit import Circuit
from neurogate.discovery.config import DiscoverConfig
from neurogate.discovery.directions import ResidualDirections, compute_directions
from neurogate.discovery.discover import discover
from neurogate.evaluation.conditions import Condition, check_kinds, plan_sweep
from neurogate.evaluation.engine import Evaluator, Progress
from neurogate.evaluation.judges import Judge
from neurogate.evaluation.results import ConditionResult, ResultStore
from neurogate.evaluation.settings import EvalSettings
from neurogate.models.hooks import check_scale
from neurogate.models.loading import LoadedModel
from neurogate.prompts.sources import PromptSources
from neurogate.steering.registry import get_kind


@dataclass(frozen=True)
class SweepConfig:
    """What a sweep evaluates: prompt sets, methods, the values of each scale, and how to judge."""

    prompts: PromptSources = field(default_factory=lambda: PromptSources(n_eval=None))
    methods: tuple[str, ...] = ("cna", "caa", "ablation", "random")
    multipliers: tuple[float, ...] = (1.0, 0.75, 0.5, 0.25, 0.0)
    strengths: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
    evaluation: EvalSettings = field(default_factory=lambda: EvalSettings(max_new_tokens=48))
    discovery: DiscoverConfig = field(default_factory=DiscoverConfig)

    def __post_init__(self) -> None:
        object.__setattr__(self, "methods", check_kinds(settings.as_tuple("methods", self.methods)))
        for name in ("multipliers", "strengths"):
            values = settings.as_tuple(name, getattr(self, name))
            for v in values:
                settings.number(name, v)
            object.__setattr__(self, name, tuple(float(v) for v in values))

    def plan(self) -> list[Condition]:
        return plan_sweep(self.methods, {"multiplier": self.multipliers, "strength": self.strengths})

    def needs(self, source: str) -> bool:
        """Whether any method is built from a ``"circuit"`` or from ``"directions"``."""
        return any(get_kind(m).source == source for m in self.methods)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, base: SweepConfig | None = None) -> SweepConfig:
        return settings.build(cls, data, base=base, where="sweep")


@dataclass
class SweepResult:
    results: list[ConditionResult]
    store: Path | None


def run_sweep(
    lm: LoadedModel,
    config: SweepConfig,
    *,
    circuit: Circuit | None = None,
    judges: Sequence[Judge] | None = None,
    out: str | Path | None = None,
    progress: Progress | None = None,
) -> SweepResult:
    """Evaluate ``config.plan()`` on ``lm``. Without ``circuit`` (and with a neuron method) one is
    discovered from ``config.positive``/``negative``; residual methods get directions from the same sets.
    With ``out``, results are stored under ``out/<key>`` (the key hashes everything that decides them)."""
    sets = config.prompts.load()
    for method in config.methods:  # in the model's dtype, before discovery and generation
        scale = get_kind(method).scale
        check_scale(getattr(config, f"{scale.name}s"), lm.dtype, scale.name)
    harmful, benign, pos, neg = sets.eval, sets.benign, sets.positive, sets.negative
    if config.needs("circuit") and circuit is None:
        circuit = discover(lm, pos, neg, config.discovery, progress=progress is not None)
    if circuit is not None:
        circuit.check_model(lm)
    directions: ResidualDirections | None = None
    if config.needs("directions"):
        directions = compute_directions(lm, pos.prompts, neg.prompts, options=config.discovery.capture(False))
    evaluator = Evaluator(
        lm,
        harmful.prompts,
        benign.prompts,
        circuit=circuit,
        directions=directions,
        judges=judges,
        settings=config.evaluation,
    )
    store_dir = None
    if out is not None:
        key = settings.digest(
            {
                "model": lm.spec,
                "dtype": str(lm.dtype),
                "circuit": circuit.to_dict()["neurons"] if circuit else None,
                "prompts": sets.digests(),
                "evaluation": settings.to_dict(config.evaluation),
                # each judge's resolved identity (an endpoint's URL and model may come from the environment)
                "judges": [j.config() for j in evaluator.classifier.judges],
            }
        )
        store_dir = Path(out) / key
        evaluator.store = ResultStore(store_dir)
    return SweepResult(evaluator.run_all(config.plan(), progress), store_dir)
