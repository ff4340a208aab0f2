"""Screening (successive halving) for the search: every trial is first measured on a few tuning prompts
with short replies, and only those that could rank among the best trials measured so far go on to the
full measurement. Optuna's multi-objective studies cannot prune through ``trial.report``, so the rule is
applied here and a screened-out trial ends as pruned, its screen scores stored with it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna

from neurogate.evaluation.engine import Evaluator
from neurogate.evaluation.results import ConditionResult, ResultStore
from neurogate.tuning.config import TuneConfig
from neurogate.tuning.quick import QUICK_ATTR

if TYPE_CHECKING:
    from neurogate.models.loading import LoadedModel

SCREEN_ATTR = "screen"
"""The user attribute holding a trial's screen scores (screened-out and fully measured trials alike)."""
SEED_ATTR = "seed"
"""The user attribute that marks a seeded point (always measured in full)."""
REASON_ATTR = "screened_out"
"""The user attribute holding why a trial was screened out."""


@dataclass
class ScreenScores:
    """A trial's screen: compliance and degenerate share on the screen prompts (under the trials' judge),
    mean and first-token benign KL on the screen's benign prompts (0 without any)."""

    compliance: float
    degenerate: float
    kl: float
    kl_first: float

    @classmethod
    def of(cls, result: ConditionResult, judge: str) -> ScreenScores:
        rates = result.rates(judge)
        kl = sum(result.kl_mean) / len(result.kl_mean) if result.kl_mean else 0.0
        first = sum(result.kl_first) / len(result.kl_first) if result.kl_first else 0.0
        return cls(rates["compliance"].value, rates["degenerate"].value, kl, first)

    def to_dict(self) -> dict[str, float]:
        return dict(self.__dict__)


def screen_evaluator(
    lm: LoadedModel,
    config: TuneConfig,
    root: Path,
    harmful: Sequence[str],
    benign: Sequence[str],
    full: Evaluator,
) -> Evaluator:
    """The evaluator of screens: the first ``screen_prompts`` tuning prompts with ``screen_tokens``-token
    replies, KL on the first ``screen_benign`` benign prompts, the full measurement's judges, and a store of
    its own (``root/screens``) under the same keys as the trials' results, so a resumed search reads every
    screen back."""
    settings = replace(config.evaluation, max_new_tokens=config.screen_tokens)
    return Evaluator(
        lm,
        list(harmful)[: config.screen_prompts],
        list(benign)[: config.screen_benign],
        judges=full.classifier.judges,
        settings=settings,
        store=ResultStore(root / "screens"),
    )


def screen_bar(full: Sequence[float], config: TuneConfig) -> float | None:
    """The lowest screened compliance that goes on to a full measurement: the ``ceil(n / screen_eta)``-th
    best screened compliance of the ``n`` trials measured in full so far, less ``screen_margin`` (``None``
    before any: nothing is screened out yet)."""
    if not full:
        return None
    k = math.ceil(len(full) / config.screen_eta)
    return sorted(full, reverse=True)[k - 1] - config.screen_margin


def screen_out(score: ScreenScores, full: Sequence[float], config: TuneConfig) -> str | None:
    """Why a trial with this screen stops there, or ``None`` when it is measured in full. ``full``: the
    screened compliance of the trials measured in full so far."""
    bar = screen_bar(full, config)
    if bar is None or score.compliance >= bar - 1e-9:
        return None
    return (
        f"screened compliance {100 * score.compliance:.0f}% < {100 * bar:.0f}% (the top "
        f"1/{config.screen_eta} of {len(full)} full trials' screens, less "
        f"{100 * config.screen_margin:.0f} points)"
    )


def full_screens(study: optuna.Study) -> list[float]:
    """The screened compliance of the study's trials measured in full."""
    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    return [t.user_attrs[SCREEN_ATTR]["compliance"] for t in done if SCREEN_ATTR in t.user_attrs]


def screening_summary(study: optuna.Study) -> dict[str, Any]:
    """How the search spent its trials: how many were screened out and how many measured in full, their
    search time (summed over every session of a resumed search; trials screened together overlap, so it is
    the time covered by any trial, each moment once) and the trials per minute."""
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    trials = study.get_trials(deepcopy=False, states=states)
    spans = sorted(
        (t.datetime_start, t.datetime_complete) for t in trials if t.datetime_complete and t.datetime_start
    )
    seconds, reached = 0.0, None
    for start, end in spans:
        begin = start if reached is None else max(start, reached)
        if end > begin:
            seconds += (end - begin).total_seconds()
        reached = end if reached is None else max(reached, end)
    pruned = [t for t in trials if t.state == optuna.trial.TrialState.PRUNED]
    quick = sum(QUICK_ATTR in t.user_attrs and SCREEN_ATTR not in t.user_attrs for t in pruned)
    return {
        "screened_out": len(pruned),
        "quick_out": quick,
        "full": len(trials) - len(pruned),
        "seconds": seconds,
        "trials_per_minute": 60 * len(trials) / seconds if seconds > 0 else 0.0,
    }


def screening_line(summary: dict[str, Any] | None, config: dict[str, Any]) -> str | None:
    """The screening summary in words for the report and the command's end (``None`` for results stored
    before it was recorded)."""
    if not summary:
        return None
    full, out, quick = summary["full"], summary["screened_out"], summary.get("quick_out", 0)
    rate = f"{summary['trials_per_minute']:.2f} trials per minute over {summary['seconds'] / 60:.1f} minutes"
    n, tokens = config.get("screen_prompts", 0), config.get("screen_tokens", 0)
    screen = 0 < n < config.get("n_tune", 0)
    on_screen = f"on the first {n} tuning prompts with {tokens}-token replies"
    if not out:
        word = "Screening" if screen or config.get("quick_prompts", 0) else "No screening"
        return f"{word}: all {full} trials measured in full; {rate} of search."
    if not quick:
        where = on_screen
    else:
        quick_part = (
            f"{quick} by the quick screen (the refusal's opening and the benign KL on a few prompts, one "
            "teacher-forced pass, no generation)"
        )
        where = f"({quick_part}; {out - quick} {on_screen})" if screen and out > quick else f"({quick_part})"
    return (
        f"Screening: {out} trials screened out {where}, {full} measured in full (the seeded points always); "
        f"{rate} of search."
    )
