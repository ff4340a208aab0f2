"""The command line on a saved tiny mixture-of-experts model: discover prints the routing report and
labels neurons by expert; export writes a folded directory and refuses a LoRA adapter with what to do."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from neurogate.cli.main import app
from neurogate.errors import ConfigError

runner = CliRunner()


@pytest.fixture(scope="module")
def moe_setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    from neurogate.models.tiny import tiny_model, tiny_tokenizer

    root = tmp_path_factory.mktemp("moe-cli")
    model_dir = root / "model"
    tiny_model("qwen2_moe").save_pretrained(model_dir)
    tiny_tokenizer().save_pretrained(model_dir)
    (root / "pos.txt").write_text(
        "\n".join(f"tell me about cats, part {i}{'!' * i}" for i in range(6)) + "\n"
    )
    (root / "neg.txt").write_text("\n".join(f"explain tax rule {i}{'?' * i}" for i in range(6)) + "\n")
    return {"model": str(model_dir), "pos": str(root / "pos.txt"), "neg": str(root / "neg.txt")}


def test_discover_reports_routing_and_exports_fold_but_not_lora(
    moe_setup: dict[str, str], tmp_path: Path
) -> None:
    s = moe_setup
    common = ["--model", s["model"], "--dtype", "float32"]
    circuit = f"{tmp_path}/c.json"
    sets = ["--positive", s["pos"], "--negative", s["neg"], "--top-k", "6", "--no-universal-filter"]
    found = runner.invoke(app, ["discover", *common, *sets, "--score", "mean-diff", "--out", circuit])
    assert found.exit_code == 0, found.output
    assert "routing of the circuit's experts" in found.output
    assert " E" in found.output or "shared" in found.output  # the table's top neuron names its expert
    exported = runner.invoke(
        app, ["export", *common, "--circuit", circuit, "--multiplier", "0", "--out", f"{tmp_path}/dir"]
    )
    assert exported.exit_code == 0, exported.output
    assert (tmp_path / "dir" / "model.safetensors").is_file()
    steer = ["--circuit", circuit, "--multiplier", "0", "--format", "lora", "--out", f"{tmp_path}/lora"]
    lora = runner.invoke(app, ["export", *common, *steer])
    assert lora.exit_code != 0 and isinstance(lora.exception, ConfigError)
    assert "mixture-of-experts" in str(lora.exception) and "--format dir" in str(lora.exception)
    assert not (tmp_path / "lora").exists()
