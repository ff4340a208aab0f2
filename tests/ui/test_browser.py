"""End to end in real headless Chromium (Debian's package, driven by Playwright): the page loads with no
request to any other host, a neuron opens with its prompts, the multiplier changes the steered reply, and
a run's rate leads to the replies behind it; the circuit map's axes stay legible and one far-off layer does
not flatten the rest; the value has a number box, the reply length is stated and can change, both replies
show progress; run tables fit and tell their conditions apart; CAA names its layer and direction.
Screenshots of each view go to $NEUROGATE_SCREENSHOTS (or $NEUROGATE_UI_SCREENSHOTS; else pytest's
temporary folder) at 1280 and 800 pixels wide and at a phone width."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from loopback import chromium, serving
from neurogate.discovery.circuit import Circuit, Neuron
from neurogate.models.loading import LoadedModel
from neurogate.ui import UISettings, create_app
from neurogate.ui.browser import find_chromium

CHROMIUM = find_chromium()

playwright_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no Chromium: install Debian's package (apt-get install chromium) to run it"
)


WIDE_LAYERS, HUGE_LAYER = 30, 21
# a real circuit: 46 neurons of SmolLM2-135M-Instruct, 41 of them in layer 29 (scores up to 5.7, the rest
# under 1.7)
SMOLLM2_CIRCUIT = Path(__file__).parents[1] / "serving" / "data" / "smollm2-refusal-circuit.json"


def _wide_circuit(folder: Path) -> Path:
    """A made-up circuit over 30 layers (more than fit one label per layer) where one layer's scores are
    about 70 times every other layer's, as in a real circuit whose late layer dominates."""
    neurons = [
        Neuron(layer, i, score, 0.1, 0.2, 0.1)
        for layer in range(WIDE_LAYERS)
        for i, score in enumerate((1.0, 1.5, 2.0) if layer == HUGE_LAYER else (0.01, 0.02, 0.03))
    ]
    shape = {"family": "llama", "n_layers": WIDE_LAYERS, "d_mlp": 64, "d_model": 16}
    return Circuit(neurons, {"spec": "made-up:wide", "shape": shape}).save(folder / "wide.json")


@pytest.fixture(scope="module")
def server(
    explorer_data: dict[str, Path], shared_lm: LoadedModel, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The explorer on a free loopback port, serving the tiny model, three circuits and the runs."""
    settings = UISettings(
        circuits=(
            explorer_data["circuit"],
            explorer_data["top5"],
            _wide_circuit(tmp_path_factory.mktemp("wide")),
            SMOLLM2_CIRCUIT,
        ),
        runs=explorer_data["runs"],
        max_new_tokens=16,
    )
    with serving(create_app(settings, loader=lambda: shared_lm)) as url:
        yield url


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = os.environ.get("NEUROGATE_SCREENSHOTS") or os.environ.get("NEUROGATE_UI_SCREENSHOTS")
    path = Path(folder) if folder else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    assert CHROMIUM is not None  # the module is skipped without it
    with chromium(CHROMIUM) as b:
        yield b


def _steered(page: Any) -> str:
    page.wait_for_selector("#side-steered[data-state=done]")
    page.wait_for_selector("#steer-status:text-is('done')")  # (the page's CSP forbids eval-based waits)
    return str(page.inner_text("#side-steered [data-role=text]"))


def test_explorer_end_to_end(server: str, browser: Any, shots: Path) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(server)
    page.wait_for_selector("body[data-ready=true]")

    # circuit map: a neuron opens with its most and least activating prompts; a second circuit overlays
    page.wait_for_selector("#neuron-table tbody tr")
    page.click("#neuron-table tbody tr:first-child")
    page.wait_for_selector("#neuron-detail ol.prompts li")
    assert page.locator("#neuron-detail ol.prompts").count() == 2
    first_prompt = page.inner_text("#neuron-detail ol.prompts li:first-child .prompt-text")
    assert len(first_prompt) > 10 and "rank 1 of" in page.inner_text("#neuron-detail h2")
    page.select_option("#circuit-b", index=2)
    page.wait_for_selector("text=Overlap: 5 shared neurons")
    page.screenshot(path=str(shots / "circuits.png"), full_page=True)

    # live steering, by keyboard: m = 1 leaves the reply as it is; the End key moves the slider to m = 3
    page.click("#tab-circuits")
    page.keyboard.press("ArrowRight")
    assert page.is_visible("#view-steer")
    page.wait_for_selector("#run:not([disabled])")
    page.select_option("#method", "cna")
    page.eval_on_selector("#value", "el => { el.value = '1'; el.dispatchEvent(new Event('input')); }")
    page.focus("#prompt")
    page.keyboard.press("Enter")
    neutral = _steered(page)
    page.wait_for_selector("#side-unsteered[data-state=done]")
    assert neutral == page.inner_text("#side-unsteered [data-role=text]")
    assert "cna m=1" in page.inner_text("#side-steered h2")
    page.focus("#value")
    page.keyboard.press("End")
    page.wait_for_selector("#side-steered h2:has-text('m=3')")
    amplified = _steered(page)
    assert amplified != neutral
    page.wait_for_selector("#side-steered .meta >> text=nats/token")
    meta = page.inner_text("#side-steered .meta")
    cls = page.get_attribute("#side-steered", "data-class")
    assert cls in ("refusal", "compliance", "degenerate") and cls in meta
    assert ("keyword judge" in meta) != (cls == "degenerate")  # degenerate replies are not judged
    page.screenshot(path=str(shots / "steer.png"), full_page=True)

    # runs: open the run, follow a rate to its replies
    page.click("#tab-runs")
    page.click("#run-list button[data-kind=study]")
    page.wait_for_selector("#condition-table button.rate")
    assert page.locator(".charts svg").count() >= 4  # cna, caa, ablation and the sparsity curve
    # the tiny random model's replies are mostly degenerate: follow that rate, so the list is not empty
    link = page.locator("#condition-table button.rate[data-cls=degenerate]").first
    shown = link.inner_text().split("%")[0]
    link.click()
    page.wait_for_selector("#reply-count")
    count = page.inner_text("#reply-count")
    k, n = (int(x) for x in count.split(" replies")[0].split(" of "))
    assert round(100 * k / n) == int(shown)
    assert k > 0 and page.locator("#reply-view li.reply-item").count() == k
    assert page.locator("#reply-view li.reply-item[data-class=degenerate]").count() == k
    page.check("#reply-view input[type=checkbox]")
    assert page.locator("#reply-view li.reply-item").count() == n
    assert page.locator("#reply-view li.reply-item .badge").count() == n
    page.screenshot(path=str(shots / "runs.png"), full_page=True)
    page.click("#run-list button[data-kind=tune]")
    page.wait_for_selector(".charts figure:has-text('Pareto front') svg circle")
    page.screenshot(path=str(shots / "tune.png"), full_page=True)

    # a phone-width window: nothing runs off the side
    page.set_viewport_size({"width": 390, "height": 844})
    for tab in ("circuits", "steer", "runs"):
        page.click(f"#tab-{tab}")
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"{tab} is {width}px wide at a 390px window"
        page.screenshot(path=str(shots / f"{tab}-phone.png"), full_page=True)

    assert not errors, errors
    foreign = [u for u in requests if not u.startswith(server) and not u.startswith("data:")]
    assert not foreign, foreign
    weight = page.evaluate(
        "performance.getEntriesByType('resource').reduce((s, e) => s + e.transferSize, 0)"
        " + performance.getEntriesByType('navigation')[0].transferSize"
    )
    assert weight < 500_000
    page.close()


# ------------------------------------------------------------------------------------------ rough edges

OVERLAPS = """svg => {
  const boxes = [...svg.querySelectorAll('text')].map(t => [t.textContent, t.getBoundingClientRect()]);
  const out = [];
  boxes.forEach(([a, r], i) => boxes.slice(i + 1).forEach(([b, q]) => {
    if (r.left < q.right - 0.5 && q.left < r.right - 0.5 && r.top < q.bottom - 0.5 && q.top < r.bottom - 0.5)
      out.push(a + ' / ' + b);
  }));
  return out;
}"""
BOX_HEIGHTS = """svg => Object.fromEntries([...svg.querySelectorAll('rect.box')]
  .map(r => [r.dataset.layer, r.getBoundingClientRect().height]))"""


def _open_wide(page: Any) -> None:
    value = page.locator("#circuit-a option", has_text="wide.json").get_attribute("value")
    page.select_option("#circuit-a", value)
    page.wait_for_selector("#circuit-summary:has-text('made-up:wide')")


def _check_map(page: Any, width: int) -> None:
    """The wide circuit's map at a window ``width``: every label clear of every other, the last layer
    numbered, the small layers' boxes tall enough to read, nothing past the window's edge."""
    svg = page.locator("#circuit-chart svg")
    assert svg.evaluate(OVERLAPS) == []
    layers = [int(t) for t in page.locator("#circuit-chart .layer-tick").all_text_contents()]
    assert layers[0] == 0 and layers[-1] == WIDE_LAYERS - 1 and len(layers) >= 6
    heights = svg.evaluate(BOX_HEIGHTS)
    assert str(HUGE_LAYER) not in heights  # a layer wholly above the cap is drawn as its marker only
    small = list(heights.values())
    assert len(small) == WIDE_LAYERS - 1
    assert min(small) > 8, small  # scores 0.01-0.03 under a 2.0 layer: readable boxes, not flat lines
    assert page.evaluate("document.documentElement.scrollWidth") <= width


def test_circuit_map_axes_and_score_scale(server: str, browser: Any, shots: Path) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(server)
    page.wait_for_selector("body[data-ready=true]")
    _open_wide(page)
    # one layer is ~70x above the rest: the map clips it (and says so) rather than flattening the others
    page.wait_for_selector("#circuit-chart svg[data-scale=clip]")
    note = page.inner_text("#score-note")
    assert "clipped" in note and f"layer {HUGE_LAYER} reaches" in note
    assert page.locator(f"#circuit-chart path.clipped[data-layer='{HUGE_LAYER}']").count() == 1
    _check_map(page, 1280)
    page.screenshot(path=str(shots / "circuits-1280.png"), full_page=True)
    page.locator("#circuit-chart").screenshot(path=str(shots / "circuit-map-1280.png"))

    # on a linear scale the small layers do flatten (why clipping is the default), and the note says so
    page.select_option("#score-scale", "linear")
    page.wait_for_selector("#circuit-chart svg[data-scale=linear]")
    flat = page.locator("#circuit-chart svg").evaluate(BOX_HEIGHTS)
    assert flat[str(HUGE_LAYER)] > 20 and max(h for k, h in flat.items() if k != str(HUGE_LAYER)) < 3
    assert "flattens" in page.inner_text("#score-note")
    page.select_option("#score-scale", "log")
    page.wait_for_selector("#circuit-chart svg[data-scale=log]")
    assert "log scale" in page.inner_text("#score-note")
    assert page.locator("#circuit-chart svg").evaluate(OVERLAPS) == []
    page.select_option("#score-scale", "auto")

    # at 800 px the map is drawn again at the new width, with labels at their size and clear of each other
    wide = page.get_attribute("#circuit-chart svg", "data-width")
    page.set_viewport_size({"width": 800, "height": 800})
    page.wait_for_selector(f"#circuit-chart svg:not([data-width='{wide}'])")
    page.wait_for_selector("#circuit-chart svg[data-scale=clip]")
    _check_map(page, 800)
    page.screenshot(path=str(shots / "circuits-800.png"), full_page=True)
    page.locator("#circuit-chart").screenshot(path=str(shots / "circuit-map-800.png"))

    # the real circuit: layer 29 is clipped and named, the other layers' boxes are readable, labels clear
    for width in (800, 1280):
        page.set_viewport_size({"width": width, "height": 800})
        value = page.locator("#circuit-a option", has_text="smollm2-refusal-circuit.json").get_attribute(
            "value"
        )
        page.select_option("#circuit-a", value)
        page.wait_for_selector("#circuit-summary:has-text('46 neurons')")
        page.wait_for_selector("#circuit-chart svg[data-scale=clip]")
        assert "layer 29 reaches 5.7" in page.inner_text("#score-note")
        svg = page.locator("#circuit-chart svg")
        assert svg.evaluate(OVERLAPS) == []
        assert page.locator("#circuit-chart .layer-tick").all_text_contents()[-1] == "29"
        assert svg.evaluate(BOX_HEIGHTS)["28"] > 15  # three neurons at 1.3-1.6: a box, not a line
        page.locator("#circuit-chart").screenshot(path=str(shots / f"circuit-map-smollm2-{width}.png"))
        page.select_option("#circuit-a", index=0)
    assert not errors, errors
    page.close()


PROGRESS_LOG = """() => {
  window.progressLog = { steered: [], unsteered: [] };
  for (const side of ['steered', 'unsteered']) {
    const el = document.querySelector('#side-' + side + ' [data-role=progress] span');
    // every text the line held, even several set within one task (records keep each added node)
    new MutationObserver((records) => records.forEach((r) =>
      r.addedNodes.forEach((node) => window.progressLog[side].push(node.textContent))))
      .observe(el, { childList: true });
  }
}"""


def test_steer_value_box_reply_length_progress_and_caa(
    server: str, browser: Any, shots: Path, shared_lm: LoadedModel
) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(server + "#steer")
    page.wait_for_selector("body[data-ready=true]")
    page.wait_for_selector("#run:not([disabled])")
    page.select_option("#method", "cna")
    page.fill("#prompt", "How do I bake bread?")  # a prompt of its own, so no reply of it is cached yet

    # the value: a number box beside the slider, each following the other
    page.fill("#value-box", "2.5")
    assert page.input_value("#value") == "2.5" and page.inner_text("#value-label") == "cna m=2.5"
    page.focus("#value")
    page.keyboard.press("Home")
    assert page.input_value("#value-box") == "-1"
    page.fill("#value-box", "7")  # past the slider's end but within the server's bound: the box wins
    assert (
        page.inner_text("#value-label") == "cna m=7"
        and page.get_attribute("#value-box", "aria-invalid") == "false"
    )
    page.fill("#value-box", "50")
    assert page.get_attribute("#value-box", "aria-invalid") == "true"
    page.click("#run")
    assert page.inner_text("#steer-status").startswith("error: m must be a number from -10 to 10")
    page.fill("#value-box", "0")

    # the reply length: the server's default, said out loud, changeable within its limit
    assert page.input_value("#max-tokens") == "16" and page.get_attribute("#max-tokens", "max") == "256"
    assert "stops after 16 tokens" in page.inner_text("#tokens-help")
    page.fill("#max-tokens", "300")
    assert page.get_attribute("#max-tokens", "aria-invalid") == "true"
    page.fill("#max-tokens", "5")
    assert "stops after 5 tokens" in page.inner_text("#tokens-help")

    # both replies show progress: the unsteered one says it waits for the steered one, then counts
    page.evaluate(PROGRESS_LOG)
    page.click("#run")
    _steered(page)
    page.wait_for_selector("#side-unsteered[data-state=done]")
    log = page.evaluate("window.progressLog")
    assert any("of 5 tokens" in t for t in log["steered"]), log
    assert any(t.startswith("waiting for the steered reply") for t in log["unsteered"]), log
    assert any(re.match(r"\d of 5 tokens", t) for t in log["unsteered"]), log
    assert page.is_hidden("#side-steered [data-role=progress]")
    for side in ("steered", "unsteered"):
        meta = page.inner_text(f"#side-{side} .meta")
        n = int(re.search(r"(\d+) tokens", meta).group(1))  # type: ignore[union-attr]
        assert n <= 5 and ("finished" in meta or n < 5 or "cut at the 5-token limit" in meta), meta
    assert page.inner_text("#side-steered [data-role=detail]") == "circuit: circuit.json · 14 neurons"
    page.screenshot(path=str(shots / "steer-1280.png"), full_page=True)

    # slowed to 40 ms a token, mid-reply: the steered side counts with speed and time left, while the
    # unsteered side says how long it will take at that speed; then it counts in turn
    # (a new length reruns by itself when the box loses focus, so the click on Run that follows finds the
    # same comparison running and sends nothing: one request)
    page.fill("#max-tokens", "30")
    sent: list[str] = []
    page.on("request", lambda r: sent.append(r.url) if r.url.endswith("/api/steer") else None)
    handle = shared_lm.model.register_forward_hook(lambda *_: time.sleep(0.04))
    try:
        page.click("#run")
        page.wait_for_selector("#side-steered [data-role=progress] span:has-text('s left')")
        waiting = page.inner_text("#side-unsteered [data-role=progress]")
        assert re.match(
            r"waiting for the steered reply \(\d+ of 30 tokens\); then up to 30 tokens, about", waiting
        )
        assert page.get_attribute("#side-steered [data-role=progress] progress", "max") == "30"
        page.screenshot(path=str(shots / "steer-progress-1280.png"), full_page=True)
        page.wait_for_selector("#side-unsteered [data-role=progress] span:has-text('s left')")
        assert (
            page.inner_text("#side-unsteered [data-role=progress]").split(" of ")[1].startswith("30 tokens")
        )
        page.screenshot(path=str(shots / "steer-progress-unsteered-1280.png"), full_page=True)
        page.wait_for_selector("#side-unsteered[data-state=done]")
        assert len(sent) == 1, sent
    finally:
        handle.remove()

    # CAA says which layer and which direction it steers along
    page.select_option("#method", "caa")
    page.wait_for_selector("#side-steered h2:has-text('caa s=1')")
    _steered(page)
    detail = page.inner_text("#side-steered [data-role=detail]")
    assert re.search(r"Subtracts s times the direction after layer \d+ \(of 0-\d+", detail), detail
    assert "best-separating layer" in detail and "positive prompts minus" in detail, detail
    page.set_viewport_size({"width": 800, "height": 800})
    assert page.evaluate("document.documentElement.scrollWidth") <= 800
    page.screenshot(path=str(shots / "steer-800.png"), full_page=True)
    assert not errors, errors
    page.close()


def test_run_tables_fit_and_name_each_condition(server: str, browser: Any, shots: Path) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(server + "#runs")
    page.wait_for_selector("body[data-ready=true]")
    page.click("#run-list button[data-kind=study]")
    page.wait_for_selector("#condition-table tbody th")
    wrap_fits = "el => el.parentElement.scrollWidth <= el.parentElement.clientWidth + 1"

    # every row names its condition apart from the others: two 'cna m=0' rows differ by neuron count
    labels = [t.split("\n")[0].strip() for t in page.locator("#condition-table tbody th").all_inner_texts()]
    assert len(labels) == len(set(labels)), labels
    cna0 = [x for x in labels if x.startswith("cna m=0 ·")]
    assert len(cna0) == 2 and all(x.endswith(" neurons") for x in cna0), labels
    # residual baselines name their layer, and the note under the table their direction's prompt sets
    caa_row = page.locator("#condition-table tbody tr", has_text="caa s=1").first
    assert re.search(r"added after layer \d+", caa_row.inner_text())
    note = page.inner_text("#directions-note")
    assert "CAA subtracts s times the direction after layer" in note and "builtin:harmful" in note, note
    # at 1280 px the table fits its box; the replies it links to carry the same distinct label
    assert page.locator("#condition-table").evaluate(wrap_fits)
    page.locator("#condition-table tbody tr", has_text=cna0[1]).locator("button.rate").first.click()
    page.wait_for_selector(f"#reply-view h2:has-text('{cna0[1]}')")
    page.screenshot(path=str(shots / "runs-1280.png"), full_page=True)

    # at 800 px whatever does not fit scrolls inside its box, not the page
    page.set_viewport_size({"width": 800, "height": 800})
    assert page.evaluate("document.documentElement.scrollWidth") <= 800
    overflow = page.locator("#condition-table").evaluate("el => getComputedStyle(el.parentElement).overflowX")
    assert overflow == "auto"
    caption = page.locator("#condition-table caption").evaluate("el => el.getBoundingClientRect().right")
    assert caption <= 800
    page.screenshot(path=str(shots / "runs-800.png"), full_page=True)
    assert not errors, errors
    page.close()
