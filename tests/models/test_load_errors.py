"""Model-load failures name their real cause in one ModelLoadError, online or offline."""

from __future__ import annotations

import json
import shutil
import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from neurogate.errors import ModelLoadError
from neurogate.models.loading import load_model
from neurogate.models.tiny import tiny_model, tiny_tokenizer


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("good")
    tiny_model().save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return path


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:1000])


DAMAGE: dict[str, tuple[Callable[[Path], None], str]] = {
    "config not JSON": (lambda p: (p / "config.json").write_text("{not json"), "not a valid JSON"),
    "config not UTF-8": (lambda p: (p / "config.json").write_bytes(b"\xff\xfe\x00x"), "not a valid JSON"),
    "unknown model type": (
        lambda p: (p / "config.json").write_text(json.dumps({"model_type": "nonexistent"})),
        "nonexistent",
    ),
    "truncated weights": (lambda p: _truncate(p / "model.safetensors"), "truncated or damaged"),
    "empty weights": (lambda p: (p / "model.safetensors").write_bytes(b""), "truncated or damaged"),
}


@pytest.mark.parametrize("offline", ["0", "1"])
@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_damaged_local_directory(
    good: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str, offline: str
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", offline)
    damage, cause = DAMAGE[case]
    path = tmp_path / "model"
    shutil.copytree(good, path)
    damage(path)
    with pytest.raises(ModelLoadError, match=cause) as info:
        load_model(str(path), dtype="float32", device="cpu")
    assert "local model" in str(info.value) and "cache" not in str(info.value)


GGUF: dict[str, tuple[bytes, str]] = {
    "empty": (b"", "is empty"),
    "random": (bytes(range(256)) * 20, "magic bytes"),
    "cut inside the header": (b"GGUF" + struct.pack("<IQ", 3, 10), "inside its GGUF header"),
    "cut after the header": (b"GGUF" + struct.pack("<IQQ", 3, 10, 5), "truncated or damaged"),
}


@pytest.mark.parametrize("case", sorted(GGUF))
def test_damaged_gguf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    data, cause = GGUF[case]
    path = tmp_path / "model.gguf"
    path.write_bytes(data)
    with pytest.raises(ModelLoadError, match=cause) as info:
        load_model(str(path), dtype="float32", device="cpu")
    assert "cache" not in str(info.value)


def test_offline_hub_id_names_the_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="not in the local Hugging Face cache"):
        load_model("nobody-here/no-such-model", dtype="float32", device="cpu")
