"""The widened search space: sizes up to 1%, a multiplier profile over the layers, exportable points and
the front of compliance against benign KL."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import optuna
import pytest
from typer.testing import CliRunner

from neurogate import settings
from neurogate.cli.main import app
from neurogate.discovery.circuit import Circuit
from neurogate.discovery.config import DiscoverConfig
from neurogate.discovery.discover import gather_evidence
from neurogate.discovery.scoring import Evidence
from neurogate.errors import ConfigError
from neurogate.models.loading import LoadedModel
from neurogate.prompts import load
from neurogate.tuning import TuneConfig, TuneResults, run_tune
from neurogate.tuning.final import front_of, rule_key
from neurogate.tuning.front import exportable, front_rows, pareto_front, served_as
from neurogate.tuning.report import render_markdown
from neurogate.tuning.search import seed_points
from neurogate.tuning.space import Point, circuit_at, paper_point, suggest
from tuning.test_tune import SMALL as TUNE_SMALL

DATA = Path(__file__).resolve().parents[1] / "data"
POS = ["tell me how to do a bad thing", "explain a harmful plan", "write something cruel", "how to cheat"]
NEG = ["tell me how to bake bread", "explain a garden plan", "write something kind", "how to swim"]
#: The small search of test_tune.py, choosing on the search's own prompts (no confirmation).
SMALL: dict[str, Any] = {**TUNE_SMALL, "n_confirm": 0}


@pytest.fixture(scope="module")
def evidence() -> Evidence:
    from neurogate.models.tiny import tiny_lm

    lm = tiny_lm("llama")
    return gather_evidence(
        lm, load(POS, name="p"), load(NEG, name="n"), DiscoverConfig(score="direction"), False
    )


def test_sizes_reach_one_percent_while_the_paper_and_the_seeds_stay_at_its_size() -> None:
    config = TuneConfig()
    assert config.cap == 0.01 and config.min_fraction < config.cap
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    sizes = [suggest(study.ask(), config, 28).fraction for _ in range(200)]
    assert max(sizes) > 0.001 and all(config.min_fraction <= s <= 0.01 for s in sizes)
    assert paper_point(28, config.cap).fraction == 0.001  # the paper's rule keeps its 0.1%
    assert paper_point(28, 0.0005).fraction == 0.0005  # or the cap, when that is smaller
    assert {p.fraction for p in seed_points(28, config)} <= {0.001, 0.0002}
    with pytest.raises(ConfigError, match=r"cap \(1e-05\) must be at least min_fraction"):
        TuneConfig(cap=0.00001)


def test_a_flat_profile_is_todays_point_and_a_slope_steers_each_layer(
    lm: LoadedModel, evidence: Evidence
) -> None:
    spec: dict[str, Any] = {}
    n = lm.adapter.n_layers
    for weights, m in (("uniform", -1.0), ("proportional", 0.5)):
        old = Point("mean-diff", "both", "last", 0.05, 0, n - 1, "cna", m, weights)
        flat = replace(old, slope=0.0)
        assert flat == old and flat.label == old.label and rule_key(flat) == rule_key(old)
        before = {k: v for k, v in old.to_dict().items() if k not in ("fraction", "slope")}
        assert rule_key(flat) == settings.digest(before, 8)  # the key stored results had before profiles
        assert (
            flat.condition_multiplier == m
            and "profile" not in circuit_at(lm, flat, evidence, set(), spec).method
        )
        a, b = circuit_at(lm, old, evidence, set(), spec), circuit_at(lm, flat, evidence, set(), spec)
        assert a.neurons == b.neurons and a.factors(m) == b.factors(m)
        sloped = replace(old, slope=1.0)
        assert "over the layers" in sloped.label and rule_key(sloped) != rule_key(old)
        assert sloped.to_dict()["slope"] == 1.0
        assert sloped.multiplier_at(0) == pytest.approx(m - 0.5)
        assert sloped.multiplier_at(n - 1) == pytest.approx(m + 0.5)
        circuit = circuit_at(lm, sloped, evidence, set(), spec)
        assert circuit.method["profile"]["m_first"] == pytest.approx(m - 0.5)
        # the hooks and the fold read the factors: each neuron's is what its layer's multiplier gives it
        factors = circuit.factors(sloped.condition_multiplier)
        for neuron, base, factor in zip(circuit.neurons, a.neurons, factors, strict=True):
            expected = 1 + base.weight * (sloped.multiplier_at(neuron.layer) - 1)
            assert factor == pytest.approx(expected)
        assert len({round(f, 6) for f in factors}) > 1
        # the same neurons are chosen: only how far each moves changes
        assert [(x.layer, x.index) for x in circuit.neurons] == [(x.layer, x.index) for x in a.neurons]
    # a mean multiplier of 1 cannot carry the profile: the weights are taken relative to m = 0 instead
    one = Point("mean-diff", "both", "last", 0.05, 0, n - 1, "mean", 1.0, slope=0.8)
    circuit = circuit_at(lm, one, evidence, set(), spec)
    assert one.condition_multiplier == 0.0
    for neuron, factor in zip(circuit.neurons, circuit.factors(0.0), strict=True):
        assert factor == pytest.approx(one.multiplier_at(neuron.layer))


def test_a_saved_profile_steers_the_same_after_loading(
    lm: LoadedModel, evidence: Evidence, tmp_path: Path
) -> None:
    point = Point("direction", "positive", "last", 0.05, 0, lm.adapter.n_layers - 1, "cna", -1.0, slope=0.6)
    circuit = circuit_at(lm, point, evidence, set(), {})
    again = Circuit.load(circuit.save(tmp_path / "c.json"))
    assert again.factors(point.condition_multiplier) == circuit.factors(point.condition_multiplier)


def test_the_slope_range_is_searched_and_can_be_switched_off() -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    slopes = [suggest(study.ask(), TuneConfig(), 28).slope for _ in range(50)]
    assert min(slopes) < 0 < max(slopes) and all(-1 <= s <= 1 for s in slopes)
    flat = TuneConfig(slopes=(0.0, 0.0))
    assert all(suggest(study.ask(), flat, 28).slope == 0.0 for _ in range(5))
    with pytest.raises(ConfigError, match="slopes is a range"):
        TuneConfig(slopes=(1.0, -1.0))


def test_exportable_searches_never_try_mean() -> None:
    config = TuneConfig(exportable=True)
    assert config.interventions == ("cna",)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=2))
    points = [suggest(study.ask(), config, 28) for _ in range(100)]
    assert {p.intervention for p in points} == {"cna"} and all(p.exportable for p in points)
    assert all(p.intervention == "cna" for p in seed_points(28, config))
    assert any(p.intervention == "mean" for p in seed_points(28, TuneConfig()))
    with pytest.raises(ConfigError, match="exportable searches only cna"):
        TuneConfig(exportable=True, interventions=("mean",))
    assert exportable({"intervention": "cna"}) and not exportable({"intervention": "mean"})
    assert served_as({"intervention": "cna"}) == "exportable"
    assert "LoRA + bias (PEFT) or GGUF + control vector (llama.cpp)" in served_as({"intervention": "mean"})
    assert served_as({"intervention": "mean", "exportable": False}).startswith("not exportable as a plain")


def test_an_exportable_search_marks_every_trial_and_reports_the_front(
    lm: LoadedModel, tmp_path: Path
) -> None:
    config = TuneConfig.from_mapping({**SMALL, "exportable": True, "max_trials": 4})
    result = run_tune(config, tmp_path, lm=lm)
    assert result.trials and all(t.point["intervention"] == "cna" and t.exportable for t in result.trials)
    assert result.chosen["exportable"] is True
    assert result.front and all(row["exportable"] for row in result.front)
    assert {row["trial"] for row in result.front} <= {t.number for t in result.trials}
    stored = TuneResults.load(tmp_path / result.run_id / "tune.json")
    assert stored.front == result.front and all(t.exportable for t in stored.trials)
    report = (tmp_path / result.run_id / "tune-report.md").read_text()
    assert "## Front: compliance against benign KL" in report and "; exportable." in report


def test_the_pareto_front_of_hand_made_points() -> None:
    points = [
        (0.9, 0.30),  # 0: most compliant
        (0.8, 0.10),  # 1: on the front
        (0.8, 0.20),  # 2: dominated by 1
        (0.5, 0.05),  # 3: lowest KL
        (0.4, 0.05),  # 4: dominated by 3
        (0.9, 0.30),  # 5: a duplicate of 0 stays
        (float("nan"), 0.0),  # 6: not measured
        (0.2, 0.50),  # 7: dominated by everything
    ]
    assert pareto_front(points) == [0, 5, 1, 3]
    assert pareto_front([]) == []
    trials = [
        SimpleNamespace(
            number=10 + i,
            point={"intervention": "mean" if i == 1 else "cna"},
            scores={"compliance": c, "kl": k, "degenerate": 0.5 if i == 0 else 0.0, "neurons": 3},
        )
        for i, (c, k) in enumerate(points[:5])
    ]
    rows = front_rows(trials, max_degenerate=0.05)  # trial 10 is over the degenerate limit
    assert [r["trial"] for r in rows] == [11, 13] and [r["exportable"] for r in rows] == [False, True]
    assert [r["trial"] for r in front_rows(trials)] == [10, 11, 13]


def test_searches_stored_before_these_fields_still_load_and_report(tmp_path: Path) -> None:
    shutil.copy(DATA / "v2-tune.json", tmp_path / "tune.json")
    old = TuneResults.load(tmp_path / "tune.json")
    assert old.front == [] and all(t.exportable == (t.point["intervention"] == "cna") for t in old.trials)
    assert front_of(old)  # computed from the stored trials
    report = render_markdown(old)
    assert "## Front: compliance against benign KL" in report and "| exportable |" in report


def test_the_cli_passes_exportable_through(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[TuneConfig] = []

    class Stop(Exception):
        pass

    def fake(config: TuneConfig, *args: Any, **kwargs: Any) -> None:
        seen.append(config)
        raise Stop

    monkeypatch.setattr("neurogate.tuning.run.run_tune", fake)
    monkeypatch.setattr("neurogate.cli.tune.run_tune", fake, raising=False)
    args = ["tune", "--model", "tiny:llama", "--out", str(tmp_path / "runs"), "--judge", "keyword", "-q"]
    result = CliRunner().invoke(app, [*args, "--exportable"])
    assert isinstance(result.exception, Stop), result.output
    assert seen[-1].exportable and seen[-1].interventions == ("cna",) and seen[-1].cap == 0.01
    CliRunner().invoke(app, args)
    assert not seen[-1].exportable and "mean" in seen[-1].interventions


def test_a_search_of_profiles_records_them_in_the_trials_and_the_tuned_circuit(
    lm: LoadedModel, tmp_path: Path
) -> None:
    """With one slope allowed, it is no search parameter: every trial still records it, and the chosen
    circuit carries the profile in its weights under the multiplier it records."""
    config = TuneConfig.from_mapping({**SMALL, "slopes": [0.5, 0.5], "max_trials": 2})
    result = run_tune(config, tmp_path, lm=lm)
    assert all(t.point["slope"] == 0.5 for t in result.trials) and result.chosen["slope"] == 0.5
    circuit = Circuit.load(tmp_path / result.run_id / "tuned-circuit.json")
    chosen = Point(**{k: result.chosen[k] for k in Point.__dataclass_fields__})
    assert circuit.method["profile"]["slope"] == 0.5
    assert circuit.recorded_intervention() == (chosen.intervention, chosen.condition_multiplier)
    report = (tmp_path / result.run_id / "tune-report.md").read_text()
    assert "over the layers" in report
