"""Commands that apply a circuit load the model it was found on unless --model says otherwise, and refuse a
--model whose shape does not fit, naming both (a copy under another name is used, with a note)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from neurogate.cli.main import app
from neurogate.discovery.circuit import Circuit, Neuron
from neurogate.errors import NeurogateError
from neurogate.models.tiny import tiny_lm, tiny_model, tiny_tokenizer

runner = CliRunner()


@pytest.fixture
def found(tmp_path: Path) -> tuple[Path, Path]:
    """A tiny model folder and a circuit found on it."""
    model_dir = tmp_path / "model"
    tiny_model("llama").save_pretrained(model_dir)
    tiny_tokenizer().save_pretrained(model_dir)
    neurons = [Neuron(layer, index, 1.0, 1.0, 1.0, 0.0) for layer in range(3) for index in range(0, 96, 8)]
    circuit = Circuit(neurons=neurons, model={"spec": str(model_dir), "shape": tiny_lm("llama").shape})
    return model_dir, circuit.save(tmp_path / "circuit.json")


def test_steer_takes_the_model_from_the_circuit(found: tuple[Path, Path]) -> None:
    model_dir, circuit = found
    args = [
        "steer",
        "--circuit",
        str(circuit),
        "--dtype",
        "float32",
        "--max-new-tokens",
        "2",
        "--prompt",
        "hi",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert f"model: {model_dir} (the circuit's model)" in result.stderr
    assert "cna m=0" in result.stdout


def test_export_takes_the_model_from_the_circuit(found: tuple[Path, Path], tmp_path: Path) -> None:
    _, circuit = found
    out = tmp_path / "steered"
    result = runner.invoke(
        app, ["export", "--circuit", str(circuit), "--dtype", "float32", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert (out / "config.json").is_file() and "exported:" in result.stdout


def test_chat_takes_the_model_from_the_circuit(found: tuple[Path, Path]) -> None:
    model_dir, circuit = found
    result = runner.invoke(app, ["chat", "--circuit", str(circuit), "--dtype", "float32"], input="/quit\n")
    assert result.exit_code == 0, result.output
    assert f"chat with {model_dir};" in result.stdout.replace("\n", "")


@pytest.mark.parametrize(
    "command",
    [
        ["steer", "--prompt", "hi"],
        ["chat"],
        ["export", "--out", "{tmp}/steered"],
        ["sweep", "--methods", "cna"],
        ["serve", "-x", "0"],
    ],
)
def test_a_model_other_than_the_circuits_is_refused_naming_both(
    found: tuple[Path, Path], tmp_path: Path, command: list[str]
) -> None:
    model_dir, circuit = found
    other = tmp_path / "other-model"  # another architecture: the circuit's neurons do not exist in it
    tiny_model("gpt2").save_pretrained(other)
    tiny_tokenizer().save_pretrained(other)
    args = [part.replace("{tmp}", str(tmp_path)) for part in command]
    result = runner.invoke(
        app, [*args, "--circuit", str(circuit), "--model", str(other), "--dtype", "float32"]
    )
    assert isinstance(result.exception, NeurogateError), result.output
    message = str(result.exception)
    assert f"found on {model_dir}" in message and f"does not fit {other}" in message
    assert not (tmp_path / "steered").exists()


def test_a_copy_of_the_circuits_model_under_another_name_is_used_with_a_note(
    found: tuple[Path, Path], tmp_path: Path
) -> None:
    model_dir, circuit = found
    copy = tmp_path / "copy"
    shutil.copytree(model_dir, copy)
    args = ["steer", "--model", str(copy), "--circuit", str(circuit), "--dtype", "float32"]
    result = runner.invoke(app, [*args, "--max-new-tokens", "2", "--prompt", "hi"])
    assert result.exit_code == 0, result.output
    assert f"was found on {model_dir}" in " ".join(result.stderr.split())


def test_the_circuits_model_spelled_another_way_is_accepted(
    found: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    model_dir, circuit = found
    monkeypatch.chdir(model_dir.parent)
    args = ["steer", "--model", "./model/", "--circuit", str(circuit), "--dtype", "float32"]
    result = runner.invoke(app, [*args, "--max-new-tokens", "2", "--prompt", "hi"])
    assert result.exit_code == 0, result.output
    assert "the circuit's model" not in result.stderr
