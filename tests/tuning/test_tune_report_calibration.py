"""The search report with a blind audit of its held-out check: calibrated rates for the audited
conditions, "judge only, uncalibrated" without an audit."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from neurogate.evaluation.audit import prepare_audit
from neurogate.evaluation.audit_labels import LabelStore
from neurogate.evaluation.audit_session import KEYS, LabelSession
from neurogate.tuning.final import TuneResults
from neurogate.tuning.report import write_reports

DATA = Path(__file__).resolve().parents[1] / "data"
KEY_OF = {label: key for key, label in KEYS.items()}


def test_the_search_report_shows_the_audited_held_out_check(tmp_path: Path) -> None:
    run = tmp_path / "search"
    run.mkdir()
    shutil.copy(DATA / "v2-tune.json", run / "tune.json")  # a stored search: 3 held-out replies each
    results = TuneResults.load(run / "tune.json")
    md, _ = write_reports(results, run)
    assert (
        "No audit labels" in md.read_text()
        and "| tuned | - | - | judge only, uncalibrated |" in md.read_text()
    )

    sample = prepare_audit(run, per_condition=3).sample
    session = LabelSession(sample, LabelStore(run), "ana")
    while not session.done:  # every tuned reply is a redirect; the rest as their judge said
        hidden = sample.hidden[session.item.id] if session.item else None
        assert hidden is not None
        verdict = hidden.verdicts[next(iter(hidden.verdicts))]
        session.press("d" if hidden.condition == "tuned" else KEY_OF[verdict])
    text = write_reports(results, run)[0].read_text()
    section = text.split("## Calibrated rates")[1].split("\n## ")[0]
    assert "No audit labels" not in section
    assert "| tuned | 3 of 3 | refusal |" in section
    assert "| redirect |" in section and "| 100% [44-100] | 100% [100-100] |" in section


def test_a_finished_search_draws_its_audit_sample_and_names_the_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from neurogate.cli.tune import _audit_sample

    run = tmp_path / "search"
    run.mkdir()
    shutil.copy(DATA / "v2-tune.json", run / "tune.json")
    _audit_sample(run)
    out = capsys.readouterr().out
    items = (run / "audit" / "items.jsonl").read_text().splitlines()
    assert items and f"neurogate audit {run} --annotator NAME" in " ".join(out.split())
    assert "uncalibrated" in out
    (run / "tune.json").write_text("{")  # a damaged search: no sample, one line, no traceback
    shutil.rmtree(run / "audit")
    _audit_sample(run)
    captured = capsys.readouterr()
    assert "no audit sample drawn" in captured.err and "Traceback" not in captured.err
