"""The explorer on a mixture-of-experts circuit: the map and a neuron's page load, and neuron labels name
the expert (found on a tiny random-weight Qwen2-MoE with a shared expert)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from neurogate.discovery.discover import discover
from neurogate.models.loading import LoadedModel
from neurogate.models.tiny import tiny_lm
from neurogate.ui import UISettings, create_app

POSITIVE = [f"Tell me a story about cats, number {i}." for i in range(6)]
NEGATIVE = [f"List the tax rules of section {i}." for i in range(6)]


@pytest.fixture(scope="module")
def moe_lm() -> LoadedModel:
    return tiny_lm("qwen2_moe")


@pytest.fixture(scope="module")
def client(moe_lm: LoadedModel, tmp_path_factory: pytest.TempPathFactory) -> TestClient:
    circuit = discover(moe_lm, POSITIVE, NEGATIVE, fraction=0.03, universal_filter=False, progress=False)
    path = circuit.save(tmp_path_factory.mktemp("moe") / "moe-circuit.json")
    app = create_app(UISettings(circuits=(Path(path),), max_new_tokens=4), loader=lambda: moe_lm)
    assert app.state.live.wait_ready(30)
    return TestClient(app, base_url="http://127.0.0.1:8765")


def test_moe_circuit_map_and_neuron_page_name_the_expert(client: TestClient) -> None:
    (entry,) = client.get("/api/circuits").json()
    data = client.get("/api/circuit", params={"id": entry["id"]}).json()
    assert data["shape"]["moe"]["n_experts"] == 4 and data["method"]["routing"]
    for n in data["neurons"]:
        assert n["label"].startswith(f"L{n['layer']} ") and n["label"].endswith(n["in_expert"])
        assert n["in_expert"].split(" ")[0] in {"E0", "E1", "E2", "E3", "shared"}
    top = data["neurons"][0]
    page = client.get("/api/neuron", params={"id": entry["id"], "layer": top["layer"], "index": top["index"]})
    assert page.status_code == 200 and page.json()["label"] == top["label"]


def test_live_steering_runs_on_the_moe_model(client: TestClient) -> None:
    (entry,) = client.get("/api/circuits").json()
    body = {"prompt": "hello", "method": "cna", "value": 0.0, "circuit": entry["id"]}
    res = client.post("/api/steer", json=body, headers={"origin": "http://127.0.0.1:8765"})
    assert res.status_code == 200, res.text
    kinds = [json.loads(line)["event"] for line in res.text.splitlines() if line]
    assert kinds[0] == "start" and kinds[-1] == "end" and "error" not in kinds
