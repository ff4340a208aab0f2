"""Export never deletes what neurogate did not write, cleans its temporary folders on every exit path, and
refuses multipliers that would overflow the model's dtype."""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path

import pytest
import torch
from tests.export.test_model import PICKS, make_circuit, saved_tiny

from neurogate.errors import ConfigError
from neurogate.export.model import MARKER, export_model
from neurogate.models.loading import LoadedModel, wrap_model
from neurogate.models.tiny import tiny_model, tiny_tokenizer
from neurogate.outputs import OWNER, TEMP_PREFIX, owned_tempdir
from neurogate.steering.fold import fold
from neurogate.steering.neurons import NeuronScaling


@pytest.fixture
def lm(tmp_path: Path) -> LoadedModel:
    return saved_tiny(tmp_path / "src")


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(TEMP_PREFIX))


def test_marker_records_version_circuit_hash_and_files(lm: LoadedModel, tmp_path: Path) -> None:
    out = export_model(lm, make_circuit(lm, PICKS), 0.0, tmp_path / "out")
    meta = json.loads((out / MARKER).read_text())
    assert meta["kind"] == "neurogate.export" and meta["neurogate_version"]
    assert len(meta["circuit_sha256"]) == 64
    assert set(meta["files"]) | {MARKER} == {p.name for p in out.iterdir()}
    assert OWNER not in meta["files"]


def test_overwrite_refuses_an_export_the_user_added_files_to(lm: LoadedModel, tmp_path: Path) -> None:
    circuit = make_circuit(lm, PICKS)
    out = export_model(lm, circuit, 0.0, tmp_path / "out")
    (out / "notes.md").write_text("mine")
    with pytest.raises(ConfigError, match=r"notes\.md"):
        export_model(lm, circuit, 0.5, out, overwrite=True)
    assert (out / "notes.md").read_text() == "mine"


def test_symlinks_are_refused(lm: LoadedModel, tmp_path: Path) -> None:
    circuit = make_circuit(lm, PICKS)
    real = export_model(lm, circuit, 0.0, tmp_path / "real")
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    with pytest.raises(ConfigError, match="symlink"):
        export_model(lm, circuit, 0.5, link, overwrite=True)
    with pytest.raises(ConfigError, match="symlink"):
        export_model(lm, circuit, 0.5, link / "inner")
    assert json.loads((real / MARKER).read_text())["multiplier"] == 0.0


def test_working_directory_its_parents_and_input_folders_are_refused(
    lm: LoadedModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "project"
    (project / "results").mkdir(parents=True)
    (project / "notes.txt").write_text("keep")
    circuit_file = make_circuit(lm, PICKS).save(project / "results" / "circuit.json")
    monkeypatch.chdir(project)
    circuit = make_circuit(lm, PICKS)
    for target in (".", "..", str(project), str(tmp_path)):
        with pytest.raises(ConfigError, match="working directory"):
            export_model(lm, circuit, 0.0, target, overwrite=True)
    with pytest.raises(ConfigError, match="holds the input"):
        export_model(lm, circuit, 0.0, "results", overwrite=True, inputs=[str(circuit_file)])
    with pytest.raises(ConfigError, match="holds the input"):  # the model's own folder
        export_model(lm, circuit, 0.0, tmp_path / "src", overwrite=True)
    assert (project / "notes.txt").read_text() == "keep" and circuit_file.is_file()


def test_interrupted_export_leaves_no_temporary_folder(
    lm: LoadedModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    circuit = make_circuit(lm, PICKS)
    out = export_model(lm, circuit, 0.0, tmp_path / "out")
    before = sorted(p.name for p in out.iterdir())

    def interrupt(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(lm.tokenizer, "save_pretrained", interrupt)
    for target in (out, tmp_path / "fresh"):
        with pytest.raises(KeyboardInterrupt):
            export_model(lm, circuit, 0.5, target, overwrite=True)
    assert leftovers(tmp_path) == [] and not (tmp_path / "fresh").exists()
    assert sorted(p.name for p in out.iterdir()) == before


def test_abandoned_temporary_folders_are_swept_live_ones_kept(
    lm: LoadedModel, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dead = tmp_path / f"{TEMP_PREFIX}out-dead"
    dead.mkdir()
    (dead / OWNER).write_text("123\n")  # nobody holds its lock: its process is gone
    (dead / "model.safetensors").write_bytes(b"partial")
    stranger = tmp_path / f"{TEMP_PREFIX}not-ours"
    stranger.mkdir()  # no owner file: not provably neurogate's, so kept
    with owned_tempdir(tmp_path, f"{TEMP_PREFIX}out-") as live, caplog.at_level(logging.WARNING):
        export_model(lm, make_circuit(lm, PICKS), 0.0, tmp_path / "out")
        assert live.is_dir()
    assert not dead.exists() and stranger.is_dir()
    assert "removed 1 temporary folder" in caplog.text


def test_export_gets_the_users_umask(lm: LoadedModel, tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        out = export_model(lm, make_circuit(lm, PICKS), 0.0, tmp_path / "out")
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    assert {stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()} == {0o644}


def bf16_lm() -> LoadedModel:
    return wrap_model(tiny_model("llama", dtype=torch.bfloat16), tiny_tokenizer(), spec="tiny:bf16")


def test_multipliers_are_checked_in_the_models_dtype(tmp_path: Path) -> None:
    lm = bf16_lm()
    circuit = make_circuit(lm, PICKS)
    message = r"1e\+40 overflows to inf in bfloat16 \(largest finite value 3\.39e\+38\)"
    with pytest.raises(ConfigError, match=message):
        export_model(lm, circuit, 1e40, tmp_path / "out")
    with pytest.raises(ConfigError, match=r"1e\+30 is finite but too large in bfloat16"):
        NeuronScaling(lm, circuit, 1e30)
    with pytest.raises(ConfigError, match="multiplier"):
        circuit.apply(lm, -1e30)
    assert not (tmp_path / "out").exists()
    with circuit.apply(lm, 50.0):  # an ordinary amplification is fine
        pass


def test_folded_weights_are_checked_for_overflow_before_writing(tmp_path: Path) -> None:
    lm = wrap_model(tiny_model("llama", dtype=torch.float16), tiny_tokenizer(), spec="tiny:f16")
    circuit = make_circuit(lm, PICKS)
    with torch.no_grad():
        lm.adapter.down_proj(0).weight[:, 3] = 1000.0  # 1000 * 100 is past float16's 65504
    before = lm.adapter.down_proj(0).weight.clone()
    with pytest.raises(ConfigError, match="overflow to inf or NaN in float16"):
        export_model(lm, circuit, 100.0, tmp_path / "out")
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []
    assert torch.equal(lm.adapter.down_proj(0).weight, before)  # the fold was undone
    with fold(lm, circuit, 2.0):
        pass
