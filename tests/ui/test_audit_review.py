"""The Audit page's adjudication and import on a real run folder: the adjudicator goes through the
disagreements with every annotator's label in view and each adjudication lands in the label file with the
flag the terminal writes; a labels file made elsewhere is checked by the library's import, counted, and
refused whole (with its problems named) when anything in it is wrong; writes from another origin, uploads
over the limit and files that are not text are refused with a clear message; the page and `neurogate audit`
share adjudications and imports."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from test_audit_api import ORIGIN, label_all, post, run_id, start
from typer.testing import CliRunner

from audit_run import make_run
from neurogate.cli.main import app
from neurogate.evaluation.audit import RULE_VERSION, load_sample
from neurogate.evaluation.audit_labels import LabelStore, agreement
from neurogate.ui import UISettings, create_app
from neurogate.ui.audit_review import MAX_IMPORT_BYTES

KEYS = ("baseline", "cna-m0", "caa-s1")


@pytest.fixture
def run(tmp_path: Path) -> Path:
    return make_run(tmp_path / "runs", keys=KEYS, n=12)


@pytest.fixture
def client(run: Path) -> TestClient:
    return TestClient(create_app(UISettings(runs=run.parent), start=False), base_url="http://127.0.0.1:8765")


def records(run: Path) -> list[dict[str, Any]]:
    path = run / "audit" / "labels.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def adjudicate(client: TestClient, key: str, item: str | None, who: str = "cara") -> dict[str, Any]:
    body = {"run": run_id(client), "annotator": who, "key": key, "item": item, "adjudicate": True}
    res = post(client, "/api/audit/key", body)
    assert res.status_code == 200, res.text
    return dict(res.json())


def upload(
    client: TestClient, text: str | bytes, name: str = "ben.jsonl", annotator: str = "", origin: str = ORIGIN
) -> Any:
    params = {"run": run_id(client), "name": name, **({"annotator": annotator} if annotator else {})}
    body = text.encode() if isinstance(text, str) else text
    return client.post("/api/audit/import", params=params, content=body, headers={"origin": origin})


def test_adjudication_goes_through_the_disagreements_and_writes_flagged_labels(
    client: TestClient, run: Path
) -> None:
    rid = run_id(client)
    label_all(client, "ana", "rrrrccccggdd")
    label_all(client, "ben", "rrrcccccggdu")  # disagreements on items 4 (r/c) and 12 (d/u)
    sample = load_sample(run)
    first = post(client, "/api/audit/adjudicate", {"run": rid, "annotator": "cara"}).json()
    assert first["adjudicate"] is True and (first["total"], first["labelled"], first["position"]) == (2, 0, 1)
    # what the terminal shows: the request, the reply and every annotator's label (no condition)
    item = first["item"]
    assert item["id"] == sample.items[3].id and item["labels"] == {"ana": "refusal", "ben": "compliance"}
    assert (item["prompt"], item["reply"]) == (sample.items[3].prompt, sample.items[3].reply)
    assert not {"condition", "verdicts", "judge"} & set(item) and not any(
        k in json.dumps(first) for k in KEYS
    )
    before = len(records(run))
    second = adjudicate(client, "d", item["id"])
    rec = records(run)[-1]  # written before the answer came back, with the terminal's flag
    assert len(records(run)) == before + 1
    assert (rec["item"], rec["annotator"], rec["label"], rec["adjudicated"], rec["source"]) == (
        item["id"],
        "cara",
        "redirect",
        True,
        "explorer",
    )
    assert rec["reply_sha256"] == sample.items[3].sha256 and rec["rule"] == RULE_VERSION
    assert second["item"]["labels"] == {"ana": "redirect", "ben": "unsure"} and second["position"] == 2
    back = adjudicate(client, "b", None)  # back: the first one, with its adjudication
    assert back["position"] == 1 and back["item"]["label"] == "redirect"
    assert adjudicate(client, "s", back["item"]["id"])["position"] == 2  # skip: on, writes nothing
    assert len(records(run)) == before + 1
    done = adjudicate(client, "g", second["item"]["id"])
    assert done["done"] and done["labelled"] == 2 and done["item"] is None
    # the agreement view reflects it, through the library; the annotators' kappa is unchanged
    data = client.get("/api/audit/agreement", params={"run": rid}).json()
    assert [d["adjudicated"] for d in data["disagreements"]] == ["redirect", "degenerate"]
    assert [d.adjudicated for d in agreement(LabelStore(run).read(), sample).disagreements] == [
        "redirect",
        "degenerate",
    ]
    assert all(r["n_unresolved"] == 0 for r in data["rates"])
    # a reload resumes; the adjudicator's labelling session is a separate one
    again = client.get("/api/audit/item", params={"run": rid, "annotator": "cara", "adjudicate": True})
    assert {k: v for k, v in again.json().items() if k != "message"} == {
        k: v for k, v in done.items() if k != "message"
    }
    own = client.get("/api/audit/item", params={"run": rid, "annotator": "cara"}).json()
    assert "adjudicate" not in own and own["labelled"] == 0 and "labels" not in own["item"]


def test_adjudication_without_disagreements_and_bad_input(client: TestClient, run: Path) -> None:
    rid = run_id(client)
    res = post(client, "/api/audit/adjudicate", {"run": rid, "annotator": "cara"})
    assert res.status_code == 400 and "no audit sample" in res.json()["error"]
    label_all(client, "ana", "rrrrccccgggg")
    state = post(client, "/api/audit/adjudicate", {"run": rid, "annotator": "cara"}).json()
    assert state["done"] and state["total"] == 0 and state["message"] == "no disagreements to adjudicate"
    bad = post(client, "/api/audit/adjudicate", {"run": rid, "annotator": "a/b"})
    assert bad.status_code == 400 and "plain name" in bad.json()["error"]
    bad = post(client, "/api/audit/key", {"run": rid, "annotator": "cara", "key": "r", "adjudicate": "yes"})
    assert bad.status_code == 400 and "adjudicate must be true or false" in bad.json()["error"]
    item = load_sample(run).items[0].id  # labelled alike by everyone: not a disagreement
    bad = post(
        client,
        "/api/audit/key",
        {"run": rid, "annotator": "cara", "key": "r", "item": item, "adjudicate": True},
    )
    assert bad.status_code == 400 and "disagreements" in bad.json()["error"]
    for origin in (None, "http://evil.test"):  # the server's Origin check covers the new writes
        assert (
            post(client, "/api/audit/adjudicate", {"run": rid, "annotator": "cara"}, origin).status_code
            == 403
        )
    assert not any(r["adjudicated"] for r in records(run))


def test_import_counts_refuses_and_explains(client: TestClient, run: Path) -> None:
    rid = run_id(client)
    res = upload(client, '{"item": "x", "label": "refusal", "sha256": "y"}\n')
    assert res.status_code == 400 and "no audit sample" in res.json()["error"]
    start(client)
    items = load_sample(run).items
    good = "".join(
        json.dumps({**asdict(it), "label": "refusal" if n % 2 else "compliance"}) + "\n"
        for n, it in enumerate(items[:5])
    )  # the lines of items.jsonl with a label added
    res = upload(client, good, annotator="ben")
    assert res.status_code == 200, res.text
    out = res.json()
    assert (out["imported"], out["repeated"], out["annotators"]) == (5, 0, {"ben": 5})
    assert out["message"] == "imported 5 label(s) from ben.jsonl (ben 5)"
    assert [r["source"] for r in records(run)] == ["import:ben.jsonl"] * 5
    assert client.get("/api/audit/runs").json()[0]["annotators"] == {"ben": 5}
    again = upload(client, good, annotator="ben").json()  # the same file twice: nothing new
    assert (again["imported"], again["repeated"]) == (0, 5) and "already holds them" in again["message"]
    csv = "id,sha256,label,annotator\n" + "".join(f"{it.id},{it.sha256},redirect,dana\n" for it in items[:3])
    assert upload(client, csv, name="C:\\labels\\dana.csv").json()["annotators"] == {"dana": 3}
    assert records(run)[-1]["source"] == "import:dana.csv"

    def refused(res: Any, status: int, *words: str) -> None:
        assert res.status_code == status, res.text
        message = res.json()["error"]
        assert all(w in message for w in words) and "Traceback" not in message, message

    n = len(records(run))
    wrong = good.replace('"compliance"', '"maybe"') + "not json\n"
    refused(upload(client, wrong, annotator="ben"), 400, "nothing imported", "'maybe'", "line 6: not JSON")
    stale = json.dumps({"item": items[0].id, "label": "refusal", "sha256": "0" * 64})
    refused(upload(client, stale, annotator="ben"), 400, "does not match")
    refused(upload(client, good), 400, "no annotator")
    refused(upload(client, "\n\n"), 400, "empty")
    refused(upload(client, b"\xff\xfe\x00garbage"), 400, "not UTF-8")
    refused(upload(client, good, name=""), 400, "name=FILE")
    refused(upload(client, good, annotator="<b>"), 400, "plain name")
    refused(upload(client, b"x" * (MAX_IMPORT_BYTES + 1)), 413, "16 MiB", "--import")
    refused(upload(client, good, annotator="ben", origin="http://evil.test"), 403, "origin")
    res = client.post("/api/audit/import", params={"run": rid, "name": "a.jsonl"}, content=good.encode())
    refused(res, 403, "Origin")
    assert len(records(run)) == n  # none of them wrote anything


def test_the_page_and_the_terminal_share_adjudications_and_imports(
    client: TestClient, run: Path, tmp_path: Path
) -> None:
    rid = run_id(client)
    label_all(client, "ana", "rrrrccccggdd")
    label_all(client, "ben", "rrrcccccggdu")
    first = post(client, "/api/audit/adjudicate", {"run": rid, "annotator": "cara"}).json()
    adjudicate(client, "d", first["item"]["id"])
    # the terminal resumes the same adjudicator at the second disagreement, with both labels on screen
    out = CliRunner().invoke(app, ["audit", str(run), "--adjudicate", "-a", "cara"], input="g\n")
    assert out.exit_code == 0, out.output
    assert "adjudicating cara" in out.output and "labels: ana: redirect, ben: unsure" in out.output
    assert "labels: ana: refusal, ben: compliance" not in out.output
    adj = [r for r in records(run) if r["adjudicated"]]
    assert [(r["label"], r["source"]) for r in adj] == [("redirect", "explorer"), ("degenerate", "terminal")]
    # a file the page imported adds nothing when the terminal imports it again, and the other way round
    items = load_sample(run).items
    text = "".join(json.dumps({**asdict(it), "label": "unsure"}) + "\n" for it in items[:4])
    assert upload(client, text, name="eve.jsonl", annotator="eve").json()["imported"] == 4
    (tmp_path / "eve.jsonl").write_text(text)
    cli = CliRunner().invoke(app, ["audit", str(run), "--import", str(tmp_path / "eve.jsonl"), "-a", "eve"])
    assert cli.exit_code == 0 and "imported 0 label(s)" in cli.output, cli.output


def test_the_page_knows_the_upload_limit(client: TestClient) -> None:
    script = client.get("/static/audit.js").text
    assert f"const MAX_IMPORT_BYTES = {MAX_IMPORT_BYTES // (1024 * 1024)} * 1024 * 1024;" in script
