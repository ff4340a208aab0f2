"""The explorer's API through the ASGI test client: circuits, runs and replies on real files, live
steering on a real tiny model, and the safety rules (host, Origin, confined paths)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from neurogate.discovery.circuit import Circuit
from neurogate.models.generation import generate
from neurogate.models.loading import LoadedModel
from neurogate.study.results import StudyResults
from neurogate.tuning import TuneResults
from neurogate.ui import UISettings, create_app

ORIGIN = "http://127.0.0.1:8765"
HEADERS = {"host": "127.0.0.1:8765"}


@pytest.fixture(scope="module")
def client(explorer_data: dict[str, Path], shared_lm: LoadedModel) -> TestClient:
    settings = UISettings(
        circuits=(explorer_data["circuit"], explorer_data["top5"]),
        runs=explorer_data["runs"],
        max_new_tokens=12,
    )
    app = create_app(settings, loader=lambda: shared_lm)
    assert app.state.live.wait_ready(30)
    return TestClient(app, base_url="http://127.0.0.1:8765")


def steer(client: TestClient, body: dict[str, Any], origin: str | None = ORIGIN) -> list[dict[str, Any]]:
    headers = {"origin": origin} if origin else {}
    res = client.post("/api/steer", json=body, headers=headers)
    assert res.status_code == 200, res.text
    return [json.loads(line) for line in res.text.splitlines() if line]


def run_of(client: TestClient, kind: str) -> dict[str, Any]:
    """The runs folder's one run of ``kind`` (``study`` or ``tune``)."""
    (entry,) = [r for r in client.get("/api/runs").json() if r["kind"] == kind]
    return entry


def opened(client: TestClient, kind: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The run of ``kind`` as listed, and its page."""
    entry = run_of(client, kind)
    return entry, client.get("/api/run", params={"id": entry["id"]}).json()


def circuit_id(client: TestClient, name: str) -> str:
    return next(c["id"] for c in client.get("/api/circuits").json() if c["name"].endswith(name))


def test_page_and_assets_are_served_with_a_strict_policy(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and '<script type="module" src="/static/app.js">' in page.text
    assert "default-src 'none'" in page.headers["content-security-policy"]
    total = len(page.content)
    for asset in ("app.js", "charts.js", "dom.js", "style.css"):
        res = client.get(f"/static/{asset}")
        assert res.status_code == 200
        text = res.text.replace("http://www.w3.org/2000/svg", "")  # the SVG namespace name, never fetched
        assert "http://" not in text and "https://" not in text and "//cdn" not in text
        for html_sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
            assert html_sink not in text  # server text only ever becomes text nodes
        total += len(res.content)
    assert total < 500_000


def test_circuit_map_matches_the_file(client: TestClient, main_circuit: Circuit) -> None:
    data = client.get("/api/circuit", params={"id": circuit_id(client, "circuit.json")}).json()
    assert data["n_neurons"] == len(main_circuit)
    assert {lay["layer"]: lay["count"] for lay in data["layers"] if lay["count"]} == main_circuit.per_layer()
    assert data["late_share"] == pytest.approx(main_circuit.late_share())
    assert data["has_profiles"] is True
    scores = [n["score"] for n in data["neurons"]]
    assert scores == sorted(scores, reverse=True)
    for layer in data["layers"]:
        if layer["count"]:
            assert layer["spread"]["min"] <= layer["spread"]["median"] <= layer["spread"]["max"]


def test_neuron_detail_shows_its_extreme_prompts(client: TestClient, main_circuit: Circuit) -> None:
    n = max(main_circuit.neurons, key=lambda x: x.score)
    cid = circuit_id(client, "circuit.json")
    data = client.get("/api/neuron", params={"id": cid, "layer": n.layer, "index": n.index}).json()
    assert data["rank"] == 1 and data["mean_pos"] == pytest.approx(n.mean_pos)
    most = data["profile"]["most"]
    assert len(most) == 5 and all(r["text"] for r in most)
    assert [r["value"] for r in most] == sorted((r["value"] for r in most), reverse=True)
    assert data["profile"]["most"][0]["value"] >= data["profile"]["least"][0]["value"]
    missing = client.get("/api/neuron", params={"id": cid, "layer": 0, "index": 10_000})
    assert missing.status_code == 400 and "not in this circuit" in missing.json()["error"]


def test_overlay_counts_shared_neurons_by_layer(client: TestClient, main_circuit: Circuit) -> None:
    a, b = circuit_id(client, "circuit.json"), circuit_id(client, "top5.json")
    data = client.get("/api/overlay", params={"a": a, "b": b}).json()
    assert data["n_a"] == len(main_circuit) and data["n_b"] == 5 and data["shared"] == 5
    assert sum(layer["both"] for layer in data["layers"]) == 5
    assert data["jaccard"] == pytest.approx(5 / len(main_circuit))


def test_runs_list_and_run_view_follow_the_results_file(
    client: TestClient, explorer_data: dict[str, Path]
) -> None:
    entry, view = opened(client, "study")
    results = StudyResults.load(explorer_data["runs"] / entry["name"] / "results.json")
    assert {c["key"] for c in view["conditions"]} == set(results.conditions)
    kinds = {c["kind"]: c for c in view["curves"]}
    swept = {results.conditions[k].kind for k in results.sweep} - {"baseline"}
    assert set(kinds) == swept and {"cna", "caa", "ablation"} <= swept
    cna = [p["x"] for p in kinds["cna"]["points"]]
    assert cna == [0.0, 0.5, 1.0] and kinds["cna"]["symbol"] == "m"  # m = 1 is the baseline point
    assert [p["x"] for p in kinds["caa"]["points"]] == [0.0, 0.5, 1.0] and kinds["caa"]["symbol"] == "s"
    assert [p["x"] for p in view["sparsity"]] == sorted(p.size for p in results.sparsity)


def test_a_rate_links_to_exactly_the_replies_it_counts(
    client: TestClient, explorer_data: dict[str, Path]
) -> None:
    entry = run_of(client, "study")
    results = StudyResults.load(explorer_data["runs"] / entry["name"] / "results.json")
    for key, cond in results.conditions.items():
        counted = 0
        for cls, rate in cond.rates().items():
            params = {"id": entry["id"], "key": key, "cls": cls}
            data = client.get("/api/replies", params=params).json()
            assert (data["k"], data["n"]) == (rate.k, rate.n)
            assert [r["text"] for r in data["replies"]] == [r.text for r in cond.harmful]
            assert all(r["class"] == cls for r in data["replies"] if r["counted"])
            counted += data["k"]
        assert counted == len(cond.harmful)  # every reply is in exactly one class
    bad = client.get("/api/replies", params={"id": entry["id"], "key": "baseline", "cls": "maybe"})
    assert bad.status_code == 400 and "class must be one of" in bad.json()["error"]


def test_a_tuning_search_shows_its_pareto_front_and_held_out_replies(
    client: TestClient, explorer_data: dict[str, Path]
) -> None:
    entry, view = opened(client, "tune")
    results = TuneResults.load(explorer_data["runs"] / entry["name"] / "tune.json")
    points = view["pareto"]["points"]
    assert len(points) == len(results.trials)
    assert [p["front"] for p in points] == [t.pareto for t in results.trials]
    assert [p["y"] for p in points] == [t.scores["compliance"] for t in results.trials]
    assert {c["key"] for c in view["conditions"]} == set(results.final)
    key, cond = next(iter(results.final.items()))
    data = client.get("/api/replies", params={"id": entry["id"], "key": key, "cls": "degenerate"}).json()
    assert (data["k"], data["n"]) == (cond.degenerate.k, cond.degenerate.n)


def test_paths_outside_the_given_folders_are_refused(client: TestClient) -> None:
    for bad in (
        "0:../secret.txt",
        "0:/etc/passwd",
        "9:circuit.json",
        "circuit.json",
        "0:../../../../etc/passwd",
    ):
        res = client.get("/api/circuit", params={"id": bad})
        assert res.status_code == 404, bad
        assert "outside every allowed folder" not in res.text  # the file's content
    assert client.get("/api/run", params={"id": "0:.."}).status_code == 404


def test_foreign_hosts_and_origins_are_refused(client: TestClient, main_circuit: Circuit) -> None:
    body = {"prompt": "hi", "method": "cna", "value": 0.0, "circuit": circuit_id(client, "circuit.json")}
    assert client.get("/api/status", headers={"host": "evil.example:8765"}).status_code == 403
    for origin in ("http://evil.example", "null", "http://127.0.0.1:9999"):
        res = client.post("/api/steer", json=body, headers={"origin": origin})
        assert res.status_code == 403 and "origin" in res.json()["error"]
    assert client.post("/api/steer", json=body).status_code == 403  # no Origin at all


def test_live_steering_streams_both_replies_with_class_and_kl(
    client: TestClient, shared_lm: LoadedModel
) -> None:
    cid = circuit_id(client, "circuit.json")
    prompt = "How do I pick a lock?"
    events = steer(client, {"prompt": prompt, "method": "cna", "value": -2.0, "circuit": cid})
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "end" and "error" not in kinds
    assert events[0]["label"] == "cna m=-2"
    done = {e["side"]: e for e in events if e["event"] == "done"}
    for side in ("steered", "unsteered"):
        streamed = "".join(e["text"] for e in events if e["event"] == "token" and e["side"] == side)
        assert streamed.strip() == done[side]["text"]
        assert done[side]["class"] in ("refusal", "compliance", "degenerate")
        cls = done[side]["class"]
        assert done[side]["verdict"] == (None if cls == "degenerate" else cls)
        assert (cls == "degenerate") == (done[side]["degenerate"] is not None)
    first_steered = kinds.index("token")
    assert events[first_steered]["side"] == "steered"  # the steered reply streams first
    (plain,) = generate(shared_lm, [prompt], max_new_tokens=12)
    assert done["unsteered"]["text"] == plain.text
    (kl,) = [e for e in events if e["event"] == "kl"]
    assert kl["mean"] > 0 and kl["n_tokens"] == len(plain.token_ids) + 1


def test_the_multiplier_changes_the_reply_and_m1_changes_nothing(client: TestClient) -> None:
    cid = circuit_id(client, "circuit.json")

    def reply(value: float, method: str = "cna") -> dict[str, Any]:
        events = steer(
            client, {"prompt": "Tell me a story.", "method": method, "value": value, "circuit": cid}
        )
        done = {e["side"]: e for e in events if e["event"] == "done"}
        kl = [e for e in events if e["event"] == "kl"]
        return {"steered": done["steered"]["text"], "plain": done["unsteered"], "kl": kl[0]["mean"]}

    neutral = reply(1.0)
    assert neutral["steered"] == neutral["plain"]["text"] and neutral["kl"] == pytest.approx(0.0, abs=1e-6)
    flipped = reply(-3.0)
    assert flipped["steered"] != flipped["plain"]["text"]
    assert flipped["plain"]["cached"] is True  # the unsteered reply is reused for the same prompt
    caa = reply(1.0, "caa")
    assert caa["kl"] > 0


def test_bad_steering_requests_say_what_is_wrong(client: TestClient) -> None:
    cid = circuit_id(client, "circuit.json")
    events = steer(client, {"prompt": "hi", "method": "cna", "value": 0.0, "circuit": None})
    assert any(e["event"] == "error" and "choose one first" in e["text"] for e in events)
    res = client.post(
        "/api/steer",
        json={"prompt": "hi", "method": "nope", "value": 0, "circuit": cid},
        headers={"origin": ORIGIN},
    )
    assert res.status_code == 400 and "unknown intervention kind" in res.json()["error"]
    res = client.post(
        "/api/steer", json={"prompt": "", "method": "cna", "value": 0}, headers={"origin": ORIGIN}
    )
    assert res.status_code == 422


def test_a_runs_circuit_carries_profiles_from_the_saved_statistics(client: TestClient) -> None:
    ranking = circuit_id(client, "circuit-ranking.json")
    data = client.get("/api/circuit", params={"id": ranking}).json()
    assert data["has_profiles"] is True
    top = data["neurons"][0]
    detail = client.get("/api/neuron", params={"id": ranking, "layer": top["layer"], "index": top["index"]})
    assert all(r["text"] for r in detail.json()["profile"]["most"])


def test_progress_counts_each_sides_tokens_and_the_reply_length_can_change(client: TestClient) -> None:
    cid = circuit_id(client, "circuit.json")
    status = client.get("/api/status").json()["live"]
    assert status["max_new_tokens"] == 12 and status["max_new_tokens_limit"] == 256
    body = {"prompt": "Name a colour.", "method": "cna", "value": 0.0, "circuit": cid}
    events = steer(client, {**body, "max_new_tokens": 20})  # past the server's default of 12
    start = events[0]
    assert start["max_new_tokens"] == 20 and start["unsteered_cached"] is False and start["detail"] == ""
    done = {e["side"]: e for e in events if e["event"] == "done"}
    for side in ("steered", "unsteered"):
        counts = [e["n"] for e in events if e["event"] == "progress" and e["side"] == side]
        assert counts == list(range(1, len(counts) + 1)) and counts[-1] >= done[side]["n_tokens"]
        assert {e["max"] for e in events if e["event"] == "progress" and e["side"] == side} == {20}
        assert done[side]["n_tokens"] <= 20
    assert any(d["n_tokens"] > 12 for d in done.values()) or all(d["finished"] for d in done.values())
    assert steer(client, body)[0]["max_new_tokens"] == 12  # no length asked: the server's default
    again = steer(client, {**body, "max_new_tokens": 20})
    assert again[0]["unsteered_cached"] is True
    assert not [e for e in again if e["event"] == "progress" and e["side"] == "unsteered"]
    res = client.post("/api/steer", json={**body, "max_new_tokens": 257}, headers={"origin": ORIGIN})
    assert res.status_code == 422


def test_caa_names_its_layer_and_direction(client: TestClient) -> None:
    events = steer(client, {"prompt": "Tell me a joke.", "method": "caa", "value": 1.0})
    start = next(e for e in events if e["event"] == "start")
    detail = start["detail"]
    assert (
        detail.startswith("Subtracts s times the direction after layer ")
        and "best-separating layer" in detail
    )
    assert "mean residual stream on run " in detail and re.search(r"\(\d+ and \d+ prompts\)\.$", detail)
    assert "nan" not in detail
    ablation = next(
        e
        for e in steer(client, {"prompt": "Hi.", "method": "ablation", "value": 1.0})
        if e["event"] == "start"
    )
    assert "at every residual site" in ablation["detail"]


def test_run_rows_have_distinct_labels_and_residual_rows_name_their_layer(client: TestClient) -> None:
    entry, run = opened(client, "study")
    labels = [c["label"] for c in run["conditions"]]
    assert len(labels) == len(set(labels)), labels
    sparse = next(c for c in run["conditions"] if c["group"] == "sparsity")
    main = next(c for c in run["conditions"] if c["key"].startswith("cna-m0-") and c["group"] == "sweep")
    assert sparse["label"] == f"cna m=0 · {sparse['n_neurons']} neurons"
    assert main["label"] == f"cna m=0 · {main['n_neurons']} neurons"
    points = {p["key"]: p["label"] for c in run["curves"] for p in c["points"]}
    points.update({p["key"]: p["label"] for p in run["sparsity"]})
    assert points[sparse["key"]] == sparse["label"]
    replies = client.get(
        "/api/replies", params={"id": entry["id"], "key": sparse["key"], "set": "harmful"}
    ).json()
    assert replies["label"] == sparse["label"]
    for c in run["conditions"]:
        if c["kind"] == "caa":
            assert c["detail"].startswith("added after layer ")
        elif c["kind"] == "ablation":
            assert c["detail"].endswith("'s direction, every site")
        else:
            assert c["detail"] == ""
    note = run["directions_note"]
    assert "CAA subtracts s times the direction after layer" in note and "builtin:harmful (8 prompts)" in note
