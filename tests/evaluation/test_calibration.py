"""Calibrated rates: the corrected estimate on simulated judges with known truth (its 95% interval must
cover the true class shares in at least 90% of 500 simulations with random audits of 30), on hand-made
cases, and from a real run folder's audit labels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from audit_run import make_run
from neurogate.errors import ConfigError
from neurogate.evaluation.audit import AUDIT_CLASSES, prepare_audit
from neurogate.evaluation.audit_labels import LabelStore
from neurogate.evaluation.audit_session import LabelSession
from neurogate.evaluation.calibration import calibrate, calibrated_rates, interval, posterior_shares
from neurogate.evaluation.judges.keyword import KeywordJudge
from neurogate.evaluation.replies import degeneracy

K = len(AUDIT_CLASSES)  # refusal, redirect, compliance, degenerate
FORM = np.array([0, 2, 3])  # a judge without a redirect class: verdicts refusal, compliance, degenerate
FOUR = np.arange(K)
DATA = Path(__file__).resolve().parents[1] / "data"

# true class shares, and P(verdict | true class): one row per true class, one column per verdict
SCENARIOS: dict[str, tuple[list[float], list[list[float]], np.ndarray]] = {
    # reads form: calls most redirects compliance (the failure seen on steered replies)
    "form judge": (
        [0.2, 0.25, 0.5, 0.05],
        [[0.95, 0.05, 0], [0.1, 0.9, 0], [0.03, 0.97, 0], [0, 0, 1]],
        FORM,
    ),
    # knows redirects but calls 25% of them compliance
    "25% of redirects called compliance": (
        [0.2, 0.25, 0.5, 0.05],
        [[0.95, 0.02, 0.03, 0], [0, 0.75, 0.25, 0], [0.02, 0.05, 0.93, 0], [0, 0, 0, 1]],
        FOUR,
    ),
    # misses 30% of refusals (a phrase list on steered refusals)
    "misses 30% of refusals": (
        [0.15, 0.2, 0.55, 0.1],
        [[0.7, 0.3, 0], [0.2, 0.8, 0], [0.02, 0.98, 0], [0, 0, 1]],
        FORM,
    ),
    # calls 10% of fluent replies degenerate and misses some degenerate ones
    "over-calls degenerate": (
        [0.1, 0.1, 0.5, 0.3],
        [[0.9, 0.05, 0.05], [0.1, 0.8, 0.1], [0.02, 0.88, 0.1], [0, 0.05, 0.95]],
        FORM,
    ),
    # an unsteered model: nearly all refusals, the other classes rare
    "refusing baseline": (
        [0.9, 0.03, 0.05, 0.02],
        [[0.97, 0.03, 0], [0.3, 0.7, 0], [0.1, 0.9, 0], [0, 0, 1]],
        FORM,
    ),
}


def simulate(
    shares: list[float],
    confusion: list[list[float]],
    match: np.ndarray,
    n_replies: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Coverage of each class's 95% interval over 500 simulated conditions: true classes drawn from
    ``shares``, verdicts from ``confusion``, 30 replies audited at random (not stratified)."""
    sims, audited_n = 500, 30
    conf = np.asarray(confusion, dtype=float)
    n_verdicts = conf.shape[1]
    truth = rng.choice(K, size=(sims, n_replies), p=shares)
    cdf = np.cumsum(conf, axis=1)[truth]  # (sims, replies, verdicts)
    verdict = np.minimum((rng.random((sims, n_replies))[..., None] > cdf).sum(-1), n_verdicts - 1)
    picked = np.argsort(rng.random((sims, n_replies)), axis=1)[:, :audited_n]
    sel = np.zeros((sims, n_replies), dtype=bool)
    np.put_along_axis(sel, picked, True, axis=1)
    row = np.repeat(np.arange(sims), n_replies)
    strata = np.zeros((sims, n_verdicts), dtype=np.int64)
    np.add.at(strata, (row, verdict.ravel()), 1)
    audited = np.zeros((sims, n_verdicts, K), dtype=np.int64)
    s = sel.ravel()
    np.add.at(audited, (row[s], verdict.ravel()[s], truth.ravel()[s]), 1)
    true_share = (truth[..., None] == np.arange(K)).mean(axis=1)
    _, draws = posterior_shares(strata, audited, match, rng, draws=1000)
    low, high = interval(draws)
    return ((true_share >= low - 1e-9) & (true_share <= high + 1e-9)).mean(axis=0)


@pytest.mark.parametrize("n_replies", [48, 100])
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_the_interval_covers_the_true_share_on_simulated_judges(name: str, n_replies: int) -> None:
    shares, confusion, match = SCENARIOS[name]
    coverage = simulate(shares, confusion, match, n_replies, np.random.default_rng(7))
    assert coverage.min() >= 0.90, dict(zip(AUDIT_CLASSES, coverage.round(3).tolist(), strict=True))


def test_the_correction_moves_the_judged_rate_toward_the_truth() -> None:
    """A judge that calls every redirect compliance: 40 compliance verdicts, of which the audit finds half
    are redirects; the corrected redirect share is near 20%, where the judge says 0%."""
    verdicts = ["refusal"] * 50 + ["compliance"] * 40 + ["degenerate"] * 10
    labels = {i: "refusal" for i in range(0, 50, 5)}  # 10 audited refusals, all right
    labels |= {50 + 2 * j: ("redirect" if j % 2 else "compliance") for j in range(20)}  # 20: half redirects
    labels |= {90: "degenerate", 91: "degenerate"}
    r = calibrate(verdicts, labels, AUDIT_CLASSES, key="cna-m0", judge="keyword")
    red, comp = r.classes["redirect"], r.classes["compliance"]
    assert red.judged.value == 0.0 and comp.judged.value == pytest.approx(0.4)
    assert red.corrected.value == pytest.approx(0.2, abs=0.03) and red.corrected.low > 0.08
    assert comp.corrected.value == pytest.approx(0.2, abs=0.03)
    assert r.classes["refusal"].corrected.value == pytest.approx(0.5, abs=0.03)
    assert red.audited.k == 10 and red.audited.n == 32
    assert r.strata == {"refusal": (50, 10), "compliance": (40, 20), "degenerate": (10, 2)}
    assert sum(c.corrected.value for c in r.classes.values()) == pytest.approx(1.0)


def test_a_stratum_without_audited_items_borrows_the_judges_record_with_a_wide_interval() -> None:
    verdicts = ["refusal"] * 90 + ["degenerate"] * 10
    labels = {i: "refusal" for i in range(0, 90, 3)}  # 30 audited, none of the degenerate verdicts
    r = calibrate(verdicts, labels, AUDIT_CLASSES)
    deg = r.classes["degenerate"]
    assert (
        deg.audited.k == 0 and 0.05 < deg.corrected.value < 0.10
    )  # the judge was right on every audited item
    assert deg.corrected.low < 0.05 and deg.corrected.high >= 0.10 - 1e-9
    everything = calibrate(
        verdicts, {i: "refusal" for i in range(90)} | {i: "degenerate" for i in range(90, 100)}, AUDIT_CLASSES
    )
    assert everything.classes["degenerate"].corrected == type(deg.corrected)(
        0.1, 0.1, 0.1
    )  # all audited: exact
    with pytest.raises(ConfigError, match="not among the classes"):
        calibrate(verdicts, {0: "maybe"}, AUDIT_CLASSES)


def test_calibrated_rates_of_a_run_folder(tmp_path: Path) -> None:
    run = make_run(tmp_path, keys=("baseline", "cna-m0", "caa-s1"), n=40)
    assert calibrated_rates(run) == {}  # no audit: nothing calibrated
    sample = prepare_audit(run, per_condition=5).sample
    store = LabelStore(run)
    session = LabelSession(sample, store, "ana")
    for it in sample.items[:10]:  # label by the stored verdict, but call one unsure
        assert session.item == it
        verdict = sample.hidden[it.id].verdicts["keyword"]
        session.press("u" if it is sample.items[0] else verdict[0].replace("d", "g"))
    rates = calibrated_rates(run)
    assert set(rates) <= {"baseline", "cna-m0", "caa-s1"} and rates
    assert sum(r.n_audited + r.n_unsure for r in rates.values()) == 10
    assert sum(r.n_unsure for r in rates.values()) == 1
    for r in rates.values():
        assert r.judge == "keyword" and r.n_replies == 40
        for c in AUDIT_CLASSES:
            cr = r.classes[c]
            assert 0 <= cr.corrected.low <= cr.corrected.value <= cr.corrected.high <= 1


def keyword_verdicts(rows: list[dict[str, str]]) -> list[str]:
    """Each reply's class as the engine gives it under ``keyword`` (degenerate first)."""
    live = [i for i, r in enumerate(rows) if not degeneracy(r["reply"])]
    verdicts = ["degenerate"] * len(rows)
    judged = KeywordJudge().judge([rows[i]["prompt"] for i in live], [rows[i]["reply"] for i in live])
    for i, v in zip(live, judged, strict=True):
        verdicts[i] = v
    return verdicts


def audits_of_30(
    verdicts: list[str], labels: list[str], seed: int, sims: int = 300
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The true shares, the corrected means ``[sims, K]`` and each class's coverage, over ``sims`` random
    audits of 30 replies of one condition whose every reply has a hand label."""
    names = [c for c in AUDIT_CLASSES if c in verdicts]
    v_idx = np.array([names.index(v) for v in verdicts])
    t_idx = np.array([AUDIT_CLASSES.index(label) for label in labels])
    n = len(labels)
    rng = np.random.default_rng(seed)
    picked = np.argsort(rng.random((sims, n)), axis=1)[:, :30]
    strata = np.tile(np.bincount(v_idx, minlength=len(names)), (sims, 1))
    audited = np.zeros((sims, len(names), K), dtype=np.int64)
    np.add.at(audited, (np.repeat(np.arange(sims), 30), v_idx[picked].ravel(), t_idx[picked].ravel()), 1)
    means, draws = posterior_shares(
        strata, audited, np.array([AUDIT_CLASSES.index(c) for c in names]), rng, 1000
    )
    low, high = interval(draws)
    truth = np.bincount(t_idx, minlength=K) / n
    coverage = ((truth >= low - 1e-9) & (truth <= high + 1e-9)).mean(axis=0)
    return truth, means, coverage


@pytest.mark.parametrize("name", ["tuned_audit", "cna_audit"])
def test_a_30_reply_audit_recovers_a_condition_counted_in_full_by_hand(name: str) -> None:
    """Two steered conditions whose every reply was read by hand (tests/data), judged by ``keyword``: over
    300 random audits of 30 replies, the corrected interval holds the full hand count at least 90% of the
    time, where the judge alone is far off on the tuned circuit (3% refusal judged, 19% by hand)."""
    rows = [json.loads(line) for line in (DATA / f"{name}.jsonl").read_text().splitlines()]
    verdicts = keyword_verdicts(rows)
    truth, means, coverage = audits_of_30(verdicts, [r["label"] for r in rows], seed=3)
    assert coverage.min() >= 0.90, coverage
    refusal = AUDIT_CLASSES.index("refusal")
    assert abs(means[:, refusal].mean() - truth[refusal]) < 0.02
    if name == "tuned_audit":
        assert verdicts.count("refusal") <= 5 and truth[refusal] == pytest.approx(0.19)


REDIRECT_CONDITIONS = sorted(
    {json.loads(line)["condition"] for line in (DATA / "redirect_set.jsonl").read_text().splitlines()}
)


@pytest.mark.parametrize("condition", REDIRECT_CONDITIONS)
def test_a_30_reply_audit_recovers_redirects_the_judge_cannot_see(condition: str) -> None:
    """The four steered conditions of the redirect set (every reply labelled blind by two annotators),
    judged by ``keyword``, which never says redirect: over 300 random audits of 30 of the 80 replies, the
    corrected interval holds the full hand count of every class, redirect included, at least 90% of the
    time, and the estimate is not biased."""
    rows = [json.loads(line) for line in (DATA / "redirect_set.jsonl").read_text().splitlines()]
    rows = [r for r in rows if r["condition"] == condition]
    verdicts = keyword_verdicts(rows)
    truth, means, coverage = audits_of_30(verdicts, [r["label"] for r in rows], seed=5)
    assert coverage.min() >= 0.90, coverage
    assert "redirect" not in verdicts and truth[AUDIT_CLASSES.index("redirect")] > 0
    assert np.abs(means.mean(axis=0) - truth).max() < 0.03


def test_calibrating_under_a_judge_that_did_not_classify_the_run_is_refused(tmp_path: Path) -> None:
    run = make_run(tmp_path)  # judged by keyword only
    prepare_audit(run, per_condition=5)
    assert calibrated_rates(run, judge="keyword") == {}  # no labels yet: nothing to calibrate, no error
    sample = prepare_audit(run).sample
    session = LabelSession(sample, LabelStore(run), "ana")
    session.press("r")
    with pytest.raises(ConfigError, match="the local judge did not classify condition"):
        calibrated_rates(run, judge="local")
