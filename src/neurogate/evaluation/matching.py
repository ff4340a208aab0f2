"""Comparing methods at matched effect: the strength at which a baseline method refuses as often as CNA.

Comparing CNA at m = 0 with CAA at s = 1 compares two arbitrary points. :func:`match_strength` finds, by
bisection, the strength at which a residual method's refusal rate (under the primary judge, on a set of
harmful prompts, with short replies) is closest to a target rate, so that KL, quality and benign refusal
can be compared where both methods cut refusal equally. Refusal is assumed to fall as the strength grows.

The study matches on its validation prompts (held-out discovery prompts, never the evaluation prompts), and
takes the target from the reference condition (CNA) on those same prompts with the same short replies
(:func:`refusal_on`): the strength is a free parameter, and choosing it on the prompts that then measure it
would let the evaluation set tune the baseline.
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
    #: which prompts the probes ran on: ``"validation"`` (held-out discovery prompts) or ``"evaluation"``
    #: (the first evaluation prompts, as records stored by earlier versions did)
    prompts: str = "evaluation"
    #: the condition whose refusal on the same prompts is the target (empty: a target given as a number)
    reference: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Match:
        return cls(**data)


def _refusal(ev: Evaluator, cond: Condition, prompts: Sequence[str]) -> float:
    """The primary judge's refusal rate of ``cond`` on ``prompts`` (degenerate replies are not
    refusals)."""
    steering = ev.intervention(cond)
    gens, _ = ev.generate(prompts, steering)
    judge = ev.classifier.names[0]
    classes = ev.classifier.classify(prompts, ev.answers(gens), names=[judge])
    return sum(1 for c in classes if c[judge] == "refusal") / len(prompts)


def _short(ev: Evaluator, prompts: Sequence[str], max_new_tokens: int) -> Evaluator:
    """``ev`` on ``prompts`` with ``max_new_tokens``-token replies, sharing its verdict cache."""
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
    return short


def refusal_on(ev: Evaluator, cond: Condition, prompts: Sequence[str], *, max_new_tokens: int = 48) -> float:
    """The primary judge's refusal rate of ``cond`` on ``prompts`` with ``max_new_tokens``-token replies:
    the target :func:`match_strength` matches, read exactly as its probes are."""
    if not prompts:
        raise ConfigError("the refusal to match needs at least one prompt")
    return _refusal(_short(ev, prompts, max_new_tokens), cond, prompts)


def match_strength(
    ev: Evaluator,
    kind: str,
    target: float,
    *,
    prompts: Sequence[str] | None = None,
    on: str = "evaluation",
    reference: str = "",
    n_prompts: int = 48,
    max_new_tokens: int = 48,
    steps: int = 6,
    start: float = 1.0,
    ceiling: float = 16.0,
) -> Match:
    """The strength of ``kind`` whose refusal rate is closest to ``target`` (a fraction), by doubling from
    ``start`` until refusal falls to the target (at most ``ceiling``) and then bisecting ``steps`` times,
    with ``max_new_tokens``-token replies. ``prompts``: where refusal is read (the study gives its
    validation prompts, ``on="validation"``); without them, the evaluator's first ``n_prompts`` harmful
    prompts. ``reference`` names the condition the target was read from, for the record."""
    if not 0.0 <= target <= 1.0:
        raise ConfigError(f"the target refusal rate must be in [0, 1], got {target}")
    chosen = list(prompts) if prompts is not None else ev.harmful[:n_prompts]
    if not chosen:
        raise ConfigError("matching a strength needs at least one prompt")
    short = _short(ev, chosen, max_new_tokens)

    def record(strength: float, refusal: float) -> Match:
        n = len(chosen)
        return Match(kind, strength, target, refusal, probes, n, max_new_tokens, on, reference)

    probes: list[list[float]] = [[0.0, _refusal(short, Condition(kind, 0.0), chosen)]]
    if probes[0][1] <= target:
        logger.info("%s: the unsteered refusal %.2f is already at or under the target", kind, probes[0][1])
        return record(0.0, probes[0][1])
    lo, hi = 0.0, start
    while True:
        probes.append([hi, _refusal(short, Condition(kind, hi), chosen)])
        if probes[-1][1] <= target or hi >= ceiling:
            break
        lo, hi = hi, min(2 * hi, ceiling)
    for _ in range(steps):
        mid = (lo + hi) / 2
        probes.append([mid, _refusal(short, Condition(kind, mid), chosen)])
        lo, hi = (mid, hi) if probes[-1][1] > target else (lo, mid)
    best = min(probes[1:], key=lambda p: (abs(p[1] - target), p[0]))
    logger.info("%s matched to refusal %.2f at s=%.3g (refusal %.2f)", kind, target, best[0], best[1])
    return record(round(best[0], 4), best[1])
