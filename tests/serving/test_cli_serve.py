"""`neurogate export --format ...` and `neurogate serve` through the Typer app on a tiny local model."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
from gguf import GGUFReader
from typer.testing import CliRunner

from neurogate.cli.main import app
from neurogate.cli.serve import default_python
from neurogate.discovery.circuit import Circuit, Neuron
from neurogate.discovery.directions import ResidualDirections
from neurogate.errors import ConfigError
from neurogate.models.tiny import tiny_lm

runner = CliRunner()


@pytest.fixture
def setup(tmp_path: Path) -> dict[str, str]:
    """A tiny Llama saved as a model directory, a 30-neuron circuit on it, and residual directions."""
    lm = tiny_lm("llama")
    lm.model.save_pretrained(tmp_path / "model")
    lm.tokenizer.save_pretrained(tmp_path / "model")
    picks = [Neuron(i % 3, 3 * (i // 3), 1.0, 1.0, 1.0, 0.0) for i in range(30)]
    circuit = Circuit(neurons=picks, model={"spec": "tiny", "shape": lm.shape})
    diffs = lm.model.model.embed_tokens.weight[:3].detach().clone()
    directions = ResidualDirections(diffs=diffs, best_layer=1, separation=[0.5] * 3)
    return {
        "model": str(tmp_path / "model"),
        "circuit": str(circuit.save(tmp_path / "circuit.json")),
        "directions": str(directions.save(tmp_path / "directions.safetensors")),
    }


def base(s: dict[str, str]) -> list[str]:
    return ["--model", s["model"], "--dtype", "float32", "--device", "cpu"]


def test_export_lora_and_control_vector(setup: dict[str, str], tmp_path: Path) -> None:
    args = ["export", *base(setup), "--circuit", setup["circuit"], "-x", "0.5", "--format", "lora"]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "adapter")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["r"] == 16
    out = tmp_path / "cv.gguf"
    args = ["export", *base(setup), "--format", "control-vector", "--directions", setup["directions"]]
    result = runner.invoke(app, [*args, "--strength", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert [t.name for t in GGUFReader(out).tensors] == ["direction.1"]


def test_export_gguf_from_a_directory_says_how_to_convert(setup: dict[str, str], tmp_path: Path) -> None:
    args = ["export", *base(setup), "--circuit", setup["circuit"], "--format", "gguf", "--out", "x.gguf"]
    result = runner.invoke(app, args)
    assert isinstance(result.exception, ConfigError)
    assert "convert_hf_to_gguf.py" in str(result.exception)
    result = runner.invoke(app, ["export", *base(setup), "--format", "onnx", "--out", "x"])
    assert isinstance(result.exception, ConfigError) and "dir, lora, gguf" in str(result.exception)


def test_serve_prints_the_vllm_command_with_one_adapter_per_multiplier(
    setup: dict[str, str], tmp_path: Path
) -> None:
    args = ["serve", *base(setup), "--circuit", setup["circuit"], "-x", "0", "-x", "1.5"]
    result = runner.invoke(
        app, [*args, "--adapters", str(tmp_path / "served"), "--python", "py", "--port", "8123"]
    )
    assert result.exit_code == 0, result.output
    argv = shlex.split(result.stdout.strip())
    assert argv[:3] == ["py", "-m", "vllm.entrypoints.openai.api_server"]
    assert argv[argv.index("--model") + 1] == setup["model"] and "--enable-lora" in argv
    assert argv[argv.index("--max-lora-rank") + 1] == "16" and argv[argv.index("--port") + 1] == "8123"
    modules = argv[argv.index("--lora-modules") + 1 :]
    assert modules == [
        f"cna-m0={tmp_path / 'served' / 'cna-m0'}",
        f"cna-m1.5={tmp_path / 'served' / 'cna-m1.5'}",
    ]
    assert (tmp_path / "served" / "cna-m1.5" / "adapter_model.safetensors").is_file()


def test_serve_folded_exports_one_model(setup: dict[str, str], tmp_path: Path) -> None:
    args = ["serve", *base(setup), "--circuit", setup["circuit"], "-x", "0", "--folded", "--python", "py"]
    result = runner.invoke(app, [*args, "--adapters", str(tmp_path / "served")])
    assert result.exit_code == 0, result.output
    argv = shlex.split(result.stdout.strip())
    assert argv[argv.index("--model") + 1] == str(tmp_path / "served" / "cna-m0")
    assert "--enable-lora" not in argv and (tmp_path / "served" / "cna-m0" / "config.json").is_file()
    result = runner.invoke(app, [*args, "-x", "1", "--adapters", str(tmp_path / "served")])
    assert isinstance(result.exception, ConfigError) and "one multiplier" in str(result.exception)


def test_serve_never_drops_a_mean_circuits_constant(setup: dict[str, str], tmp_path: Path) -> None:
    """A circuit tuned with the mean intervention is refused as LoRA adapters (vLLM cannot add its
    constant) and served folded with the constant in the MLP bias, not silently as a multiplier."""
    plain = Circuit.load(setup["circuit"])
    method = {**plain.method, "intervention": {"kind": "mean", "multiplier": 0.5}}
    path = Circuit(neurons=plain.neurons, model=plain.model, method=method).save(tmp_path / "mean.json")
    args = ["serve", *base(setup), "--circuit", str(path), "-x", "0.5", "--python", "py"]
    result = runner.invoke(app, [*args, "--adapters", str(tmp_path / "served")])
    assert isinstance(result.exception, ConfigError) and "mean intervention" in str(result.exception)
    assert not (tmp_path / "served").exists()
    result = runner.invoke(app, [*args, "--folded", "--adapters", str(tmp_path / "served")])
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "served" / "mean-m0.5" / "config.json").read_text())
    assert config.get("mlp_bias") is True


def test_default_python_prefers_the_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEUROGATE_VLLM_PYTHON", "/opt/vllm/bin/python")
    assert default_python() == "/opt/vllm/bin/python"
