"""The paper's experiments as functions: sparsity, layer localisation, held-out robustness, the random
control, and base vs instruct. Each returns plain data (dataclasses / dicts) that the report renders.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from neurogate.discovery.circuit import Circuit
from neurogate.discovery.discover import discover
from neurogate.errors import ConfigError
from neurogate.evaluation.conditions import Condition
from neurogate.evaluation.engine import Evaluator
from neurogate.evaluation.judges import Judge
from neurogate.evaluation.paired import PairedRates, compare_rates
from neurogate.evaluation.results import ConditionResult, ResultStore
from neurogate.evaluation.settings import EvalSettings
from neurogate.models.loading import LoadedModel

logger = logging.getLogger(__name__)

#: Circuit sizes of the sparsity experiment, as fractions of all MLP neurons (0.01% .. 1%).
SPARSITY_FRACTIONS: tuple[float, ...] = (0.0001, 0.0003, 0.001, 0.003, 0.01)


# ---------------------------------------- sparsity


def sparsity_sizes(n_neurons: int, fractions: Sequence[float]) -> list[int]:
    """Circuit sizes (at least 1 neuron each, distinct, ascending) for fractions of ``n_neurons``."""
    for f in fractions:
        if not 0 < f <= 1:
            raise ConfigError(f"sparsity fractions must be in (0, 1], got {f}")
    return sorted({max(1, round(f * n_neurons)) for f in fractions})


def sparsity_conditions(sizes: Sequence[int], *, multiplier: float = 0.0) -> list[Condition]:
    """CNA at ``multiplier`` on the top-``size`` prefix of one ranking, for each size (harmful prompts
    only)."""
    return [Condition("cna", multiplier, size=s, benign=False, group="sparsity") for s in sizes]


def discover_for_sparsity(
    lm: LoadedModel, positive: Any, negative: Any, sizes: Sequence[int], **discover_opts: Any
) -> Circuit:
    """Discover once with the largest size; smaller circuits are prefixes of the same ranking."""
    return discover(lm, positive, negative, top_k=max(sizes), **discover_opts)


# ---------------------------------------- layers


@dataclass
class LayerProfile:
    """Where one behaviour's circuit sits: neurons per layer and the share in the last quarter."""

    behaviour: str
    n_neurons: int
    n_layers: int
    per_layer: dict[int, int]
    late_share: float

    @classmethod
    def of(cls, behaviour: str, circuit: Circuit) -> LayerProfile:
        return cls(behaviour, len(circuit), circuit.n_layers, circuit.per_layer(), circuit.late_share())

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["per_layer"] = {str(k): v for k, v in self.per_layer.items()}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LayerProfile:
        per_layer = {int(k): int(v) for k, v in data["per_layer"].items()}
        return cls(data["behaviour"], data["n_neurons"], data["n_layers"], per_layer, data["late_share"])


def layer_localisation(
    lm: LoadedModel,
    behaviours: Sequence[tuple[str, Any, Any]],
    *,
    fraction: float = 0.001,
    **discover_opts: Any,
) -> list[LayerProfile]:
    """Discover a circuit for each ``(name, positive, negative)`` behaviour and profile its layers."""
    profiles = []
    for name, pos, neg in behaviours:
        circuit = discover(lm, pos, neg, fraction=fraction, **discover_opts)
        profiles.append(LayerProfile.of(name, circuit))
    return profiles


# ---------------------------------------- base vs instruct


@dataclass
class ShiftResult:
    """What ablating a model's own circuit does to it: refusal and quality before/after, how many replies
    changed at all, the paired comparison of replies not served (refusal or redirect) on the same prompts,
    and a verdict: ``"behaviour"`` (that changed: McNemar's exact p < 0.05), ``"content"`` (replies
    changed, whether they serve did not), or
    ``"none"``."""

    model: str
    chat: bool
    n_neurons: int
    baseline: ConditionResult
    steered: ConditionResult
    changed_share: float
    refusal_change: PairedRates
    verdict: str
    examples: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "chat": self.chat,
            "n_neurons": self.n_neurons,
            "baseline": self.baseline.to_dict(),
            "steered": self.steered.to_dict(),
            "changed_share": self.changed_share,
            "refusal_change": self.refusal_change.to_dict(),
            "verdict": self.verdict,
            "examples": self.examples,
        }


def refusal_change(baseline: ConditionResult, steered: ConditionResult) -> PairedRates:
    """Refusal before and after on the same prompts, under the primary judge."""
    judge = baseline.judge
    return compare_rates(
        baseline.declined(judge),
        steered.declined(judge),
    )


def verdict(change: PairedRates, changed_share: float) -> str:
    """Classify a shift as behaviour, content or none (see :class:`ShiftResult`)."""
    if change.p_value < 0.05 and change.diff != 0:
        return "behaviour"
    return "content" if changed_share >= 0.5 else "none"


def behaviour_shift(
    lm: LoadedModel,
    positive: Any,
    negative: Any,
    evaluation: Sequence[str],
    *,
    judges: Sequence[Judge] | None = None,
    settings: EvalSettings | None = None,
    fraction: float = 0.001,
    multiplier: float = 0.0,
    store: ResultStore | None = None,
    n_examples: int = 3,
    **discover_opts: Any,
) -> ShiftResult:
    """Discover ``lm``'s circuit, then compare its replies on ``evaluation`` with and without it.

    Chat formatting follows the model: a base model without a chat template gets raw prompts.
    """
    settings = settings or EvalSettings()
    chat = settings.chat and lm.has_chat_template
    settings = replace(settings, chat=chat)
    circuit = discover(lm, positive, negative, fraction=fraction, chat=chat, **discover_opts)
    ev = Evaluator(lm, evaluation, [], circuit=circuit, judges=judges, settings=settings, store=store)
    base = ev.baseline()
    steered = ev.run(Condition("cna", multiplier, benign=False, group="shift"))
    changed = sum(1 for a, b in zip(base.harmful, steered.harmful, strict=True) if a.text != b.text)
    share = changed / len(base.harmful) if base.harmful else math.nan
    examples = [
        {"prompt": a.prompt, "baseline": a.text, "steered": b.text}
        for a, b in list(zip(base.harmful, steered.harmful, strict=True))[:n_examples]
    ]
    change = refusal_change(base, steered)
    return ShiftResult(
        lm.spec, chat, len(circuit), base, steered, share, change, verdict(change, share), examples
    )
