"""Blind audits on a real run folder: the seeded sample, the label file, resuming, changed replies,
imported labels, agreement and adjudication, and the terminal flow driven by scripted keys (line input and
a pseudo-terminal)."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import termios
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from audit_run import condition, make_run
from neurogate.atomic import write_json_atomic
from neurogate.cli.audit import key_reader, label_loop, screen
from neurogate.cli.main import app, main
from neurogate.errors import ConfigError, NeurogateError
from neurogate.evaluation.audit import (
    AUDIT_CLASSES,
    ITEMS_FILE,
    RULE,
    RULE_VERSION,
    SAMPLE_FILE,
    load_sample,
    prepare_audit,
    reply_hash,
)
from neurogate.evaluation.audit_labels import (
    Label,
    LabelStore,
    agreement,
    import_labels,
    now,
    resolve,
    stale_message,
    valid,
)
from neurogate.evaluation.audit_session import LabelSession
from neurogate.evaluation.results import ResultStore

runner = CliRunner()


@pytest.fixture
def run(tmp_path: Path) -> Path:
    return make_run(tmp_path, keys=("baseline", "cna-m0", "caa-s1"), n=40)


def test_the_sample_is_seeded_per_condition_shuffled_and_blind(run: Path) -> None:
    prep = prepare_audit(run, per_condition=10, seed=3)
    sample = prep.sample
    assert len(sample.items) == 30 and len(prep.added) == 30
    by_cond = Counter(sample.hidden[it.id].condition for it in sample.items)
    assert by_cond == {"baseline": 10, "cna-m0": 10, "caa-s1": 10}
    # shuffled across conditions: the order is not grouped by condition
    order = [sample.hidden[it.id].condition for it in sample.items]
    assert sum(a != b for a, b in itertools.pairwise(order)) > 5
    # what the annotator gets names neither the condition nor a verdict
    blind = (prep.folder / ITEMS_FILE).read_text(encoding="utf-8")
    records = [json.loads(line) for line in blind.splitlines()]
    shown = " ".join(r["prompt"] + " " + r["reply"] for r in records)  # ids and hashes are hex
    for word in ("baseline", "cna", "caa", "keyword", "condition", "verdict"):
        assert word not in shown
    first = records[0]
    assert set(first) == {"id", "prompt", "reply", "sha256"} and first["sha256"] == reply_hash(first["reply"])
    hidden = json.loads((prep.folder / SAMPLE_FILE).read_text())["hidden"][first["id"]]
    assert hidden["verdicts"]["keyword"] in ("refusal", "compliance", "degenerate")
    # the same seed draws the same sample in another folder; another seed another one
    again = prepare_audit(make_run(run.parent / "copy", keys=("baseline", "cna-m0", "caa-s1"), n=40), 10, 3)
    assert {it.reply for it in again.sample.items} == {it.reply for it in sample.items}
    # ids and order are keyed by the sample's secret: not reproducible from the seed and the keys
    assert not {it.id for it in again.sample.items} & {it.id for it in sample.items}
    assert [it.reply for it in again.sample.items] != [it.reply for it in sample.items]
    other = prepare_audit(make_run(run.parent / "other", keys=("baseline", "cna-m0", "caa-s1"), n=40), 10, 4)
    assert {it.reply for it in other.sample.items} != {it.reply for it in sample.items}


def test_a_larger_sample_extends_the_drawn_one_and_another_seed_is_refused(run: Path) -> None:
    first = prepare_audit(run, per_condition=5, seed=1).sample
    ids = [it.id for it in first.items]
    assert prepare_audit(run).added == []  # nothing given: the existing sample as it is
    bigger = prepare_audit(run, per_condition=8)
    assert [it.id for it in bigger.sample.items][:15] == ids and len(bigger.added) == 9
    assert load_sample(run).per_condition == 8
    with pytest.raises(ConfigError, match="drawn with seed 1"):
        prepare_audit(run, seed=2)
    assert len(prepare_audit(run, per_condition=500).sample.items) == 120  # a condition's every reply


def test_a_study_without_results_json_reads_its_stored_conditions(tmp_path: Path) -> None:
    run = make_run(tmp_path, n=12, results=False)
    assert len(prepare_audit(run, 30).sample.items) == 24
    (tmp_path / "empty").mkdir()
    with pytest.raises(NeurogateError, match=r"no results\.json, tune\.json or stored conditions"):
        prepare_audit(tmp_path / "empty")


def test_a_search_folder_reads_its_final_check_and_a_lost_blind_file_is_written_again(tmp_path: Path) -> None:
    run = tmp_path / "tune-run"
    final = {k: condition(k, 10).to_dict() for k in ("baseline", "tuned")}
    write_json_atomic(run / "tune.json", {"run_id": "t", "final": final})
    prep = prepare_audit(run, per_condition=4)
    assert {h.condition for h in prep.sample.hidden.values()} == {"baseline", "tuned"}
    blind = prep.folder / ITEMS_FILE
    text = blind.read_text()
    blind.unlink()
    assert prepare_audit(run).added == [] and blind.read_text() == text


def _press(session: LabelSession, keys: str) -> None:
    for k in keys:
        session.press(k)


def test_labels_are_appended_with_who_when_which_rule_and_the_reply_hash(run: Path) -> None:
    sample = prepare_audit(run, per_condition=3).sample
    store = LabelStore(run)
    session = LabelSession(sample, store, "ana")
    first = session.item
    assert first is not None
    _press(session, "rdcb")  # refusal, redirect, compliance, then back to the third item
    assert session.pos == 2
    _press(session, "g")  # the third item again: degenerate replaces compliance
    records = [json.loads(line) for line in store.path.read_text().splitlines()]
    assert len(records) == 4
    rec = records[0]
    assert rec["item"] == first.id and rec["annotator"] == "ana" and rec["label"] == "refusal"
    assert rec["reply_sha256"] == first.sha256 and rec["rule"] == RULE_VERSION and rec["adjudicated"] is False
    assert rec["time"].endswith("+00:00")
    third = sample.items[2].id
    assert resolve(store.read(), sample)[third].label == "degenerate"
    assert not list(store.path.parent.glob(f".{store.path.name}.*"))  # no temporary file left


def test_a_session_resumes_after_the_last_label_and_brings_skipped_items_back(run: Path) -> None:
    sample = prepare_audit(run, per_condition=2).sample  # 6 items
    store = LabelStore(run)
    session = LabelSession(sample, store, "ana")
    _press(session, "rsuq")  # label 0, skip 1, unsure 2, quit
    assert session.done and session.labelled == 2
    again = LabelSession(sample, store, "ana")
    assert again.pos == 3  # after the last labelled item, not at the skipped one
    _press(again, "ccc")  # items 3, 4, 5: then the skipped item 1 comes back
    assert again.pos == 1 and not again.done
    step = again.press("r")
    assert step.done and again.labelled == 6
    other = LabelSession(sample, store, "ben")  # another annotator starts at the top
    assert other.pos == 0
    assert LabelSession(sample, store, "ana").done


def test_a_changed_reply_invalidates_its_labels_with_a_message(run: Path) -> None:
    sample = prepare_audit(run, per_condition=3).sample
    store = LabelStore(run)
    _press(LabelSession(sample, store, "ana"), "rrrrrrrrr")
    target = sample.items[0]
    hidden = sample.hidden[target.id]
    result = ResultStore(run / "conditions").get(hidden.condition)
    assert result is not None
    result.harmful[hidden.index].text = "A different reply after the run was generated again."
    data = json.loads((run / "results.json").read_text())
    data["conditions"][hidden.condition] = result.to_dict()
    (run / "results.json").write_text(json.dumps(data))
    prep = prepare_audit(run)
    assert prep.changed == [target.id]
    good, stale = valid(store.read(), prep.sample)
    assert len(good) == 8 and [s.item for s in stale] == [target.id]
    assert "no longer count" in (stale_message(stale) or "")
    session = LabelSession(prep.sample, store, "ana")
    assert session.item is not None and session.item.id == target.id
    assert session.item.reply.startswith("A different reply")


def test_imported_labels_are_checked_and_added_once(run: Path, tmp_path: Path) -> None:
    sample = prepare_audit(run, per_condition=2).sample
    good = [{"item": it.id, "label": "refusal", "sha256": it.sha256} for it in sample.items[:4]]
    path = tmp_path / "ben.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in good))
    assert import_labels(run, path, sample, "ben") == 4
    assert import_labels(run, path, sample, "ben") == 0  # the same labels again: nothing new
    labs = LabelStore(run).read()
    assert {lab.annotator for lab in labs} == {"ben"} and all(
        lab.source == "import:ben.jsonl" for lab in labs
    )
    bad = [
        {"item": "nope", "label": "refusal", "sha256": "x"},
        {"item": sample.items[0].id, "label": "maybe", "sha256": sample.items[0].sha256},
        {"item": sample.items[1].id, "label": "redirect", "sha256": "0" * 64},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in bad) + "not json\n")
    before = LabelStore(run).path.read_text()
    with pytest.raises(ConfigError) as err:
        import_labels(run, path, sample, "ben")
    text = str(err.value)
    assert "nothing imported" in text and "unknown item id 'nope'" in text and "'maybe'" in text
    assert "does not match" in text and "line 4: not JSON" in text
    assert LabelStore(run).path.read_text() == before
    csv_path = tmp_path / "cara.csv"
    csv_path.write_text(
        "id,sha256,label,annotator,time\n"
        + "".join(f"{it.id},{it.sha256},compliance,cara,2026-01-01T00:00:00+00:00\n" for it in sample.items)
    )
    assert import_labels(run, csv_path, sample, None) == 6
    assert import_labels(run, csv_path, sample, None) == 0  # the same records are not added twice
    with pytest.raises(ConfigError, match="no annotator"):
        (tmp_path / "anon.csv").write_text(
            f"id,sha256,label\n{sample.items[0].id},{sample.items[0].sha256},compliance\n"
        )
        import_labels(run, tmp_path / "anon.csv", sample, None)


def test_kappa_per_condition_and_overall_disagreements_and_adjudication(run: Path) -> None:
    sample = prepare_audit(run, per_condition=4).sample  # 12 items
    store = LabelStore(run)
    a_keys = "rrrrccccgggg"
    b_keys = "rrrdccccgggu"  # two disagreements: redirect vs refusal, unsure vs degenerate
    _press(LabelSession(sample, store, "ana"), a_keys)
    _press(LabelSession(sample, store, "ben"), b_keys)
    agree = agreement(store.read(), sample)
    (pair,) = agree.pairs
    assert (pair.a, pair.b, pair.n) == ("ana", "ben", 12)
    names = {"r": "refusal", "d": "redirect", "c": "compliance", "g": "degenerate", "u": "unsure"}
    la, lb = [names[k] for k in a_keys], [names[k] for k in b_keys]
    po = 10 / 12
    pe = sum(la.count(c) * lb.count(c) for c in set(la) | set(lb)) / 144
    assert pair.kappa == pytest.approx((po - pe) / (1 - pe))
    assert sum(n for n, _ in pair.per_condition.values()) == 12 and set(pair.per_condition) == set(
        sample.conditions
    )
    assert [d.item for d in agree.disagreements] == [sample.items[3].id, sample.items[11].id]
    resolved = resolve(store.read(), sample)
    assert resolved[sample.items[3].id].label is None  # refusal vs redirect: unresolved
    assert resolved[sample.items[11].id].label == "degenerate"  # unsure vs a class: the class
    # adjudication: the disagreements only, each with both labels on screen, kept with a flag
    items = [it for it in sample.items if it.id in {d.item for d in agree.disagreements}]
    others = {d.item: d.labels for d in agree.disagreements}
    adj = LabelSession(sample, store, "cara", items=items, adjudicate=True, others=others)
    assert "ana: refusal, ben: redirect" in screen(adj)
    _press(adj, "dg")
    assert adj.done
    resolved = resolve(store.read(), sample)
    assert resolved[sample.items[3].id].label == "redirect" and resolved[sample.items[3].id].adjudicated
    again = agreement(store.read(), sample)
    assert [d.adjudicated for d in again.disagreements] == ["redirect", "degenerate"]
    assert again.pairs[0].kappa == pair.kappa  # adjudication does not change what the annotators said
    _press(LabelSession(sample, store, "dan"), "rrrrcccc")  # a third annotator, part of the sample
    three = agreement(store.read(), sample)
    pairs = [(p.a, p.b, p.n) for p in three.pairs]
    assert pairs == [("ana", "ben", 12), ("ana", "dan", 8), ("ben", "dan", 8)]
    assert three.pairs[1].kappa == pytest.approx(1.0)


def test_the_label_file_keeps_every_writer(run: Path) -> None:
    sample = prepare_audit(run, per_condition=10).sample
    store = LabelStore(run)

    def write(who: str) -> None:
        for it in sample.items:
            store.append([Label(it.id, who, "refusal", it.sha256, now())])

    threads = [threading.Thread(target=write, args=(w,)) for w in ("ana", "ben")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert Counter(lab.annotator for lab in store.read()) == {"ana": 30, "ben": 30}


def test_the_cli_labels_with_line_input_and_prints_agreement_and_rates(run: Path) -> None:
    result = runner.invoke(app, ["audit", str(run), "--annotator", "ana", "-n", "3"], input="r\nd\nc\nq\n")
    assert result.exit_code == 0, result.output
    assert RULE.splitlines()[0] in result.output and "REQUEST" in result.output and "REPLY" in result.output
    assert "keyword" not in result.output.split("audit sample")[1]  # no verdict while labelling
    assert "3 of 9 items labelled by ana" in result.output and "resume with" in result.output
    assert [lab.label for lab in LabelStore(run).read()] == ["refusal", "redirect", "compliance"]
    keys = "\n".join("cdcgrrcgu") + "\n"  # the first item differs from ana's
    assert runner.invoke(app, ["audit", str(run), "-a", "ben"], input=keys).exit_code == 0
    out = runner.invoke(app, ["audit", str(run), "--agreement"]).output
    assert "ana / ben: Cohen's kappa" in out and "on 3 items" in out and "1 disagreement(s)" in out
    assert "--adjudicate" in out
    out = runner.invoke(app, ["audit", str(run), "--summary"], terminal_width=200).output
    assert "calibrated rates" in out and "keyword" in out and "redirect" in out
    assert "judge only, uncalibrated" not in out  # every condition has labels


def test_bracketed_condition_names_survive_the_terminal_tables(tmp_path: Path) -> None:
    run = make_run(tmp_path, n=6, labels={"cna-m0": "cna m=0 [paper]"})
    assert runner.invoke(app, ["audit", str(run), "-a", "ana", "-n", "3"], input="r\n" * 6).exit_code == 0
    out = runner.invoke(app, ["audit", str(run), "--summary"], terminal_width=200).output
    assert "cna m=0 [paper]" in out


def test_cli_errors_are_one_line(
    run: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for args in (
        ["audit", str(run)],
        ["audit", str(run / "nowhere"), "-a", "x"],
        ["audit", str(run), "--summary", "--agreement"],
    ):
        monkeypatch.setattr(sys, "argv", ["neurogate", *args])
        with pytest.raises(SystemExit) as exit_info:
            main()
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and err.startswith("error:"), err


def test_single_keys_without_enter_on_a_pseudo_terminal(run: Path, tmp_path: Path) -> None:
    sample = prepare_audit(run, per_condition=2).sample
    session = LabelSession(sample, LabelStore(run), "ana")
    master, slave = os.openpty()
    before = termios.tcgetattr(slave)
    with (
        os.fdopen(slave, "r", closefd=False) as stream,
        (tmp_path / "screen.txt").open("w") as out,
        key_reader(stream) as keys,
    ):
        assert not termios.tcgetattr(slave)[3] & termios.ICANON  # single keys
        os.write(master, b"rdx")  # no Enter; an unknown key; then the rest
        threading.Timer(0.2, os.write, (master, b"cq")).start()
        label_loop(session, keys, out)
    assert termios.tcgetattr(slave) == before  # the terminal is restored
    os.close(master)
    os.close(slave)
    assert [lab.label for lab in LabelStore(run).read()] == ["refusal", "redirect", "compliance"]
    assert "unknown key 'x'" in (tmp_path / "screen.txt").read_text()


@pytest.mark.slow
def test_the_command_on_a_real_terminal(run: Path) -> None:
    """The installed command in a pseudo-terminal: keys without Enter, each answered on screen (slow: a
    fresh interpreter imports neurogate; the key handling itself is covered above in-process)."""
    prepare_audit(run, per_condition=2)
    master, slave = os.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "neurogate", "audit", str(run), "--annotator", "tty"],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env={**os.environ, "COLUMNS": "120", "OMP_NUM_THREADS": "1"},
    )
    os.close(slave)
    seen = b""

    def read_until(marker: bytes, timeout: float = 120.0) -> None:
        nonlocal seen
        end = time.monotonic() + timeout
        while marker not in seen and time.monotonic() < end:
            try:
                seen += os.read(master, 65536)
            except OSError:
                break

    try:
        read_until(b"key> ")
        for n, key in enumerate(b"rcg"):
            os.write(master, bytes([key]))
            read_until(f"{n + 1} labelled".encode())
        os.write(master, b"q")
        read_until(b"resume with")
        assert proc.wait(timeout=60) == 0
    finally:
        proc.kill()
        os.close(master)
    assert b"3 of 6 items labelled by tty" in seen
    assert [lab.label for lab in LabelStore(run).read()] == ["refusal", "compliance", "degenerate"]


def test_every_class_has_a_key() -> None:
    from neurogate.evaluation.audit_session import KEYS

    assert set(KEYS.values()) == {*AUDIT_CLASSES, "unsure"} and {"s", "b", "q"}.isdisjoint(KEYS)
    assert all(c in RULE for c in AUDIT_CLASSES) and "steps to protect your identity" in RULE.replace(
        "\n", " "
    ).replace("  ", " ")
    assert condition("baseline", 3).harmful  # the fixture builder


def test_a_sweeps_folder_of_stored_conditions_can_be_audited(tmp_path: Path) -> None:
    from neurogate.evaluation.results import ResultStore

    folder = tmp_path / "sweep-out"
    store = ResultStore(folder)
    for key in ("baseline", "cna-m0"):
        store.put(condition(key, 12))
    prep = prepare_audit(folder, per_condition=5)
    assert len(prep.sample.items) == 10 and (folder / "audit" / "items.jsonl").is_file()
