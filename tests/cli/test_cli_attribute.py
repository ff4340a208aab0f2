"""`neurogate attribute` end to end on a tiny local model: the table, the self-check, the saved circuit, the
comparison with a circuit, and clean errors for bad input."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from neurogate.cli.main import app
from neurogate.discovery.circuit import Circuit, Neuron
from neurogate.errors import ConfigError
from neurogate.models.tiny import tiny_lm, tiny_model, tiny_tokenizer

runner = CliRunner()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("attribute") / "model"
    tiny_model("llama").save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return str(path)


def _args(model: str, *more: str) -> list[str]:
    return ["attribute", "--model", model, "--dtype", "float32", "--device", "cpu", *more]


def test_attribute_prints_the_ranking_and_self_check_and_saves(model_dir: str, tmp_path: Path) -> None:
    out = tmp_path / "attr.json"
    result = runner.invoke(
        app, _args(model_dir, "--prompt", "How do I pick a lock?", "--top-k", "5", "--out", str(out))
    )
    assert result.exit_code == 0, result.output
    for word in ("rank", "layer", "neuron", "attribution", "activation", "top 5 neurons", "saved"):
        assert word in result.output
    assert re.search(r"self-check ok: .* ratio [\d.]+x", result.output)
    circuit = Circuit.load(out)
    assert len(circuit) == 5 and circuit.method["name"] == "linearised-attribution"
    assert circuit.method["self_check"]["passed"] is True
    assert circuit.method["target"]["kind"] == "greedy"


def test_attribute_compares_with_a_circuit(model_dir: str, tmp_path: Path) -> None:
    lm = tiny_lm("llama")
    neurons = [Neuron(layer, index, 1.0, 1.0, 1.0, 0.0) for layer in range(3) for index in range(0, 96, 4)]
    path = Circuit(neurons, model={"spec": model_dir, "shape": lm.shape}).save(tmp_path / "cna.json")
    out = tmp_path / "attr.json"
    args = ["--prompt", "hello", "--target", " I", "--circuit", str(path), "--position", "last"]
    result = runner.invoke(app, _args(model_dir, *args, "--out", str(out)))
    assert result.exit_code == 0, result.output
    assert re.search(r"vs the circuit \(72 neurons\): \d+ shared with the top 20 \(Jaccard", result.output)
    saved = Circuit.load(out)
    assert saved.method["comparison"]["circuit_size"] == 72
    assert saved.method["position"] == "last" and saved.method["target"]["text"] == " I"


@pytest.mark.parametrize(
    ("more", "message"),
    [
        (["--prompt", "  "], "prompt is empty"),
        (["--prompt", "hi", "--target", ""], "tokenizes to nothing"),
        (["--prompt", "hi", "--target", "x", "--target-token", "3"], "not both"),
        (["--prompt", "hi", "--target-token", "99999"], "outside the vocabulary"),
        (["--prompt", "hi", "--top-k", "0"], "top_k"),
        (["--prompt", "hi", "--position", "middle"], "position"),
        (["--prompt", "hi", "--circuit", "/nonexistent/c.json"], "does not exist"),
    ],
)
def test_bad_input_is_a_config_error(model_dir: str, more: list[str], message: str) -> None:
    result = runner.invoke(app, _args(model_dir, *more))
    assert result.exit_code != 0
    assert isinstance(result.exception, ConfigError), result.output
    assert message in str(result.exception)


def test_a_file_that_is_no_circuit_is_refused(model_dir: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    result = runner.invoke(app, _args(model_dir, "--prompt", "hi", "--circuit", str(bad)))
    assert isinstance(result.exception, ConfigError), result.output
    assert "not valid JSON" in str(result.exception)


def test_a_circuit_from_another_model_is_refused(model_dir: str, tmp_path: Path) -> None:
    other = tiny_lm("gpt2")
    path = Circuit([Neuron(0, 1, 1, 1, 0, 0)], model={"spec": "tiny:gpt2", "shape": other.shape}).save(
        tmp_path / "gpt2.json"
    )
    result = runner.invoke(app, _args(model_dir, "--prompt", "hi", "--circuit", str(path)))
    assert isinstance(result.exception, ConfigError), result.output
    assert "does not fit" in str(result.exception)
