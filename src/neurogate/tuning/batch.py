"""Screening several trials at once: ``screen_batch`` trials are asked of the sampler together, their screens
generated in one batch (each trial's circuit steering its own rows, so every reply is the one the trial gets
alone), and then each is pruned or measured in full in trial order, exactly as one at a time.

Optuna's ``optimize`` runs one trial at a time; this is its ask-and-tell equivalent for the screened search,
with the same stopping rules: at most ``n_trials`` trials, and no new batch once ``timeout`` seconds have
passed (a batch that has started is finished, so the budget may be overrun by one batch).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Protocol

import optuna

TrialState = optuna.trial.TrialState


class BatchedSearch(Protocol):
    """What a search gives this loop (:class:`neurogate.tuning.search.Search` does); declared here so this
    module never imports the search that calls it."""

    @property
    def config(self) -> Any: ...

    def suggest(self, trial: optuna.Trial) -> Any: ...

    def screen_many(self, trials: list[optuna.Trial], points: list[Any]) -> Sequence[Any]: ...

    def screen_trial(self, trial: optuna.Trial, point: Any, result: Any = None) -> None: ...

    def complete(self, trial: optuna.Trial, point: Any) -> tuple[float, float, float]: ...


def optimize_batched(search: BatchedSearch, study: optuna.Study, n_trials: int, timeout: float) -> None:
    """Run up to ``n_trials`` screened trials of ``search`` on ``study``, ``search.config.screen_batch`` at
    a time, until ``timeout`` seconds have passed. A trial screened out ends pruned with its screen; the
    rest are measured in full and told their values. On an error or Ctrl-C the batch's trials not yet told
    end as failed (as ``optimize`` leaves its running trial) and the error goes on."""
    started = time.perf_counter()
    left = n_trials
    while left > 0 and time.perf_counter() - started < timeout:
        trials = [study.ask() for _ in range(min(search.config.screen_batch, left))]
        left -= len(trials)
        told: set[int] = set()
        try:
            points = [search.suggest(t) for t in trials]
            screens = search.screen_many(trials, points)
            for trial, point, screen in zip(trials, points, screens, strict=True):
                try:
                    search.screen_trial(trial, point, screen)
                except optuna.TrialPruned:
                    study.tell(trial, state=TrialState.PRUNED)
                else:
                    study.tell(trial, list(search.complete(trial, point)))
                told.add(trial.number)
        except BaseException:
            for trial in trials:
                if trial.number not in told:
                    study.tell(trial, state=TrialState.FAIL)
            raise
