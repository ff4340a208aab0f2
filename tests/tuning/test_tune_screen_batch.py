"""Screening in batches: trials asked of the sampler together and screened in one row-steered generation
get the screens, decisions and full measurements they get one at a time; ``screen_batch`` 1 is the
one-at-a-time search itself."""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import optuna
import pytest

from neurogate.evaluation import generators
from neurogate.models.loading import LoadedModel
from neurogate.tuning import TuneConfig, batch
from neurogate.tuning.screen import REASON_ATTR, SCREEN_ATTR, screening_summary
from neurogate.tuning.search import Search
from tuning.small import BASE, ONE_RULE, SCREEN

SMALL: dict[str, Any] = {
    **BASE,
    **ONE_RULE,
    **SCREEN,
    "max_trials": 6,
    "screen_tokens": 3,
    "evaluation": {"batch_size": 4, "judges": ["keyword"]},
}


def _search(lm: LoadedModel, root: Path, stats: Path | None, **over: Any) -> Search:
    root.mkdir(parents=True)
    if stats is not None:  # the same statistics: computed once
        shutil.copy(stats, root)
    return Search(lm, TuneConfig.from_mapping({**SMALL, **over}), root)


def _spy(monkeypatch: pytest.MonkeyPatch) -> tuple[list[int], list[int]]:
    rows: list[int] = []
    batches: list[int] = []
    real_rows, real_batched = generators.generate_rows, batch.optimize_batched

    def spy_rows(lm: LoadedModel, prompts: Any, specs: Any, **kw: Any) -> Any:
        rows.append(len(prompts))
        return real_rows(lm, prompts, specs, **kw)

    def spy_batched(search: Search, study: optuna.Study, n: int, timeout: float) -> None:
        batches.append(n)
        real_batched(search, study, n, timeout)

    monkeypatch.setattr(generators, "generate_rows", spy_rows)
    monkeypatch.setattr("neurogate.tuning.search.optimize_batched", spy_batched)
    return rows, batches


def _view(study: optuna.Study) -> list[tuple[Any, ...]]:
    return [
        (t.state, t.params, t.values, t.user_attrs.get(SCREEN_ATTR), t.user_attrs.get(REASON_ATTR))
        for t in study.trials
    ]


def test_batched_screens_equal_one_trial_at_a_time(
    lm: LoadedModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows, batches = _spy(monkeypatch)
    # screen out every trial that finds two trials measured in full (the tiny model's screens are all
    # alike): a trial's decision must see the trials before it in its own batch
    monkeypatch.setattr(
        "neurogate.tuning.search.screen_out", lambda score, full, config: "out" if len(full) == 2 else None
    )
    one = _search(lm, tmp_path / "one", None, screen_batch=1).run()
    assert rows == [] and batches == []  # screen_batch 1: Optuna's own loop, one trial at a time
    stats = tmp_path / "one" / "stats-last.safetensors"
    four = _search(lm, tmp_path / "four", stats, screen_batch=4).run()
    assert batches == [6]
    assert rows == [4 * 2, 2 * 2]  # two batched screens (4 then 2 trials) of the 2 screen prompts
    # the same points (the sampler's first trials are drawn in trial order either way), the same screens,
    # the same trials screened out and the same full measurements
    assert _view(four) == _view(one)
    states = [t.state for t in four.trials]
    assert optuna.trial.TrialState.PRUNED in states and optuna.trial.TrialState.COMPLETE in states
    assert four.trials[0].user_attrs["seed"] and states[0] == optuna.trial.TrialState.COMPLETE
    # a rerun with the same settings generates nothing
    before = {p: p.stat().st_mtime for p in (tmp_path / "four").glob("*/*.json")}
    rows.clear()
    rerun = Search(lm, TuneConfig.from_mapping({**SMALL, "screen_batch": 4}), tmp_path / "four").run()
    assert rows == [] and _view(rerun) == _view(one)
    assert {p: p.stat().st_mtime for p in (tmp_path / "four").glob("*/*.json")} == before


def test_screen_batch_is_not_part_of_the_run_id() -> None:
    digests = {"harmful": "0" * 64}
    assert TuneConfig(screen_batch=1).run_id(digests) == TuneConfig().run_id(digests)
    assert TuneConfig().screen_batch == 4


def test_an_error_mid_batch_leaves_no_trial_running(
    lm: LoadedModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    search = _search(lm, tmp_path / "s", None, screen_batch=3, max_trials=3)
    calls: list[int] = []
    real = search.complete

    def complete(trial: optuna.Trial, point: Any) -> tuple[float, float, float]:
        calls.append(trial.number)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(trial, point)

    monkeypatch.setattr("neurogate.tuning.search.screen_out", lambda *a: None)
    monkeypatch.setattr(search, "complete", complete)
    with pytest.raises(KeyboardInterrupt):
        search.run()
    study = search.study()
    assert [t.state for t in study.trials] == [
        optuna.trial.TrialState.COMPLETE,
        optuna.trial.TrialState.FAIL,
        optuna.trial.TrialState.FAIL,
    ]


def test_overlapping_trials_count_their_time_once() -> None:
    t0 = datetime(2026, 1, 1)
    complete, pruned = optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED

    def trial(state: Any, start: int, end: int) -> SimpleNamespace:
        return SimpleNamespace(
            state=state,
            datetime_start=t0 + timedelta(seconds=start),
            datetime_complete=t0 + timedelta(seconds=end),
            user_attrs={},
        )

    # a batch of three asked at 0 and told at 10, 20, 30; then one trial alone from 40 to 50
    trials = [trial(pruned, 0, 10), trial(complete, 0, 20), trial(pruned, 0, 30), trial(complete, 40, 50)]
    study = SimpleNamespace(get_trials=lambda **kw: trials)
    summary = screening_summary(study)  # type: ignore[arg-type]
    assert summary["seconds"] == 40.0 and summary["trials_per_minute"] == pytest.approx(6.0)
    assert (summary["screened_out"], summary["full"]) == (2, 2)
