"""The Audit page end to end in real headless Chromium (Debian's package, driven by Playwright): the rule is
on the page, an annotator labels items with the keyboard (r, d, c, g, u, s, b), each label lands in the
run's label file, a reload continues where the annotator stopped, keys typed in a field or on another tab
label nothing, and the agreement view shows kappa, the disagreements and the calibrated rates. Prints how
long each key took from keydown to the frame that shows its answer (and checks it is under 100 ms). An
adjudicator then goes through two disagreements from the agreement view, and a labels file is uploaded."""

from __future__ import annotations

import json
import os
import statistics
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from audit_run import make_run
from loopback import chromium, serving
from neurogate.evaluation.audit import RULE, load_sample, prepare_audit
from neurogate.evaluation.audit_labels import Label, LabelStore, now
from neurogate.ui import UISettings, create_app
from neurogate.ui.browser import find_chromium

CHROMIUM = find_chromium()

playwright_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no Chromium: install Debian's package (apt-get install chromium) to run it"
)

KEY_BUDGET_MS = 100.0
CONDITIONS = ("baseline", "cna-m0", "caa-s1")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder of three conditions of 40 replies each (the default sample: 90 items)."""
    return make_run(tmp_path_factory.mktemp("audit-ui") / "runs", keys=CONDITIONS, n=40)


@pytest.fixture(scope="module")
def server(run: Path) -> Iterator[str]:
    """The explorer on a free loopback port with the run's folder and no model."""
    with serving(create_app(UISettings(runs=run.parent))) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    assert CHROMIUM is not None  # the module is skipped without it
    with chromium(CHROMIUM) as b:
        yield b


def records(run: Path) -> list[dict[str, Any]]:
    path = run / "audit" / "labels.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def test_labelling_with_the_keyboard(server: str, browser: Any, run: Path, tmp_path: Path) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{server}#audit")
    page.wait_for_selector("#view-audit[data-ready=true]")
    assert page.get_attribute("#tab-audit", "aria-selected") == "true" and page.is_visible("#view-audit")
    assert not page.is_visible("#view-circuits")
    assert "Labelling rule, version 2" in page.inner_text("#audit-rule")
    rule = page.inner_text("#audit-rule .rule")  # the rule's text, every word in order
    assert rule.split() == RULE.split() and page.locator("#audit-rule dt").count() == 6

    page.fill("#audit-annotator", "ana")
    page.click("#audit-start")
    page.wait_for_selector("#view-audit[data-position='1']")
    assert page.inner_text("#audit-progress") == "item 1 of 90 · 0 of 90 labelled"
    sample = load_sample(run)
    assert page.inner_text("#audit-prompt") == sample.items[0].prompt
    assert page.inner_text("#audit-reply") == sample.items[0].reply
    shown = page.inner_text("#audit-label").lower()
    for hidden in (*CONDITIONS, "cna m0", "keyword", "multiplier", "judge"):
        assert hidden not in shown, hidden

    timings: list[float] = []

    def key(k: str, position: str) -> None:
        before = int(page.get_attribute("#view-audit", "data-keys") or 0)
        page.keyboard.press(k)
        page.wait_for_selector(f"#view-audit[data-keys='{before + 1}']")
        assert page.get_attribute("#view-audit", "data-position") == position, k
        timings.append(float(page.get_attribute("#view-audit", "data-key-ms") or "nan"))

    for n, k in enumerate("rdcg", start=2):
        key(k, str(n))
    key("b", "4")  # back: the fourth item, with its label
    assert "your label: degenerate" in page.inner_text("#audit-own")
    key("u", "5")  # relabelled unsure; on to the next unlabelled item
    key("s", "6")  # skip: no label
    key("R", "7")  # the capital letter is the same key
    labels = records(run)
    assert [r["label"] for r in labels] == [
        "refusal",
        "redirect",
        "compliance",
        "degenerate",
        "unsure",
        "refusal",
    ]
    ids = [it.id for it in sample.items]
    assert [r["item"] for r in labels] == [ids[0], ids[1], ids[2], ids[3], ids[3], ids[5]]
    assert all(r["annotator"] == "ana" and r["source"] == "explorer" and r["rule"] == "2" for r in labels)
    assert {r["reply_sha256"] for r in labels[:4]} == {it.sha256 for it in sample.items[:4]}

    # a key typed into a field, or while another tab is showing, labels nothing
    page.focus("#audit-annotator")
    page.keyboard.press("r")
    page.click("#tab-runs")
    assert not page.is_visible("#view-audit")
    page.keyboard.press("c")
    page.click("#tab-audit")
    page.wait_for_timeout(150)
    assert len(records(run)) == 6
    assert page.get_attribute("#view-audit", "data-position") == "7"

    # a reload continues where the annotator stopped, with nothing to press first
    page.reload()
    page.wait_for_selector("#view-audit[data-ready=true]")
    page.wait_for_selector("#view-audit[data-position='7']")
    assert "resumed" in page.inner_text("#audit-status")
    assert page.input_value("#audit-annotator") == "ana"
    for width in (800, 390):  # the item and the rule stack on a narrow screen
        page.set_viewport_size({"width": width, "height": 900})
        page.screenshot(path=str(screens(tmp_path) / f"audit-label-{width}.png"), full_page=True)
    page.set_viewport_size({"width": 1280, "height": 900})
    for n, k in enumerate("crdgcrdgcr", start=8):
        key(k, str(n))
    assert len(records(run)) == 16

    # a second annotator (labels made elsewhere): agreement, disagreements and calibrated rates
    ana = {r["item"]: r["label"] for r in records(run)}
    by_id = {it.id: it for it in sample.items}
    ben = {item: ("compliance" if n % 4 == 0 else lab) for n, (item, lab) in enumerate(ana.items())}
    LabelStore(run).append(
        [Label(i, "ben", lab, by_id[i].sha256, now(), source="test") for i, lab in ben.items()]
    )
    page.click("#audit-show-agreement")
    page.wait_for_selector("#audit-rates")
    assert "ana / ben: Cohen's kappa" in page.inner_text("#audit-agreement .audit-kappa")
    differ = sum(ana[i] != ben[i] for i in ana)
    assert page.locator("#audit-disagreements tbody tr").count() == differ > 0
    rates = page.inner_text("#audit-rates")
    assert all(c in rates for c in ("baseline", "cna m0", "caa s1", "corrected")) and "%" in rates
    page.screenshot(path=str(screens(tmp_path) / "audit-agreement.png"), full_page=True)
    page.click("#tab-audit")

    assert not errors, errors
    assert all(u.startswith(server) for u in requests), [u for u in requests if not u.startswith(server)]
    print(
        f"\naudit key in the browser (keydown to the frame showing the answer): median "
        f"{statistics.median(timings):.1f} ms, max {max(timings):.1f} ms over {len(timings)} keys"
    )
    assert max(timings) < KEY_BUDGET_MS, timings


def test_adjudicating_and_importing_from_the_agreement_view(browser: Any, tmp_path: Path) -> None:
    run = make_run(tmp_path / "runs", keys=CONDITIONS, n=4)
    items = prepare_audit(run, per_condition=2).sample.items  # 6 items
    ana, ben = "rrccgg", "rcccgd"  # they disagree on items 2 and 6
    names = {"r": "refusal", "c": "compliance", "g": "degenerate", "d": "redirect"}
    LabelStore(run).append(
        [
            Label(it.id, who, names[k], it.sha256, now(), source="test")
            for who, keys in (("ana", ana), ("ben", ben))
            for it, k in zip(items, keys, strict=True)
        ]
    )
    with serving(create_app(UISettings(runs=run.parent))) as url:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{url}#audit")
        page.wait_for_selector("#view-audit[data-ready=true]")
        page.click("#audit-show-agreement")
        page.wait_for_selector("#audit-disagreements")
        assert page.locator("#audit-disagreements tbody tr").count() == 2
        page.fill("#audit-adjudicator", "cara")
        page.click("#audit-adjudicate")
        page.wait_for_selector("#view-audit[data-mode=adjudicate][data-position='1']")
        assert not page.is_visible("#audit-agreement")
        assert page.inner_text("#audit-prompt") == items[1].prompt
        assert page.inner_text("#audit-reply") == items[1].reply
        assert page.inner_text("#audit-others") == "labels: ana: refusal, ben: compliance"
        assert "disagreement 1 of 2" in page.inner_text("#audit-progress")
        page.screenshot(path=str(screens(tmp_path) / "audit-adjudicate.png"), full_page=True)
        page.keyboard.press("d")
        page.wait_for_selector("#view-audit[data-position='2']")
        assert page.inner_text("#audit-others") == "labels: ana: degenerate, ben: redirect"
        rec = records(run)[-1]
        assert (rec["item"], rec["annotator"], rec["label"], rec["adjudicated"], rec["source"]) == (
            items[1].id,
            "cara",
            "redirect",
            True,
            "explorer",
        )
        page.keyboard.press("g")  # the last one: the agreement view comes back with both adjudications
        page.wait_for_selector("#audit-disagreements")
        cells = page.locator("#audit-disagreements tbody tr td:last-child").all_inner_texts()
        assert (
            cells == ["redirect", "degenerate"]
            and page.get_attribute("#view-audit", "data-position") == "done"
        )

        # labels made elsewhere from items.jsonl: counted; a bad file is refused with its problems named
        page.click("#audit-import-box summary")
        good = "".join(
            json.dumps({"id": it.id, "sha256": it.sha256, "label": "refusal"}) + "\n" for it in items
        )
        page.set_input_files(
            "#audit-import-file",
            files=[{"name": "dana.jsonl", "mimeType": "application/json", "buffer": good.encode()}],
        )
        page.fill("#audit-import-annotator", "dana")
        page.click("#audit-import")
        page.wait_for_selector("#audit-import-message:has-text('imported 6')")
        assert page.inner_text("#audit-import-message") == "imported 6 label(s) from dana.jsonl (dana 6)"
        page.wait_for_selector("#audit-agreement:has-text('ana / dana')")  # the open view counts them
        bad = good.replace("refusal", "maybe", 1)
        page.set_input_files(
            "#audit-import-file",
            files=[{"name": "bad.jsonl", "mimeType": "application/json", "buffer": bad.encode()}],
        )
        page.click("#audit-import")
        page.wait_for_selector("#audit-import-message.error")
        assert "nothing imported" in page.inner_text(
            "#audit-import-message"
        ) and "'maybe'" in page.inner_text("#audit-import-message")
        assert sum(r["annotator"] == "dana" for r in records(run)) == 6
        page.screenshot(path=str(screens(tmp_path) / "audit-import.png"), full_page=True)
        assert not errors, errors
        page.close()


def screens(tmp_path: Path) -> Path:
    folder = os.environ.get("NEUROGATE_SCREENSHOTS") or os.environ.get("NEUROGATE_UI_SCREENSHOTS")
    path = Path(folder) if folder else tmp_path
    path.mkdir(parents=True, exist_ok=True)
    return path
