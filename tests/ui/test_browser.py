"""End to end in real headless Chromium (Debian's package, driven by Playwright): the page loads with no
request to any other host, a neuron opens with its prompts, the multiplier changes the steered reply, and
a run's rate leads to the replies behind it. Screenshots of each view go to $NEUROGATE_UI_SCREENSHOTS
(else a temporary folder) at 1280x800 and at a phone width."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from neurogate.models.loading import LoadedModel
from neurogate.ui import UISettings, create_app
from neurogate.ui.browser import CHROMIUM_FLAGS, find_chromium

CHROMIUM = find_chromium()

playwright_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no Chromium: install Debian's package (apt-get install chromium) to run it"
)


@pytest.fixture(scope="module")
def server(explorer_data: dict[str, Path], shared_lm: LoadedModel) -> Iterator[str]:
    """The explorer on a free loopback port, serving the tiny model, two circuits and one run."""
    import uvicorn

    from neurogate.ui.serve import bind, url_of

    settings = UISettings(
        circuits=(explorer_data["circuit"], explorer_data["top5"]),
        runs=explorer_data["runs"],
        max_new_tokens=16,
    )
    app = create_app(settings, loader=lambda: shared_lm)
    sock = bind("127.0.0.1", 0)
    srv = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    yield url_of("127.0.0.1", sock.getsockname()[1])
    srv.should_exit = True
    thread.join(10)
    sock.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = os.environ.get("NEUROGATE_UI_SCREENSHOTS")
    path = Path(folder) if folder else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=list(CHROMIUM_FLAGS))
        yield b
        b.close()


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
