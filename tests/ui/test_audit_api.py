"""The Audit page's API on a real run folder (stored conditions and results.json, as `neurogate run`
writes them): drawing the sample, blind items, labels in the label file, resuming after a reload and a
restart, back, agreement and calibrated rates against the library's own figures, and clear errors."""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from audit_run import make_run
from neurogate.evaluation.audit import (
    AUDIT_CLASSES,
    ITEMS_FILE,
    RULE,
    RULE_VERSION,
    SAMPLE_FILE,
    load_sample,
    reply_hash,
)
from neurogate.evaluation.audit_labels import Label, LabelStore, agreement, now
from neurogate.evaluation.calibration import calibrated_rates
from neurogate.ui import UISettings, create_app

ORIGIN = "http://127.0.0.1:8765"
KEYS = ("baseline", "cna-m0", "caa-s1")
# what must never reach the page while labelling: the run's condition keys and labels, the scales, the
# judge and the classes it gave (an unlabelled item's JSON names no class at all)
HIDDEN_WORDS = (
    *KEYS,
    *(k.replace("-", " ") for k in KEYS),
    "multiplier",
    "strength",
    "keyword",
    *AUDIT_CLASSES,
)
HIDDEN_KEYS = {"condition", "index", "verdicts", "classes", "judge", "judges", "kind", "scale", "value"}


@pytest.fixture
def run(tmp_path: Path) -> Path:
    return make_run(tmp_path / "runs", keys=KEYS, n=12)


def app_client(run: Path) -> TestClient:
    """A fresh explorer over the run's parent folder (a new one is a server restart)."""
    app = create_app(UISettings(runs=run.parent), start=False)
    return TestClient(app, base_url="http://127.0.0.1:8765")


@pytest.fixture
def client(run: Path) -> TestClient:
    return app_client(run)


def run_id(client: TestClient) -> str:
    (entry,) = client.get("/api/audit/runs").json()
    return str(entry["id"])


def post(client: TestClient, path: str, body: Any, origin: str | None = ORIGIN) -> Any:
    headers = {"origin": origin} if origin else {}
    return client.post(
        path, content=json.dumps(body), headers={**headers, "content-type": "application/json"}
    )


def start(client: TestClient, annotator: str = "ana", per_condition: int | None = 4) -> dict[str, Any]:
    res = post(
        client,
        "/api/audit/start",
        {"run": run_id(client), "annotator": annotator, "per_condition": per_condition},
    )
    assert res.status_code == 200, res.text
    return dict(res.json())


def press(client: TestClient, key: str, annotator: str = "ana", item: str | None = None) -> dict[str, Any]:
    body = {"run": run_id(client), "annotator": annotator, "key": key, **({"item": item} if item else {})}
    res = post(client, "/api/audit/key", body)
    assert res.status_code == 200, res.text
    return dict(res.json())


def strings_and_keys(value: Any) -> tuple[list[str], set[str]]:
    """Every string value (item ids apart) and every key in a JSON value."""
    texts: list[str] = []
    keys: set[str] = set()

    def walk(v: Any, key: str = "") -> None:
        if isinstance(v, dict):
            for k, x in v.items():
                keys.add(k)
                walk(x, k)
        elif isinstance(v, list):
            for x in v:
                walk(x)
        elif isinstance(v, str) and key not in ("id", "run"):
            texts.append(v)

    walk(value)
    return texts, keys


def assert_blind(state: dict[str, Any]) -> None:
    texts, keys = strings_and_keys(state)
    assert not keys & HIDDEN_KEYS, keys & HIDDEN_KEYS
    for word in HIDDEN_WORDS:
        assert not any(word in t.lower() for t in texts), (word, texts)


def test_the_page_is_served_with_its_tab_and_script(client: TestClient) -> None:
    page = client.get("/").text
    assert 'id="tab-audit"' in page and 'id="view-audit"' in page
    assert '<script type="module" src="/static/audit.js">' in page
    res = client.get("/static/audit.js")
    assert res.status_code == 200 and "javascript" in res.headers["content-type"]
    assert "http://" not in res.text and "https://" not in res.text
    for html_sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert html_sink not in res.text  # server text only ever becomes text nodes


def test_rule_and_runs_are_listed(client: TestClient, run: Path) -> None:
    rule = client.get("/api/audit/rule").json()
    assert rule["text"] == RULE and rule["version"] == RULE_VERSION and rule["per_condition"] == 30
    assert rule["keys"] == {
        "r": "refusal",
        "d": "redirect",
        "c": "compliance",
        "g": "degenerate",
        "u": "unsure",
        "s": "skip",
        "b": "back",
    }
    (entry,) = client.get("/api/audit/runs").json()
    assert entry["name"] == run.name and entry["items"] == 0 and entry["annotators"] == {}


def test_the_sample_is_drawn_and_every_item_is_blind(client: TestClient, run: Path) -> None:
    state = start(client)
    assert (state["total"], state["labelled"], state["position"], state["done"]) == (12, 0, 1, False)
    assert (run / "audit" / SAMPLE_FILE).is_file() and (run / "audit" / ITEMS_FILE).is_file()
    sample = load_sample(run)
    assert sample.items[0].id == state["item"]["id"]
    seen = []
    for n in range(12):  # every item, skipping: each one's JSON names no condition, scale or verdict
        assert_blind(state)
        item = state["item"]
        assert state["position"] == n + 1 and item["label"] is None
        assert (item["prompt"], item["reply"]) == (sample.items[n].prompt, sample.items[n].reply)
        seen.append(item["id"])
        state = press(client, "s")
    assert seen == [it.id for it in sample.items] and state["position"] == 1  # skipped items come back
    assert "12 skipped" in state["message"]
    assert not (run / "audit" / "labels.jsonl").exists()  # a skip is no label
    # the server does know what it hides: the sample holds every condition, four items each
    assert sorted(h.condition for h in sample.hidden.values()) == sorted(KEYS * 4)
    # a larger per-condition extends the sample and keeps the items drawn
    bigger = start(client, per_condition=6)
    assert bigger["total"] == 18 and "6 replies added" in bigger["message"]
    assert [it.id for it in load_sample(run).items][:12] == seen
    assert client.get("/api/audit/runs").json()[0]["items"] == 18


def test_labels_are_written_through_the_library_and_resume(client: TestClient, run: Path) -> None:
    state = start(client)
    shown = []
    for key in "rdc":
        shown.append(state["item"])
        state = press(client, key, item=state["item"]["id"])
    assert (state["position"], state["labelled"]) == (4, 3)
    records = [json.loads(line) for line in (run / "audit" / "labels.jsonl").read_text().splitlines()]
    assert [r["label"] for r in records] == ["refusal", "redirect", "compliance"]
    for rec, item in zip(records, shown, strict=True):
        assert rec["item"] == item["id"] and rec["annotator"] == "ana" and rec["rule"] == RULE_VERSION
        assert rec["reply_sha256"] == reply_hash(item["reply"]) and rec["source"] == "explorer"
        assert rec["time"].endswith("+00:00") and not rec["adjudicated"]
    assert LabelStore(run).read()[0].label == "refusal"  # the library reads what the page wrote

    # back: the previous item, with this annotator's label; a reload stays there
    back = press(client, "b")
    assert (
        back["position"] == 3
        and back["item"]["id"] == shown[2]["id"]
        and back["item"]["label"] == "compliance"
    )
    again = client.get("/api/audit/item", params={"run": run_id(client), "annotator": "ana"}).json()
    assert again == back
    relabel = press(client, "g", item=back["item"]["id"])  # the latest label counts
    assert relabel["position"] == 4 and relabel["labelled"] == 3
    assert LabelStore(run).read()[-1].label == "degenerate"

    # a restart (a fresh server) resumes after the last item labelled; another annotator starts at the top
    restarted = app_client(run)
    resumed = restarted.get("/api/audit/item", params={"run": run_id(restarted), "annotator": "ana"}).json()
    assert (resumed["position"], resumed["labelled"]) == (4, 3)
    other = restarted.get("/api/audit/item", params={"run": run_id(restarted), "annotator": "ben"}).json()
    assert (other["position"], other["labelled"]) == (1, 0)
    assert_blind(other)
    assert client.get("/api/audit/runs").json()[0]["annotators"] == {"ana": 3}


def test_a_key_labels_the_item_the_page_showed(client: TestClient, run: Path) -> None:
    first = start(client)
    press(client, "r")
    press(client, "r")  # the session is on item 3 now; a second tab still shows item 1
    state = press(client, "c", item=first["item"]["id"])
    assert state["position"] == 3  # on to the next unlabelled item
    assert LabelStore(run).read()[-1].item == first["item"]["id"]
    # a label written elsewhere (the terminal) is seen without a restart; the item on screen stays
    item = load_sample(run).items[3]
    LabelStore(run).append([Label(item.id, "ana", "redirect", item.sha256, now())])
    seen = client.get("/api/audit/item", params={"run": run_id(client), "annotator": "ana"}).json()
    assert (seen["position"], seen["labelled"]) == (3, 3)
    assert press(client, "s")["position"] == 5  # item 4 is labelled now


def test_every_item_labelled_then_back(client: TestClient, run: Path) -> None:
    state = start(client, per_condition=1)
    for _ in range(3):
        state = press(client, "r", item=state["item"]["id"])
    assert state["done"] and state["item"] is None and state["labelled"] == 3 and state["position"] is None
    last = press(client, "b")  # back from the end: the last item, to change its label
    assert last["position"] == 3 and last["item"]["label"] == "refusal"
    assert press(client, "c", item=last["item"]["id"])["done"]


def label_all(client: TestClient, annotator: str, keys: str) -> None:
    state = start(client, annotator)
    for key in keys:
        state = press(client, key, annotator, item=state["item"]["id"])
    assert state["done"]


def test_agreement_and_calibrated_rates_match_the_library(client: TestClient, run: Path) -> None:
    rid = run_id(client)
    label_all(client, "ana", "rrrrccccggdd")
    one = client.get("/api/audit/agreement", params={"run": rid}).json()
    assert one["annotators"] == ["ana"] and one["pairs"] == [] and one["disagreements"] == []
    assert len(one["rates"]) == 3 and one["uncalibrated"] == []  # one annotator is enough for the rates
    label_all(client, "ben", "rrrcccccggdu")
    data = client.get("/api/audit/agreement", params={"run": rid}).json()
    sample = load_sample(run)
    lib = agreement(LabelStore(run).read(), sample)
    (pair,) = data["pairs"]
    (lib_pair,) = lib.pairs
    assert (pair["a"], pair["b"], pair["n"]) == ("ana", "ben", 12)
    assert pair["kappa"] == pytest.approx(lib_pair.kappa) and 0 < pair["kappa"] < 1
    assert {c["key"]: (c["n"], c["kappa"]) for c in pair["per_condition"]} == {
        k: (n, k2) for k, (n, k2) in lib_pair.per_condition.items()
    }
    assert {c["label"] for c in pair["per_condition"]} == {"baseline", "cna m0", "caa s1"}
    assert [d["item"] for d in data["disagreements"]] == [d.item for d in lib.disagreements]
    assert [d["labels"] for d in data["disagreements"]] == [
        {"ana": "refusal", "ben": "compliance"},
        {"ana": "redirect", "ben": "unsure"},
    ]
    lib_rates = calibrated_rates(run)
    assert {r["key"] for r in data["rates"]} == set(lib_rates)
    for r in data["rates"]:
        want = lib_rates[r["key"]]
        assert (r["judge"], r["n_replies"], r["n_audited"]) == ("keyword", 12, want.n_audited)
        for cls in AUDIT_CLASSES:
            got, exp = r["classes"][cls], want.classes[cls]
            assert got["corrected"]["value"] == pytest.approx(exp.corrected.value)
            assert got["audited"]["k"] == exp.audited.k and got["audited"]["low"] == pytest.approx(
                exp.audited.low
            )
            assert (got["judged"] is None) == (exp.judged is None)
    assert data["rates"][0]["classes"]["redirect"]["judged"] is None  # keyword cannot say redirect
    bad = client.get("/api/audit/agreement", params={"run": rid, "judge": "oracle"})
    assert bad.status_code == 400 and "keyword" in bad.json()["error"]


def test_bad_input_is_a_clear_error(client: TestClient, run: Path) -> None:
    rid = run_id(client)

    def error(res: Any, status: int, *words: str) -> None:
        assert res.status_code == status, res.text
        message = res.json()["error"]
        assert all(w in message for w in words), message

    error(client.get("/api/audit/item", params={"run": rid, "annotator": "ana"}), 400, "no audit sample")
    error(client.get("/api/audit/item", params={"annotator": "ana"}), 400, "run=ID")
    error(client.get("/api/audit/agreement", params={"run": rid}), 400, "no audit sample")
    error(post(client, "/api/audit/start", {"run": rid}), 400, "annotator")
    error(post(client, "/api/audit/start", {"run": rid, "annotator": "a/b"}), 400, "plain name")
    error(post(client, "/api/audit/start", {"run": rid, "annotator": "x" * 65}), 400, "plain name")
    for bad in (0, 1001, "ten", True, 2.5):
        error(
            post(client, "/api/audit/start", {"run": rid, "annotator": "ana", "per_condition": bad}),
            400,
            "per_condition",
        )
    error(post(client, "/api/audit/start", {"run": "0:nowhere", "annotator": "ana"}), 404, "nowhere")
    error(post(client, "/api/audit/start", {"run": "0:../..", "annotator": "ana"}), 404)
    error(post(client, "/api/audit/start", {"run": "7:x", "annotator": "ana"}), 404)
    error(post(client, "/api/audit/start", ["not", "an", "object"]), 400, "JSON object")
    res = client.post("/api/audit/start", content=b"{nope", headers={"origin": ORIGIN})
    error(res, 400, "not JSON")
    assert post(client, "/api/audit/start", {"run": rid, "annotator": "ana"}, origin=None).status_code == 403
    assert (
        post(
            client, "/api/audit/start", {"run": rid, "annotator": "ana"}, origin="http://evil.test"
        ).status_code
        == 403
    )
    start(client)
    error(
        post(client, "/api/audit/key", {"run": rid, "annotator": "ana", "key": "x"}),
        400,
        "unknown key",
        "r refusal",
    )
    error(post(client, "/api/audit/key", {"run": rid, "annotator": "ana", "key": "q"}), 400, "unknown key")
    error(post(client, "/api/audit/key", {"run": rid, "annotator": "ana"}), 400, "key")
    error(
        post(client, "/api/audit/key", {"run": rid, "annotator": "ana", "key": "r", "item": "ffff"}),
        400,
        "ffff",
    )
    error(
        post(client, "/api/audit/key", {"run": rid, "annotator": "ana", "key": "r", "item": 3}), 400, "item"
    )
    assert not (run / "audit" / "labels.jsonl").exists()  # nothing written by any of them
    (run / "audit" / SAMPLE_FILE).write_text("{damaged")
    error(client.get("/api/audit/item", params={"run": rid, "annotator": "ana"}), 400, "damaged")
    assert "damaged" in client.get("/api/audit/runs").json()[0]["error"]


def test_each_key_answers_quickly(run: Path, tmp_path: Path) -> None:
    """The server's share of a key: 60 labels and moves on a 90-item sample, through the ASGI client."""
    big = make_run(tmp_path / "big", keys=KEYS, n=40)
    client = app_client(big)
    state = start(client, per_condition=30)
    times = []
    for n in range(60):
        key = "rdcgusb"[n % 7]
        t0 = time.perf_counter()
        state = press(client, key, item=state["item"]["id"] if state["item"] else None)
        times.append(1000 * (time.perf_counter() - t0))
    print(
        f"\naudit key via the API: median {statistics.median(times):.1f} ms, "
        f"max {max(times):.1f} ms (60 keys)"
    )
    assert statistics.median(times) < 100
