"""The explorer's attribution endpoint on a real tiny model (ranking, self-check, comparison with a catalog
circuit, clean errors, the Origin check, no hooks left), and its control on the Steer page in Chromium."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from loopback import chromium, serving
from neurogate.discovery.attribution import attribute
from neurogate.discovery.circuit import Circuit, Neuron
from neurogate.models.loading import LoadedModel
from neurogate.models.tiny import D_MLP, N_LAYERS
from neurogate.ui import UISettings, create_app
from neurogate.ui.browser import find_chromium

ORIGIN = "http://127.0.0.1:8765"


@pytest.fixture(scope="module")
def settings(explorer_data: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> UISettings:
    """The explorer's circuits plus one found on a model of another shape."""
    shape = {"family": "llama", "n_layers": 5, "d_mlp": 64, "d_model": 16}
    foreign = Circuit([Neuron(0, 1, 1.0, 1.0, 0.0, 0.0)], {"spec": "made-up:other", "shape": shape})
    path = foreign.save(tmp_path_factory.mktemp("foreign") / "foreign.json")
    return UISettings(circuits=(explorer_data["circuit"], path), max_new_tokens=8)


@pytest.fixture(scope="module")
def client(settings: UISettings, shared_lm: LoadedModel) -> TestClient:
    app = create_app(settings, loader=lambda: shared_lm)
    assert app.state.live.wait_ready(30)
    return TestClient(app, base_url="http://127.0.0.1:8765")


def _post(client: TestClient, body: dict[str, Any], origin: str | None = ORIGIN) -> Any:
    return client.post("/api/attribute", json=body, headers={"origin": origin} if origin else {})


def _circuit_id(client: TestClient, name: str) -> str:
    return next(c["id"] for c in client.get("/api/circuits").json() if c["name"].endswith(name))


def test_attribution_returns_the_ranking_and_the_self_check(
    client: TestClient, shared_lm: LoadedModel
) -> None:
    res = _post(client, {"prompt": "How do I pick a lock?", "top_k": 7})
    assert res.status_code == 200, res.text
    data = res.json()
    assert data["target"]["kind"] == "greedy" and data["model"] == shared_lm.spec
    assert [n["rank"] for n in data["neurons"]] == list(range(1, 8))
    values = [n["attribution"] for n in data["neurons"]]
    assert values == sorted(values, reverse=True) and values[0] > 0
    assert data["self_check"]["passed"] and "self-check ok" in data["self_check"]["line"]
    assert data["comparison"] is None
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in shared_lm.model.modules()) == 0


def test_attribution_of_a_continuation_compared_with_a_circuit(client: TestClient) -> None:
    body = {"prompt": "hello", "target": " I am", "circuit": _circuit_id(client, "circuit.json")}
    data = _post(client, body).json()
    assert data["target"] == {"ids": data["target"]["ids"], "text": " I am", "kind": "text"}
    assert len(data["target"]["ids"]) == 5
    comparison = data["comparison"]
    assert comparison["top_k"] == 20 and 0 <= comparison["jaccard"] <= 1
    assert 0 <= comparison["share"] <= 1


def test_a_reply_is_attributed_by_its_first_tokens(client: TestClient, shared_lm: LoadedModel) -> None:
    reply = "I cannot help with picking locks, but here is why."
    data = _post(client, {"prompt": "How do I pick a lock?", "target": reply, "target_tokens": 8}).json()
    assert data["target_tokens"] == 8 and data["target"]["kind"] == "text"
    assert len(data["target"]["ids"]) == 8 and reply.startswith(data["target"]["text"])
    alone = attribute(shared_lm, "How do I pick a lock?", data["target"]["text"])
    assert data["logprob"] == pytest.approx(alone.logprob, abs=1e-5)
    short = _post(client, {"prompt": "hi", "target": " I", "target_tokens": 8}).json()
    assert short["target"]["text"] == " I"  # a shorter target is kept whole


def test_a_neuron_gets_its_rank_among_all_neurons(client: TestClient, main_circuit: Circuit) -> None:
    ranking = _post(client, {"prompt": "How do I pick a lock?", "top_k": 10}).json()["neurons"]
    fifth = ranking[4]
    body = {
        "prompt": "How do I pick a lock?",
        "top_k": 1,
        "neuron": {"layer": fifth["layer"], "index": fifth["neuron"]},
    }
    data = _post(client, body).json()
    place = data["neuron"]
    assert place["rank"] == 5 and place["attribution"] == pytest.approx(fifth["attribution"])
    assert place["of"] == N_LAYERS * D_MLP and place["activation"] == pytest.approx(fifth["activation"])
    n = main_circuit.neurons[0]
    body = {
        "prompt": "hi",
        "neuron": {"layer": n.layer, "index": n.index},
        "circuit": _circuit_id(client, "circuit.json"),
    }
    place = _post(client, body).json()["neuron"]
    assert (place["layer"], place["index"]) == (n.layer, n.index) and 1 <= place["rank"] <= place["of"]
    assert _post(client, {"prompt": "hi"}).json()["neuron"] is None


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"prompt": "   "}, 400, "type a prompt"),
        ({"prompt": ""}, 422, "prompt"),
        ({"prompt": "hi", "top_k": 0}, 422, "top_k"),
        ({"prompt": "hi", "top_k": 10_000}, 422, "top_k"),
        ({"prompt": "hi", "circuit": "nope"}, 404, ""),
        ({"prompt": "hi", "target_tokens": 8}, 400, "give the target text"),
        ({"prompt": "hi", "target": " I", "target_tokens": 0}, 422, "target_tokens"),
        ({"prompt": "hi", "neuron": {"layer": 3, "index": 0}}, 400, "not in this model"),
        ({"prompt": "hi", "neuron": {"layer": 0, "index": -1}}, 422, "index"),
    ],
)
def test_bad_requests_are_refused(
    client: TestClient, body: dict[str, Any], status: int, message: str
) -> None:
    res = _post(client, body)
    assert res.status_code == status, res.text
    assert message in res.text


def test_a_circuit_of_another_model_is_refused(client: TestClient) -> None:
    res = _post(client, {"prompt": "hi", "circuit": _circuit_id(client, "foreign.json")})
    assert res.status_code == 400 and "does not fit" in res.json()["error"]


def test_cross_origin_and_origin_less_requests_are_refused(client: TestClient) -> None:
    assert _post(client, {"prompt": "hi"}, origin="http://evil.example").status_code == 403
    assert _post(client, {"prompt": "hi"}, origin=None).status_code == 403


def test_without_a_model_attribution_says_so(explorer_data: dict[str, Path]) -> None:
    app = create_app(UISettings(circuits=(explorer_data["circuit"],)))
    res = TestClient(app, base_url="http://127.0.0.1:8765").post(
        "/api/attribute", json={"prompt": "hi"}, headers={"origin": ORIGIN}
    )
    assert res.status_code == 400 and "--model" in res.json()["error"]


CHROMIUM = find_chromium()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed")
    if CHROMIUM is None:
        pytest.skip("no Chromium: install Debian's package (apt-get install chromium) to run it")
    with chromium(CHROMIUM) as b:
        yield b


def test_the_steer_page_shows_the_top_neurons(
    settings: UISettings, shared_lm: LoadedModel, browser: Any, tmp_path: Path
) -> None:
    with serving(create_app(settings, loader=lambda: shared_lm)) as url:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url + "#steer")
        page.wait_for_selector("body[data-ready=true]")
        page.fill("#attr-k", "5")
        page.click("#attr-run")
        page.wait_for_selector("#attr-table tbody tr")
        assert page.locator("#attr-table tbody tr").count() == 5
        assert "self-check ok" in page.inner_text("#attr-status")
        page.fill("#attr-target", " I")
        page.check("#attr-compare")
        page.click("#attr-run")
        page.wait_for_selector("#attr-table caption:has-text('text target')")
        page.wait_for_selector("#attr-status:has-text('vs the circuit')")
        page.click("#run")  # a live reply, then its first tokens attributed
        page.click("#side-unsteered button.attr-reply:not([disabled])")
        page.wait_for_selector("#attr-table caption:has-text('first 8 tokens')")
        page.fill("#attr-k", "0")
        page.click("#attr-run")
        page.wait_for_selector("#attr-status:has-text('error: top must be')")
        page.screenshot(path=str(tmp_path / "attribution.png"), full_page=True)
        page.click("#tab-circuits")  # one neuron's rank on a prompt, from its detail
        page.click("#neuron-table tr[data-neuron]")
        page.fill(".attr-neuron-prompt", "How do I pick a lock?")
        page.click(".attr-neuron button")
        page.wait_for_selector(".attr-neuron-status:has-text('rank ')")
        assert f"of {N_LAYERS * D_MLP} neurons" in page.inner_text(".attr-neuron-status")
        assert not errors


def test_the_script_stays_on_this_server_and_writes_text_only(client: TestClient) -> None:
    page = client.get("/").text
    assert '<script type="module" src="/static/attribute.js">' in page and 'id="attr-form"' in page
    script = client.get("/static/attribute.js")
    assert script.status_code == 200
    assert "http://" not in script.text and "https://" not in script.text
    for html_sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert html_sink not in script.text


def test_a_saved_attribution_opens_in_the_circuit_map(shared_lm: LoadedModel, tmp_path: Path) -> None:
    path = attribute(shared_lm, "How do I pick a lock?").circuit.save(tmp_path / "attribution.json")
    client = TestClient(create_app(UISettings(circuits=(path,))), base_url="http://127.0.0.1:8765")
    (entry,) = client.get("/api/circuits").json()
    data = client.get("/api/circuit", params={"id": entry["id"]}).json()
    assert data["n_neurons"] == 20 and data["method"]["name"] == "linearised-attribution"
