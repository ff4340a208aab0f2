"""The study report with a blind audit in the run folder: calibrated rates for the audited conditions,
"judge only, uncalibrated" for the others, and a damaged audit costs only the calibration."""

from __future__ import annotations

import json
from pathlib import Path

from tests.study.test_report import _results

from neurogate.atomic import write_json_atomic
from neurogate.evaluation.audit import prepare_audit
from neurogate.evaluation.audit_labels import LabelStore
from neurogate.evaluation.audit_session import LabelSession
from neurogate.study.judge_sections import UNCALIBRATED
from neurogate.study.report import write_reports


def test_the_report_shows_calibrated_rates_where_an_audit_exists(tmp_path: Path) -> None:
    results = _results()
    run = tmp_path / results.run_id
    write_json_atomic(run / "results.json", results.to_dict())
    md_path, _ = write_reports(results, run)
    md = md_path.read_text()
    assert "## Calibrated rates" in md and "No condition has audit labels" in md
    assert md.count(UNCALIBRATED) >= len(results.sweep) + 1

    sample = prepare_audit(run, per_condition=4).sample
    session = LabelSession(sample, LabelStore(run), "ana")
    while session.item is not None and not session.done:  # label cna m=0 (n=5) only, as its judge did
        hidden = sample.hidden[session.item.id]
        if hidden.condition == "cna-m0-n5":
            # what the judge called compliance is a redirect
            session.press({"refusal": "r", "compliance": "d"}[hidden.verdicts["keyword"]])
        else:
            session.press("s")
        if session.labelled == 4:
            break
    md_path, html_path = write_reports(results, run)
    md = md_path.read_text()
    section = md.split("## Calibrated rates")[1].split("\n## ")[0]
    assert "| cna m=0 | 4 of 4 | refusal | 25% [" in section  # one of four, judged and audited
    # every reply audited: the corrected share is exact; keyword cannot say redirect, so its rate is n/a
    assert "|  |  | redirect | n/a (keyword) | 75% [30-95] | 75% [75-75] |" in section
    assert f"| baseline | - | - | {UNCALIBRATED} | - | - |" in section
    headline = md.split("## Headline")[1].split("\n## ")[0]
    assert "refusal, calibrated" in headline and "25% [25-25] (4 audited)" in headline
    assert UNCALIBRATED in headline
    assert "Calibrated rates" in html_path.read_text()

    (run / "audit" / "sample.json").write_text(json.dumps({"kind": "something else"}))
    md_path, _ = write_reports(results, run)  # a damaged audit: the report is still written
    assert "No condition has audit labels" in md_path.read_text()
