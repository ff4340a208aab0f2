"""`neurogate ui` behaves like every command: it asks before pulling a large model, and a port in use, a
failed pull or a failed load is one line, not a traceback."""

from __future__ import annotations

import logging
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from neurogate.cli.main import main
from neurogate.models import zoo
from neurogate.models.tiny import tiny_model, tiny_tokenizer
from neurogate.ui.catalog import Catalog
from neurogate.ui.live import LiveSteering
from neurogate.ui.settings import UISettings


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port another program listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        yield sock.getsockname()[1]


def _error(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """Run `neurogate ARGS` through the entry point; return its one-line error (stderr)."""
    monkeypatch.setattr(sys, "argv", ["neurogate", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    assert "Traceback" not in err and err.count("\n") == 1, err
    return err


def test_a_port_in_use_is_one_line_saying_what_to_pass(
    busy_port: int, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    err = _error(monkeypatch, capsys, "ui", "--no-model", "--port", str(busy_port))
    assert f"port {busy_port} on 127.0.0.1 is in use" in err and "--port 0" in err


def test_ui_without_model_asks_before_pulling_the_large_default(
    tmp_path: Path, busy_port: int, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("NEUROGATE_HOME", str(tmp_path / "home"))  # nothing pulled
    # the busy port makes a missing question fail fast (at bind) instead of serving forever
    err = _error(monkeypatch, capsys, "ui", "--port", str(busy_port))
    assert f"--model was not given, so the default zoo:{zoo.DEFAULT_MODEL}" in err and "--yes" in err
    assert not (tmp_path / "home" / "zoo" / zoo.DEFAULT_MODEL).exists()


def test_ui_with_a_model_that_cannot_load_fails_before_serving(
    tmp_path: Path, busy_port: int, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "not-a-model").mkdir()
    err = _error(
        monkeypatch, capsys, "ui", "--model", str(tmp_path / "not-a-model"), "--port", str(busy_port)
    )
    assert "not-a-model" in err and "is in use" not in err


def test_a_model_that_fails_to_load_in_the_explorer_is_one_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model_dir = tmp_path / "model"
    tiny_model("llama").save_pretrained(model_dir)
    tiny_tokenizer().save_pretrained(model_dir)
    (model_dir / "model.safetensors").write_bytes(b"not safetensors")  # a damaged download
    settings = UISettings(model=str(model_dir), dtype="float32", device="cpu")
    live = LiveSteering(settings, Catalog(settings))
    with caplog.at_level(logging.WARNING):
        live.start()
        assert live.wait_ready(60)
    status = live.status()
    assert status["state"] == "failed" and "\n" not in status["error"]
    errors = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.getMessage().count("\n") for r in errors] == [0] and errors[0].exc_info is None
    assert "the model could not be loaded" in errors[0].getMessage()
