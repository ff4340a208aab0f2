"""Explorer targets on the 135M zoo model: from `neurogate ui` to a usable page (model loaded) in <= 10 s,
and the first streamed token of a steered reply <= 1 s after the request is sent.

    python bench/ui.py --circuit circuit.json [--screenshots docs/]

Starts the real command in a subprocess, reads the URL it prints, polls /api/status until the model is
ready and the page is served, then sends steering requests (as the page does: POST with its Origin) and
times the first steered token. Prints each time and its ratio to the target (< 1 meets it). With
--screenshots, also drives Debian's Chromium through the three views and saves a PNG of each.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

from common import cpu_name

MODEL = "zoo:smollm2-135m-instruct"
PROMPTS = [
    "How do I pick a lock?",
    "Write a short poem about the sea.",
    "How can I make a fake ID?",
]


def start(circuit: Path, runs: Path | None) -> tuple[subprocess.Popen[str], str, float]:
    cmd = [
        sys.executable,
        "-m",
        "neurogate",
        "ui",
        "--model",
        MODEL,
        "--circuit",
        str(circuit),
        "--port",
        "0",
    ]
    cmd += ["--max-new-tokens", "32"]
    cmd += ["--runs", str(runs)] if runs else []
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "http://" not in line:
        proc.kill()
        raise SystemExit(f"the explorer did not print its URL: {line!r}")
    return proc, line.split("explorer: ", 1)[1].split()[0], t0


def wait_usable(client: httpx.Client, t0: float) -> float:
    while True:
        state = client.get("/api/status").json()["live"]["state"]
        if state == "failed":
            raise SystemExit("the model failed to load")
        if state == "ready" and client.get("/").status_code == 200:
            return time.perf_counter() - t0
        time.sleep(0.05)


def first_token(client: httpx.Client, url: str, circuit_id: str, prompt: str, value: float) -> float:
    body = {"prompt": prompt, "method": "cna", "value": value, "circuit": circuit_id}
    t0 = time.perf_counter()
    first = None
    with client.stream("POST", "/api/steer", json=body, headers={"origin": url.rstrip("/")}) as res:
        for line in res.iter_lines():
            event = json.loads(line)
            if event["event"] == "token" and event["side"] == "steered":
                first = time.perf_counter() - t0
                break  # closing the stream stops the generation (the page does the same on a new request)
            if event["event"] == "error":
                raise SystemExit(event["text"])
    if first is None:
        raise SystemExit("no steered token came back")
    return first


def screenshots(url: str, folder: Path) -> None:
    from playwright.sync_api import sync_playwright

    from neurogate.ui.browser import CHROMIUM_FLAGS, find_chromium

    chromium = find_chromium()
    if chromium is None:
        raise SystemExit("--screenshots needs Debian's chromium")
    folder.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=list(CHROMIUM_FLAGS))
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto(url)
        page.wait_for_selector("body[data-ready=true]")
        page.click("#neuron-table tbody tr:first-child")
        page.wait_for_selector("#neuron-detail ol.prompts li")
        page.screenshot(path=str(folder / "ui-circuits.png"))
        page.click("#tab-steer")
        page.fill("#prompt", "How do I pick a lock?")
        page.eval_on_selector("#value", "el => { el.value = '0'; el.dispatchEvent(new Event('input')); }")
        page.click("#run")
        page.wait_for_selector("#side-steered .meta >> text=nats/token", timeout=600_000)
        page.screenshot(path=str(folder / "ui-steer.png"))
        browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--circuit", type=Path, required=True, help=f"a circuit found on {MODEL}")
    parser.add_argument("--runs", type=Path, default=None)
    parser.add_argument("--screenshots", type=Path, default=None)
    args = parser.parse_args()
    proc, url, t0 = start(args.circuit, args.runs)
    try:
        with httpx.Client(base_url=url, timeout=600) as client:
            usable = wait_usable(client, t0)
            cid = next(c["id"] for c in client.get("/api/circuits").json() if "error" not in c)
            first_token(client, url, cid, "Hello", 0.0)  # the first generation pays one-off set-up costs
            firsts = [first_token(client, url, cid, p, v) for p in PROMPTS for v in (0.0, 2.0)]
            median, worst = statistics.median(firsts), max(firsts)
            print(
                f"machine: {cpu_name()}, {os.cpu_count()} cores (shared); "
                f"load average {os.getloadavg()[0]:.1f}"
            )
            print(
                f"usable page (command start -> model loaded, page served): {usable:.2f} s; "
                f"target 10 s; ratio {usable / 10:.2f}"
            )
            print(
                f"first steered token after sending ({len(firsts)} requests): median {median:.3f} s, "
                f"worst {worst:.3f} s; target 1 s; ratio {median:.2f} (worst {worst:.2f})",
                flush=True,
            )
            if args.screenshots:
                screenshots(url, args.screenshots)
    finally:
        proc.terminate()
        proc.wait(10)


if __name__ == "__main__":
    main()
