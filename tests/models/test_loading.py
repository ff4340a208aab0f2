from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from neurogate.errors import ConfigError, ModelLoadError
from neurogate.models.devices import cpu_has_fast_bf16, resolve_device, resolve_dtype
from neurogate.models.loading import load_model
from neurogate.models.tiny import tiny_model, tiny_tokenizer


def _save_tiny(path: Path, family: str = "llama", chat_template: bool = True) -> Path:
    tiny_model(family).save_pretrained(path)
    tiny_tokenizer(chat_template).save_pretrained(path)
    return path


def test_load_local_directory_gives_model_tokenizer_and_adapter(tmp_path: Path) -> None:
    lm = load_model(str(_save_tiny(tmp_path / "m")), dtype="float32", device="cpu")
    assert lm.adapter.n_layers == 3 and lm.adapter.d_mlp == 96
    assert lm.dtype == torch.float32 and lm.device.type == "cpu"
    assert lm.tokenizer.padding_side == "left" and lm.tokenizer.pad_token is not None
    assert lm.has_chat_template
    assert not any(p.requires_grad for p in lm.model.parameters())
    info = lm.info()
    assert info["layers"] == 3 and info["neurons_per_layer"] == 96 and info["total_neurons"] == 288


def test_local_directory_loads_with_the_same_logits(tmp_path: Path) -> None:
    model = tiny_model("qwen2", seed=3)
    model.save_pretrained(tmp_path / "m")
    tiny_tokenizer().save_pretrained(tmp_path / "m")
    lm = load_model(str(tmp_path / "m"), dtype="float32", device="cpu")
    ids = torch.tensor([[5, 6, 7, 8]])
    assert torch.equal(model(ids).logits, lm.model(ids).logits)


def test_no_chat_template_warns_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        lm = load_model(str(_save_tiny(tmp_path / "m", chat_template=False)), dtype="float32")
    assert not lm.has_chat_template
    assert sum("no chat template" in r.message for r in caplog.records) == 1


def test_dtype_auto_follows_hardware() -> None:
    expected = torch.bfloat16 if cpu_has_fast_bf16() else torch.float32
    assert resolve_dtype("auto", torch.device("cpu")) == expected
    assert resolve_dtype("auto", torch.device("cuda")) == torch.bfloat16
    assert resolve_dtype("fp32") == torch.float32


def test_bad_dtype_and_device_are_clear_errors() -> None:
    with pytest.raises(ConfigError, match="unknown dtype"):
        resolve_dtype("float8")
    with pytest.raises(ConfigError, match="unknown device"):
        resolve_device("tpu-ish")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            resolve_device("cuda")


def test_missing_paths_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(str(tmp_path / "nope.gguf"))
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(str(tmp_path / "missing-dir"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match=r"no config\.json"):
        load_model(str(tmp_path / "empty"))


def test_offline_hub_id_names_the_alternatives(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ModelLoadError) as info:
        load_model("neurogate-test/definitely-not-cached-model")
    message = str(info.value)
    assert "HF_HUB_OFFLINE" in message and "zoo:" in message and ".gguf" in message


def test_unknown_zoo_name_lists_the_zoo() -> None:
    from neurogate.errors import ZooError

    with pytest.raises(ZooError, match="smollm2-135m-instruct"):
        load_model("zoo:no-such-model")
