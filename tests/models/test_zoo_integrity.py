"""Zoo integrity: every converted file is recorded at pull time and checked on load (cheaply) and by
``neurogate models verify`` (in full); damage is reported with the command that repairs it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import test_zoo  # the fake zoo served from local wheels
from typer.testing import CliRunner

from neurogate.cli import app as cli
from neurogate.cli.main import app
from neurogate.errors import ZooError
from neurogate.models import integrity, zoo

fake_zoo = test_zoo.fake_zoo
runner = CliRunner()
WEIGHTS = 64 * 1024  # bytes of the fake weights file: 16 windows of 1 KiB do not cover it


@pytest.fixture
def pulled(fake_zoo: tuple[Path, bytes], monkeypatch: pytest.MonkeyPatch) -> Path:
    """The fake model pulled with a converter that writes a weights file and a config, small windows."""
    monkeypatch.setattr(integrity, "WINDOW", 1024)

    def convert(model: zoo.ZooModel, gguf: Path, out_dir: Path) -> None:
        out_dir.mkdir()
        (out_dir / "config.json").write_text('{"model_type": "fake"}')
        (out_dir / "model.safetensors").write_bytes(bytes(range(256)) * (WEIGHTS // 256))

    monkeypatch.setattr(zoo, "_convert", convert)
    return zoo.pull("fake")


def _marker(directory: Path) -> dict:
    return json.loads((directory / zoo.MARKER).read_text())


def _overwrite(path: Path, offset: int, data: bytes, keep_mtime: bool) -> None:
    stat = path.stat()
    with path.open("r+b") as fh:
        fh.seek(offset)
        fh.write(data)
    if keep_mtime:
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_pull_records_size_and_hashes_of_every_file(pulled: Path) -> None:
    record = _marker(pulled)["integrity"]
    assert set(record["files"]) == {"config.json", "model.safetensors"}
    weights = record["files"]["model.safetensors"]
    assert weights["size"] == WEIGHTS
    assert weights["sha256"] == integrity.full_sha256(pulled / "model.safetensors")
    assert record["window"] == 1024 and record["windows"] == integrity.WINDOWS
    assert zoo.check("fake").state == "ok" and zoo.check("fake", full=True).state == "ok"
    assert zoo.ensure("fake") == pulled


def test_truncated_file_is_damage_that_names_the_repair(pulled: Path) -> None:
    weights = pulled / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    status = zoo.check("fake")
    assert status.damaged and "model.safetensors has 1,000 bytes" in status.message()
    with pytest.raises(ZooError, match=r"neurogate models pull fake --force"):
        zoo.ensure("fake")
    listed = runner.invoke(app, ["models", "list"])
    assert listed.exit_code == 0 and "DAMAGED" in listed.output


def test_missing_file_and_malformed_record_are_damage(pulled: Path) -> None:
    (pulled / "config.json").unlink()
    assert "config.json is missing" in zoo.check("fake").message()
    meta = _marker(pulled)
    meta["integrity"]["files"] = {"../../etc/passwd": {"size": "x"}}
    (pulled / zoo.MARKER).write_text(json.dumps(meta))
    assert "malformed integrity record" in zoo.check("fake").message()


def test_in_place_edit_keeping_the_size_is_caught_on_load(pulled: Path) -> None:
    # the middle of the file lies between sampled windows: the changed modification time triggers a full hash
    _overwrite(pulled / "model.safetensors", WEIGHTS // 2 + 300, b"\xff" * 16, keep_mtime=False)
    assert zoo.check("fake").damaged


def test_sampled_windows_catch_edits_even_with_the_old_mtime(pulled: Path) -> None:
    _overwrite(pulled / "model.safetensors", 10, b"\xff" * 4, keep_mtime=True)  # inside the first window
    assert "sampled sha256 mismatch" in zoo.check("fake").message()


def test_full_verify_catches_what_sampling_misses(pulled: Path) -> None:
    _overwrite(pulled / "model.safetensors", WEIGHTS // 2 + 300, b"\xff" * 16, keep_mtime=True)
    assert zoo.check("fake").state == "ok"  # between windows, same size and time: only a full pass sees it
    assert zoo.check("fake", full=True).damaged
    result = runner.invoke(app, ["models", "verify", "fake"])
    assert result.exit_code != 0 and "sha256 mismatch" in result.output
    assert isinstance(result.exception, ZooError) and "failed verification" in str(result.exception)


def test_a_touched_but_intact_file_is_restamped(pulled: Path) -> None:
    weights = pulled / "model.safetensors"
    os.utime(weights, ns=(1, 1))
    assert zoo.check("fake").state == "ok"
    assert _marker(pulled)["integrity"]["files"]["model.safetensors"]["mtime_ns"] == 1


def test_pull_repairs_a_damaged_model_instead_of_saying_already_pulled(pulled: Path) -> None:
    (pulled / "model.safetensors").write_bytes(b"")
    result = runner.invoke(app, ["models", "pull", "fake"])
    assert result.exit_code == 0, result.output
    assert "already pulled" not in result.output and "ready" in result.output
    assert zoo.check("fake", full=True).state == "ok"
    again = runner.invoke(app, ["models", "pull", "fake"])
    assert "already pulled" in again.output


def test_models_without_a_record_still_load_and_verify_says_so(
    pulled: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    meta = _marker(pulled)
    del meta["integrity"]
    (pulled / zoo.MARKER).write_text(json.dumps(meta))
    assert zoo.check("fake").state == "unrecorded"
    assert zoo.ensure("fake") == pulled
    result = runner.invoke(app, ["models", "verify", "fake"])
    assert result.exit_code == 0 and "no record; re-pull to record" in result.output
    monkeypatch.setattr(cli.console, "width", 400)  # one table row per model
    assert "yes (no integrity record)" in runner.invoke(app, ["models", "list"]).output


def test_verify_of_every_pulled_model(pulled: Path) -> None:
    result = runner.invoke(app, ["models", "verify"])
    assert result.exit_code == 0 and "zoo:fake: ok" in result.output


def test_the_kept_gguf_is_checked_against_the_published_hash(pulled: Path) -> None:
    gguf = pulled / "fake.gguf"
    assert "fake.gguf" not in _marker(pulled)["integrity"]["files"]  # its size and sha256 are the zoo's own
    _overwrite(gguf, 5, b"\x00", keep_mtime=False)
    assert zoo.check("fake").state == "ok"  # same size: the cheap check passes ...
    assert "fake.gguf content differs" in zoo.check("fake", full=True).message()  # ... verify does not
    gguf.write_bytes(b"GGUF")
    assert "fake.gguf has 4 bytes" in zoo.check("fake").message()
    gguf.unlink()  # a missing GGUF is fetched when an export needs it: not damage
    assert zoo.check("fake", full=True).state == "ok"
