"""`neurogate ui` as a user runs it: it prints its URL and serves; a non-loopback bind warns; bad options
get one clear error."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest


@contextmanager
def explorer(*args: str) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """Start the command on a free port and yield the URL it printed."""
    cmd = [sys.executable, "-m", "neurogate", "ui", "--port", "0", *args]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "http://" in line, line + (proc.stderr.read() if proc.stderr else "")
        yield line.split("explorer: ", 1)[1].split()[0], proc
    finally:
        proc.terminate()
        proc.wait(20)


def test_ui_prints_its_url_and_serves_runs_without_a_model(explorer_data: dict[str, Path]) -> None:
    with explorer("--no-model", "--runs", str(explorer_data["runs"])) as (url, _):
        assert url.startswith("http://127.0.0.1:")
        status = httpx.get(url + "api/status", timeout=30).json()
        assert status["live"]["state"] == "off" and status["has_runs"] is True
        runs = httpx.get(url + "api/runs", timeout=30).json()
        assert sorted(r["kind"] for r in runs) == ["study", "tune"]
        assert all(r["model"] == "tiny:llama" for r in runs)


def test_binding_beyond_loopback_warns(explorer_data: dict[str, Path]) -> None:
    with explorer("--no-model", "--host", "0.0.0.0", "--runs", str(explorer_data["runs"])) as (url, proc):
        port = url.rsplit(":", 1)[1].strip("/")
        assert httpx.get(f"http://127.0.0.1:{port}/api/status", timeout=30).status_code == 200
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    assert "warning" in err and "reachable from other machines" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--runs", "/nonexistent/runs"], "is not a folder"),
        (["--circuit", "/nonexistent/c.json"], "is not a file"),
        (["--max-new-tokens", "100000"], "at most 256"),
    ],
)
def test_bad_options_get_one_clear_error(args: list[str], message: str) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "neurogate", "ui", "--no-model", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr
