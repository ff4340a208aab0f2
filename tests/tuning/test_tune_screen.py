"""Screening: trials first measured on a few prompts with short replies, the clearly worse ones stopped
there (pruned, with their screen scores), the rest measured in full; resumable, and without screening the
search is what it was."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import optuna
import pytest
from typer.testing import CliRunner

from neurogate.cli.main import app
from neurogate.errors import ConfigError
from neurogate.models.loading import LoadedModel
from neurogate.tuning import TuneConfig, run_tune
from neurogate.tuning.run import tune_dir
from neurogate.tuning.screen import REASON_ATTR, SCREEN_ATTR, ScreenScores, screen_bar, screen_out
from neurogate.tuning.search import Scores, Search, choose, pareto
from tuning.small import BASE, LOOSE, ONE_RULE, SCREEN

# one scorer at one position mode: a single seeded point, so the later trials are sampled (and screened)
SMALL: dict[str, Any] = {**BASE, **ONE_RULE, **SCREEN, "max_trials": 4}


def _states(root: Path) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name="neurogate-tune", storage=f"sqlite:///{root / 'study.db'}").trials


def _stored(root: Path) -> dict[str, float]:
    return {str(p.relative_to(root)): p.stat().st_mtime for p in root.glob("*/*.json")}


def test_the_rule_screens_out_only_clearly_worse_trials() -> None:
    config = TuneConfig(screen_eta=3, screen_margin=0.125)
    assert screen_bar([], config) is None  # nothing measured in full yet: nothing is screened out
    assert screen_out(ScreenScores(0.0, 0.0, 0.0, 0.0), [], config) is None
    full = [0.75, 0.5, 0.25, 0.25, 0.0, 0.0]  # the 2nd best of six (the top third) less the margin
    assert screen_bar(full, config) == pytest.approx(0.375)
    assert screen_out(ScreenScores(0.375, 0.0, 0.0, 0.0), full, config) is None
    reason = screen_out(ScreenScores(0.25, 0.0, 0.0, 0.0), full, config)
    assert reason is not None and "25% < 38%" in reason
    # eta 1 keeps anything at least as good as the worst full trial's screen
    assert (
        screen_out(ScreenScores(0.0, 0.0, 0.0, 0.0), full, TuneConfig(screen_eta=1, screen_margin=0.0))
        is None
    )


def test_screening_settings_are_checked_and_in_the_run_id_only_when_on() -> None:
    digests = {"harmful": "0" * 64}
    assert TuneConfig().screening and not TuneConfig(screen_prompts=0).screening
    assert not TuneConfig(n_tune=8, screen_prompts=8).screening  # a screen of every prompt is no screen
    off = TuneConfig(screen_prompts=0).run_id(digests)
    assert TuneConfig(screen_prompts=0, screen_tokens=5, screen_eta=2).run_id(digests) == off
    assert TuneConfig(screen_tokens=12).run_id(digests) != TuneConfig().run_id(digests) != off
    for bad, match in (
        ({"screen_prompts": -1}, "screen_prompts must be a whole number >= 0"),
        ({"screen_tokens": 0}, "screen_tokens must be a whole number >= 1"),
        ({"screen_eta": 0}, "screen_eta must be a whole number >= 1"),
        ({"screen_margin": 1.5}, "screen_margin must be <= 1"),
    ):
        with pytest.raises(ConfigError, match=match):
            TuneConfig.from_mapping(bad)


def test_a_pruned_trial_is_never_chosen() -> None:
    """Only trials measured in full reach the front and the choice, however good a pruned one looks."""
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    scores = {"compliance": 0.5, "refusal": 0.5, "degenerate": 0.0, "kl": 0.01, "benign_refusal": 0.0}
    study.add_trial(
        optuna.trial.create_trial(
            values=[0.5, 0.01, 0.0],
            user_attrs={"scores": {**scores, "neurons": 10}, "constraint": [-0.05]},
        )
    )
    best = {**scores, "compliance": 1.0, "refusal": 0.0, "neurons": 1}
    study.add_trial(
        optuna.trial.create_trial(
            state=optuna.trial.TrialState.PRUNED,
            user_attrs={"scores": best, SCREEN_ATTR: {"compliance": 1.0}, "constraint": [-0.05]},
        )
    )
    base = Scores(0.0, 1.0, 0.0, 0.0, 0.0, 0, 0.0)
    assert choose(study, base, TuneConfig())[0].number == 0
    assert [t.number for t in pareto(study)] == [0]


def test_screened_out_trials_are_pruned_with_their_screen_and_resume_reruns_nothing(
    lm: LoadedModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # screen out every trial but the seeded point, whatever its screen
    monkeypatch.setattr("neurogate.tuning.search.screen_out", lambda *a: "screened out (test)")
    config = TuneConfig.from_mapping({**SMALL, **LOOSE})
    events: list[tuple[str, dict[str, Any]]] = []
    result = run_tune(config, tmp_path, lm=lm, on_event=lambda k, i: events.append((k, i)))
    root = tune_dir(config, tmp_path)
    trials = _states(root)
    states = [t.state for t in trials]
    assert states[0] == optuna.trial.TrialState.COMPLETE and trials[0].user_attrs["seed"]
    assert states[1:] == [optuna.trial.TrialState.PRUNED] * 3
    for t in trials:  # every trial has its screen; a pruned one its point and why
        assert set(t.user_attrs[SCREEN_ATTR]) == {"compliance", "degenerate", "kl", "kl_first"}
        assert "point" in t.user_attrs
    assert all(t.user_attrs[REASON_ATTR] == "screened out (test)" for t in trials[1:])
    assert [t.number for t in result.trials] == [0] and result.chosen["trial"] == 0
    assert [k for k, _ in events].count("screen") == 4 and [k for k, _ in events].count("trial") == 1
    # the screen is the first prompts with short replies, stored under the trials' own keys
    screen = ScreenScores(**trials[1].user_attrs[SCREEN_ATTR])
    assert 0.0 <= screen.compliance <= 1.0 and screen.kl >= 0.0
    assert {p.name for p in (root / "trials").glob("*@trial-*.json")} <= {
        p.name for p in (root / "screens").glob("*@trial-*.json")
    }
    summary = result.extra["screening"]
    assert (summary["screened_out"], summary["full"]) == (3, 1) and summary["trials_per_minute"] > 0
    report = (root / "tune-report.md").read_text()
    assert (
        "Screening: 3 trials screened out on the first 2 tuning prompts with 2-token replies, 1 measured "
        "in full" in report
    )
    # a rerun with the same settings measures nothing again
    before = _stored(root)
    events.clear()
    again = run_tune(config, tmp_path, lm=lm, on_event=lambda k, i: events.append((k, i)))
    assert not [k for k, _ in events if k in ("screen", "trial")]
    assert _stored(root) == before and [t.state for t in _states(root)] == states
    assert again.chosen["trial"] == 0 and again.extra["screening"]["screened_out"] == 3


def test_without_screening_the_search_is_unchanged(
    lm: LoadedModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Screening off: no screens, no screen settings in the run id, and the same trials on the fixed seed
    as a screened search in which no trial is screened out (the screen leaves the full measurement alone)."""
    off = {**SMALL, "screen_prompts": 0, "max_trials": 3}
    search = Search(lm, TuneConfig.from_mapping(off), tmp_path / "off")
    assert search.screen is None
    study = search.run()
    assert not (tmp_path / "off" / "screens").exists()
    assert all(SCREEN_ATTR not in t.user_attrs for t in study.trials)
    monkeypatch.setattr("neurogate.tuning.search.screen_out", lambda *a: None)
    (tmp_path / "on").mkdir()  # the same statistics: computed once
    shutil.copy(tmp_path / "off" / "stats-last.safetensors", tmp_path / "on")
    screened = Search(lm, TuneConfig.from_mapping({**off, "screen_prompts": 2}), tmp_path / "on").run()
    assert [t.params for t in screened.trials] == [t.params for t in study.trials]
    assert [t.values for t in screened.trials] == [t.values for t in study.trials]
    assert all(SCREEN_ATTR in t.user_attrs for t in screened.trials)


def test_the_cli_passes_the_screening_flags_through(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[TuneConfig] = []

    class Stop(Exception):
        pass

    def fake(config: TuneConfig, *args: Any, **kwargs: Any) -> None:
        seen.append(config)
        raise Stop

    monkeypatch.setattr("neurogate.tuning.run.run_tune", fake)
    args = ["tune", "--model", "tiny:llama", "--out", str(tmp_path / "runs"), "--judge", "keyword", "-q"]
    result = CliRunner().invoke(app, [*args, "--screen-prompts", "12", "--screen-tokens", "16"])
    assert isinstance(result.exception, Stop), result.output
    assert (seen[-1].screen_prompts, seen[-1].screen_tokens, seen[-1].screening) == (12, 16, True)
    CliRunner().invoke(app, [*args, "--screen-prompts", "0"])
    assert not seen[-1].screening
    CliRunner().invoke(app, args)
    assert (seen[-1].screen_prompts, seen[-1].screen_tokens) == (8, 24)
