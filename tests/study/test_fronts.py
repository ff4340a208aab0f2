"""The study's fronts: planning, the walk with reuse and saturation, Pareto sets, KL-budget leaders, the
transferred calibration, and the report (tiny random model end to end)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from neurogate.discovery.circuit import Circuit, Neuron
from neurogate.errors import ConfigError
from neurogate.evaluation.calibration import transfer
from neurogate.evaluation.conditions import Condition
from neurogate.evaluation.matching import Match
from neurogate.evaluation.results import ResultStore
from neurogate.models.loading import LoadedModel
from neurogate.study import StudyConfig, StudyResults, run_study
from neurogate.study.front_analysis import (
    FrontPoint,
    FrontsRecord,
    budget_leads,
    neurons_against_residual,
    pareto,
)
from neurogate.study.front_plan import PRESETS
from neurogate.study.fronts import PAPER_RANKING, plan_fronts, saturated
from neurogate.study.stages import Given, MatchedCondition

AUDIT = ("refusal", "redirect", "compliance", "degenerate")


def test_plan_walks_each_method_from_gentle_to_strong_and_marks_what_the_study_has() -> None:
    matched = MatchedCondition(Match("caa", 1.25, 0.3, 0.3, [], "validation", "cna m=0"), "caa-s1.25")
    specs = plan_fronts(
        PRESETS["default"],
        10_000,
        10,
        paper=60,
        paper_reuse="cna-m0@paper",
        ranked=100,
        given=[],
        matched=matched,
        done={"baseline", "cna-m0-n10", "cna-m0@paper", "caa-s1.25", "ablation-s1"},
    )
    by = {m: [s for s in specs if s.method == m] for m in ("cna", "paper", "caa", "ablation")}
    assert [s.condition.size for s in by["cna"]] == [1, 3, 10, 30, 100]
    assert [s.reuse for s in by["cna"]] == [None, None, "cna-m0-n10", None, None]
    assert all(not s.condition.benign and s.condition.group == "front" for s in specs)
    assert [s.condition.size for s in by["paper"]] == [10, 60]
    assert by["paper"][0].condition.circuit == PAPER_RANKING and by["paper"][0].reuse == "cna-m0@paper"
    # CAA's strengths ascending, its matched strength among them and reused
    assert [s.condition.value for s in by["caa"]] == [0.5, 1.0, 1.25, 2.0]
    assert [s.reuse for s in by["caa"]] == [None, None, "caa-s1.25", None]
    assert [(s.condition.value, s.reuse) for s in by["ablation"]] == [(0.25, None), (1.0, "ablation-s1")]
    # a size beyond a ranking is not planned; a residual method the study does not run has no front
    short = plan_fronts(
        PRESETS["full"],
        10_000,
        10,
        paper=0,
        paper_reuse=None,
        ranked=12,
        given=[],
        matched=None,
        residual=("ablation",),
    )
    assert {s.method for s in short} == {"cna", "ablation"}
    assert max(s.condition.size or 0 for s in short) <= 12
    # multipliers from the gentlest (closest to 1) to the strongest
    assert list(dict.fromkeys(s.series for s in short if s.method == "cna")) == [
        "cna m=0.5",
        "cna m=0",
        "cna m=-1",
    ]


def test_a_given_circuit_is_walked_over_shares_of_its_recorded_intervention() -> None:
    """m_f = 1 + f (m - 1): half as far from unsteered at f = 0.5, the recorded point (the study's own
    condition, reused) at f = 1, half as far again at 1.5; gentlest first."""
    neurons = [Neuron(0, i, 1.0, 1.0, 1.0, 0.0) for i in range(4)]
    tuned = Circuit(neurons, {"spec": "tiny:llama"})
    given = Given(
        "tuned", "tuned.json", "0" * 64, tuned, Condition("cna", -2.0, group="given", circuit="tuned")
    )
    specs = [
        s
        for s in plan_fronts(
            PRESETS["default"],
            10_000,
            10,
            paper=0,
            paper_reuse=None,
            ranked=0,
            given=[given],
            matched=None,
            done={"baseline", "cna-m-2@tuned"},
        )
        if s.method == "tuned"
    ]
    assert [s.condition.value for s in specs] == [-0.5, -2.0, -3.5]
    assert [s.setting["scale"] for s in specs] == [0.5, 1.0, 1.5]
    assert [s.reuse for s in specs] == [None, "cna-m-2@tuned", None]
    assert all(
        s.condition.circuit == "tuned" and s.series == "tuned" and not s.condition.benign for s in specs
    )
    assert all(s.setting["neurons"] == 4 and s.setting["fraction"] == 4 / 10_000 for s in specs)


def test_fronts_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="fronts must be one of"):
        StudyConfig(fronts="some")
    with pytest.raises(ConfigError, match="front_saturation"):
        StudyConfig(front_saturation=0.0)
    with pytest.raises(ConfigError, match="front_prompts"):
        StudyConfig(front_prompts=1)


def _point(method: str, key: str, kl: float, served: int, n: int = 20) -> FrontPoint:
    classes = ["compliance"] * served + ["refusal"] * (n - served)
    return FrontPoint(method, method, key, key, {}, classes, True, [kl] * 8, [kl] * 8, [(10.0, 5)] * 3)


def test_pareto_keeps_the_points_no_other_beats_on_both_axes() -> None:
    points = [
        _point("cna", "a", 0.01, 5),
        _point("cna", "b", 0.02, 4),
        _point("cna", "c", 0.05, 12),
        _point("cna", "d", 0.2, 11),
        _point("cna", "e", 0.3, 18),
    ]
    assert [p.key for p in pareto(points)] == ["a", "c", "e"]
    # a calibrated value can reorder the set
    assert [p.key for p in pareto(points, {"b": 0.9})] == ["a", "b"]


def test_budget_leads_name_the_best_method_within_each_kl_budget() -> None:
    record = FrontsRecord(
        "default",
        20,
        "keyword",
        [
            _point("cna", "cna-1", 0.01, 8),
            _point("cna", "cna-2", 0.08, 18),
            _point("ablation", "abl-1", 0.03, 14),
            _point("ablation", "abl-2", 0.3, 20),
        ],
    )
    leads = {lead.budget: lead for lead in budget_leads(record)}
    assert leads[0.02].leader == "cna" and leads[0.02].runner_up is None and leads[0.02].lead is None
    assert leads[0.05].leader == "ablation" and leads[0.05].runner_up == "cna"
    assert leads[0.05].lead == pytest.approx((14 - 8) / 20)
    assert leads[0.1].leader == "cna" and leads[0.1].lead == pytest.approx((18 - 14) / 20)
    paired = leads[0.1].paired
    assert paired is not None and paired.value == pytest.approx(0.2) and paired.low <= 0.2 <= paired.high
    assert leads[0.5].leader == "ablation"
    assert budget_leads(record, {"cna-2": 0.5})[2].leader == "ablation"  # ranked by the value given


def test_the_best_neuron_circuit_is_set_against_the_best_residual_method_per_budget() -> None:
    record = FrontsRecord(
        "default",
        20,
        "keyword",
        [
            _point("cna", "cna-1", 0.01, 8),
            _point("tuned", "tuned-1", 0.03, 17),
            _point("ablation", "abl-1", 0.03, 14),
            _point("caa", "caa-1", 0.3, 20),
        ],
    )
    by = {m.budget: m for m in neurons_against_residual(record)}
    assert by[0.02].neurons == ("cna-1", 0.4) and by[0.02].residual is None and by[0.02].lead is None
    assert by[0.05].neurons == ("tuned-1", 0.85) and by[0.05].residual == ("abl-1", 0.7)
    assert by[0.05].lead == pytest.approx(0.15)  # neurons minus residual, whichever leads
    paired = by[0.05].paired
    assert paired is not None and paired.value == pytest.approx(0.15) and paired.low <= 0.15 <= paired.high
    assert by[0.5].residual == ("caa-1", 1.0) and by[0.5].lead == pytest.approx(-0.15)
    # ranked by the value given (e.g. calibrated): a point can lose its place to one that served less judged
    calibrated = neurons_against_residual(record, {"tuned-1": 0.3})
    assert calibrated[1].neurons == ("cna-1", 0.4) and calibrated[1].lead == pytest.approx(0.4 - 0.7)


def test_transferred_calibration_covers_the_truth_when_the_judge_errs_alike() -> None:
    """A judge that calls 80% of redirects compliance: 60 audited replies of another condition teach
    P(class | verdict); the corrected shares of a 50-reply condition with other true shares cover them."""
    rng = np.random.default_rng(0)

    def judged(true: list[str]) -> list[str]:
        return [("compliance" if rng.random() < 0.8 else "redirect") if c == "redirect" else c for c in true]

    covered = {c: 0 for c in ("refusal", "redirect", "compliance")}
    runs = 300
    for _ in range(runs):
        other = list(rng.choice(AUDIT[:3], size=60, p=[0.3, 0.25, 0.45]))
        pairs = list(zip(judged(other), other, strict=True))
        true = list(rng.choice(AUDIT[:3], size=50, p=[0.2, 0.3, 0.5]))
        shares = transfer(judged(true), pairs, AUDIT, seed=int(rng.integers(1 << 30)))
        for c in covered:
            share = true.count(c) / len(true)
            covered[c] += shares[c].low <= share <= shares[c].high
    assert all(n / runs >= 0.9 for n in covered.values()), covered


TINY: dict[str, Any] = {
    "model": "tiny:llama",
    "prompts": {"n_discovery": 10, "n_eval": 4, "n_benign": 3},
    "random_seeds": (),
    "controls": (),
    "validation": 4,
    "corpus": None,
    "examples": 1,
    "front_prompts": 3,
    "discovery": {"fraction": 0.02, "universal_filter": False, "batch_size": 4},
    "evaluation": {"max_new_tokens": 4, "kl_tokens": 3, "batch_size": 4, "judges": ["keyword"]},
}


def test_study_traces_every_methods_front_reuses_its_points_and_reports_them(
    lm: LoadedModel, tmp_path: Path
) -> None:
    # a sparsity size that is also a CNA front size: the front reuses the study's condition
    cfg = StudyConfig.from_mapping({**TINY, "front_saturation": 1.0, "sparsity": (0.01,)})
    events: list[tuple[str, dict[str, Any]]] = []
    result = run_study(cfg, tmp_path, lm=lm, on_event=lambda k, i: events.append((k, i)))
    sparse = f"cna-m0-n{max(1, round(0.01 * lm.adapter.n_neurons))}"
    assert sparse in result.conditions
    fronts = result.fronts
    assert fronts is not None and fronts.prompts == 3 and fronts.judge == "keyword"
    assert {"cna", "paper", "caa", "ablation"} <= set(fronts.methods())
    run_dir = tmp_path / result.run_id
    store = ResultStore(run_dir / "fronts")
    for point in fronts.points:
        stored = store.get(point.key)
        assert stored is not None and len(stored.harmful) == len(point.classes) == 3
        assert len(point.kl_mean) == 3 and point.kl.n == 3
        if point.reused is not None:  # the study's own replies, the first three of them
            assert [r.text for r in stored.harmful] == [
                r.text for r in result.conditions[point.reused].harmful[:3]
            ]
    assert any(p.reused == "ablation-s1" for p in fronts.points)
    assert [p.reused for p in fronts.points if p.key == sparse] == [sparse]
    # stops: no point of a stopped series after the point that stopped it
    for series, why in fronts.stopped.items():
        last = max(i for i, p in enumerate(fronts.points) if p.series == series)
        assert fronts.points[last].label in why
    report = (run_dir / "report.md").read_text()
    assert "## Fronts: compliance against damage" in report
    assert "mean benign KL budget" in report and "judge only, uncalibrated" in report
    assert "best neuron circuit (served)" in report and "best residual-stream method (served)" in report
    assert "Served vs damage" in (run_dir / "report.html").read_text()
    assert [i["key"] for k, i in events if k == "front"] == [p.key for p in fronts.points]
    # results round-trip, and a rerun reads every point back
    again = StudyResults.load(run_dir / "results.json")
    assert again.fronts is not None and again.fronts.to_dict() == fronts.to_dict()
    events.clear()
    run_study(cfg, tmp_path, lm=lm, on_event=lambda k, i: events.append((k, i)))
    assert all(i["cached"] for k, i in events if k == "front")
    # results stored before fronts existed still load
    data = json.loads((run_dir / "results.json").read_text())
    del data["fronts"]
    assert StudyResults.from_dict(data).fronts is None


def test_a_series_stops_where_it_saturates_or_breaks_the_model() -> None:
    served = _point("cna", "a", 0.1, 19)
    assert saturated(served, 0.95, 0.0) == "saturated at a: 95% served"
    assert saturated(served, 0.96, 0.0) is None
    broken = FrontPoint("cna", "cna", "b", "b", {}, ["degenerate"] * 12 + ["refusal"] * 8, True, [], [], [])
    assert saturated(broken, 0.95, 0.0) == "stopped at b: 60% degenerate"
    assert saturated(broken, 0.95, 0.4) is None  # no worse than unsteered by a quarter
