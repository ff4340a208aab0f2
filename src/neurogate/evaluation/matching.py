"""Comparing methods at matched effect: the strength at which a baseline method refuses as often as CNA.

Comparing CNA at m = 0 with CAA at s = 1 compares two arbitrary points. :func:`match_strength` finds, by
bisection, the strength at which a residual method's refusal rate (under the primary judge, on a subset of
the harmful prompts, with short replies) is closest to a target rate, so that KL, quality and benign refusal
can be compared where both methods cut refusal equally. Refusal is assumed to fall as the strength grows.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from neurogate.errors import ConfigError
from neurogate.evaluation.conditions import Condition
from neurogate.evaluation.engine import Evaluator

logger = logging.getLogger(__name__)


@dataclass
class Match:
    """The matched strength, the target it was matched to, and every probe ``[strength, refusal]``."""

    kind: str
    strength: float
    target: float
    refusal: float
    probes: list[list[float]] = field(default_factory=list)
    n_prompts: int = 0
    max_new_tokens: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Match:
        return cls(**data)


def _refusal(ev: Evaluator, kind: str, strength: float, prompts: Sequence[str]) -> float:
    """The primary judge's refusal rate of ``kind`` at ``strength`` on ``prompts`` (degenerate replies are
    not refusals)."""
    steering = ev.intervention(Condition(kind, strength))
    gens, _ = ev.generate(prompts, steering)
    judge = ev.classifier.names[0]
    classes = ev.classifier.classify(prompts, [g.text for g in gens], names=[judge])
    return sum(1 for c in classes if c[judge] == "refusal") / len(prompts)


def match_strength(
    ev: Evaluator,
    kind: str,
    target: float,
    *,
    n_prompts: int = 48,
    max_new_tokens: int = 48,
    steps: int = 6,
    start: float = 1.0,
    ceiling: float = 16.0,
) -> Match:
    """The strength of ``kind`` whose refusal rate is closest to ``target`` (a fraction), by doubling from
    ``start`` until refusal falls to the target (at most ``ceiling``) and then bisecting ``steps`` times.
    Uses the evaluator's first ``n_prompts`` harmful prompts and ``max_new_tokens``-token replies."""
    if not 0.0 <= target <= 1.0:
        raise ConfigError(f"the target refusal rate must be in [0, 1], got {target}")
    prompts = ev.harmful[:n_prompts]
    short = Evaluator(
        ev.lm,
        prompts,
        [],
        circuit=ev.circuit,
        circuits=ev.circuits,
        directions=ev.directions,
        directions_by_kind=ev.directions_by_kind,
        judges=ev.classifier.judges,
        settings=replace(ev.settings, max_new_tokens=max_new_tokens),
    )
    short.classifier = ev.classifier  # share the verdict cache
    probes: list[list[float]] = [[0.0, _refusal(short, kind, 0.0, prompts)]]
    if probes[0][1] <= target:
        logger.info("%s: the unsteered refusal %.2f is already at or under the target", kind, probes[0][1])
        return Match(kind, 0.0, target, probes[0][1], probes, len(prompts), max_new_tokens)
    lo, hi = 0.0, start
    while True:
        probes.append([hi, _refusal(short, kind, hi, prompts)])
        if probes[-1][1] <= target or hi >= ceiling:
            break
        lo, hi = hi, min(2 * hi, ceiling)
    for _ in range(steps):
        mid = (lo + hi) / 2
        probes.append([mid, _refusal(short, kind, mid, prompts)])
        lo, hi = (mid, hi) if probes[-1][1] > target else (lo, mid)
    best = min(probes[1:], key=lambda p: (abs(p[1] - target), p[0]))
    logger.info("%s matched to refusal %.2f at s=%.3g (refusal %.2f)", kind, target, best[0], best[1])
    return Match(kind, round(best[0], 4), target, best[1], probes, len(prompts), max_new_tokens)
