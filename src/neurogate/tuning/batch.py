"""Screening several trials at once: trials are asked of the sampler one by one and take the quick screen
(no generation) as they come, until ``screen_batch`` of them have passed it (or ``screen_batch * quick_eta``
have been tried, so that no passed trial waits long); their screens are generated in
one batch (each trial's circuit steering its own rows, so every reply is the one the trial gets alone), and
then each is pruned or measured in full in trial order, exactly as one at a time.

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

    @property
    def screen(self) -> Any: ...

    def suggest(self, trial: optuna.Trial) -> Any: ...

    def quick_trial(self, trial: optuna.Trial, point: Any) -> None: ...

    def screen_many(self, trials: list[optuna.Trial], points: list[Any]) -> Sequence[Any]: ...

    def screen_trial(self, trial: optuna.Trial, point: Any, result: Any = None) -> None: ...

    def complete(self, trial: optuna.Trial, point: Any) -> tuple[float, float, float]: ...


def optimize_batched(search: BatchedSearch, study: optuna.Study, n_trials: int, timeout: float) -> None:
    """Run up to ``n_trials`` screened trials of ``search`` on ``study`` until ``timeout`` seconds have
    passed. A trial stopped by a screen ends pruned with its scores; the rest are measured in full and told
    their values. On an error or Ctrl-C the trials asked and not yet told end as failed (as ``optimize``
    leaves its running trial) and the error goes on."""
    started = time.perf_counter()
    left = n_trials

    def in_time() -> bool:
        return time.perf_counter() - started < timeout

    while left > 0 and in_time():
        asked: list[optuna.Trial] = []
        passed: list[tuple[optuna.Trial, Any]] = []
        told: set[int] = set()
        try:
            # gather until a batch has passed the quick screen, or a batch's worth of its share has been
            # tried (``screen_batch * quick_eta``): passed trials, seeded points among them, never wait long
            most = search.config.screen_batch * search.config.quick_eta
            while (
                len(passed) < search.config.screen_batch
                and len(asked) < most
                and left > 0
                and (in_time() or not asked)
            ):
                trial = study.ask()
                asked.append(trial)
                left -= 1
                point = search.suggest(trial)
                try:
                    search.quick_trial(trial, point)
                except optuna.TrialPruned:
                    study.tell(trial, state=TrialState.PRUNED)
                    told.add(trial.number)
                else:
                    passed.append((trial, point))
            if not passed:
                continue
            trials, points = [t for t, _ in passed], [p for _, p in passed]
            screens: Sequence[Any] = (
                search.screen_many(trials, points) if search.screen is not None else [None] * len(trials)
            )
            for trial, point, screen in zip(trials, points, screens, strict=True):
                try:
                    if search.screen is not None:
                        search.screen_trial(trial, point, screen)
                except optuna.TrialPruned:
                    study.tell(trial, state=TrialState.PRUNED)
                else:
                    study.tell(trial, list(search.complete(trial, point)))
                told.add(trial.number)
        except BaseException:
            for trial in asked:
                if trial.number not in told:
                    study.tell(trial, state=TrialState.FAIL)
            raise
