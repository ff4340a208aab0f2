"""The steer, chat and export commands, run through the Typer app on a tiny local model."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM
from typer.testing import CliRunner

from neurogate.cli.main import app
from neurogate.discovery.circuit import Circuit, Neuron
from neurogate.errors import ConfigError
from neurogate.models.tiny import tiny_lm, tiny_model, tiny_tokenizer

runner = CliRunner()


@pytest.fixture
def setup(tmp_path: Path) -> dict[str, str]:
    model_dir = tmp_path / "model"
    tiny_model("llama").save_pretrained(model_dir)
    tiny_tokenizer().save_pretrained(model_dir)
    lm = tiny_lm("llama")
    neurons = [Neuron(layer, index, 1.0, 1.0, 1.0, 0.0) for layer in range(3) for index in range(0, 96, 3)]
    circuit = Circuit(neurons=neurons, model={"spec": str(model_dir), "shape": lm.shape})
    circuit_path = circuit.save(tmp_path / "circuit.json")
    pos = tmp_path / "pos.txt"
    neg = tmp_path / "neg.txt"
    pos.write_text("\n".join(f"do a bad thing {i}" for i in range(8)) + "\n")
    neg.write_text("\n".join(f"say a nice thing {i}" for i in range(8)) + "\n")
    return {"model": str(model_dir), "circuit": str(circuit_path), "pos": str(pos), "neg": str(neg)}


def base(s: dict[str, str]) -> list[str]:
    return ["--model", s["model"], "--dtype", "float32", "--device", "cpu"]


def test_steer_prints_both_replies_side_by_side(setup: dict[str, str]) -> None:
    args = ["steer", *base(setup), "--circuit", setup["circuit"], "--multiplier", "0"]
    args += ["--max-new-tokens", "6"]
    result = runner.invoke(app, [*args, "--prompt", "hello there", "--prompt", "second prompt"])
    assert result.exit_code == 0, result.output
    for word in ("unsteered", "cna m=0", "hello there", "second prompt"):
        assert word in result.output


def test_steer_uses_the_circuits_recorded_intervention(setup: dict[str, str], tmp_path: Path) -> None:
    tuned = Circuit.load(setup["circuit"])
    tuned.method["intervention"] = {"kind": "mean", "multiplier": -0.5}
    path = tuned.save(tmp_path / "tuned.json")
    args = ["steer", *base(setup), "--circuit", str(path), "--max-new-tokens", "4", "--prompt", "hi"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "recorded intervention: mean m=-0.5" in result.output and "mean m=-0.5" in result.output
    result = runner.invoke(app, [*args, "--method", "cna"])  # a method given by the user wins
    assert result.exit_code == 0, result.output
    assert "cna m=0" in result.output and "recorded" not in result.output
    result = runner.invoke(app, [*args, "--multiplier", "0.25"])  # so does a multiplier
    assert "mean m=0.25" in result.output


def test_steer_with_caa_computes_directions(setup: dict[str, str], tmp_path: Path) -> None:
    prompts = tmp_path / "p.txt"
    prompts.write_text("first\nsecond\n")
    args = ["steer", *base(setup), "--method", "caa", "--strength", "0.5", "--max-new-tokens", "4"]
    args += ["--prompts", str(prompts), "--positive", setup["pos"], "--negative", setup["neg"]]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "caa s=0.5" in result.output and "second" in result.output


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        # cna and random take the multiplier only; --strength s names its equivalent --multiplier 1 - s
        (["--strength", "1"], "takes --multiplier m (1 = unchanged, 0 ablates), not --strength"),
        (["--strength", "0.25"], "--strength s for cna is --multiplier 0.75 now"),
        (["--multiplier", "0", "--strength", "1"], "--strength s for cna is --multiplier 0 now"),
        (["--method", "random", "--strength", "1"], "--method random takes --multiplier m"),
        (["--method", "caa", "--multiplier", "0"], "--method caa takes --strength s"),
        (["--method", "ablation", "--multiplier", "0"], "not --multiplier"),
        (["--method", "bogus"], "unknown intervention kind 'bogus'"),
        (["--method", "cna"], "needs --circuit"),
    ],
)
def test_steer_bad_options_give_clean_errors(setup: dict[str, str], extra: list[str], match: str) -> None:
    result = runner.invoke(app, ["steer", *base(setup), "--prompt", "x", *extra])
    assert isinstance(result.exception, ConfigError) and match in str(result.exception)


def test_chat_repl_commands_and_history(setup: dict[str, str]) -> None:
    script = "\n".join(
        [
            "hello",
            "/m 0.5",
            "/s 0.25",
            "and again",
            "/off",
            "plain now",
            "/on",
            "/method caa",
            "/s 2",
            "/m 0",
            "/method nonsense",
            "/m abc",
            "/reset",
            "/frobnicate",
            "after reset",
            "/quit",
            "never read",
        ]
    )
    args = ["chat", *base(setup), "--circuit", setup["circuit"], "--multiplier", "0", "--max-new-tokens", "5"]
    args += ["--positive", setup["pos"], "--negative", setup["neg"]]
    result = runner.invoke(app, args, input=script + "\n")
    assert result.exit_code == 0, result.output
    out = result.output
    assert "steering: cna m=0;" in out
    assert "steering: cna m=0.5" in out and "cna m=0.5>" in out  # a reply under the new multiplier
    assert "unsteered>" in out
    flat = " ".join(out.split())  # long messages are wrapped at the console width
    # a method on the other scale starts at its full effect (s = 1), not at the old number
    assert re.search(r"steering: caa s=1\b", flat) and "steering: caa s=2" in flat
    assert "unknown method 'nonsense'" in flat and "/m takes a number" in flat
    # /m is the neuron kinds' multiplier, /s the residual kinds' strength; the wrong one says which to use
    assert "--method cna takes --multiplier m" in flat
    assert "--strength s for cna is --multiplier 0.75 now" in flat and "cna m=0.75" not in flat
    assert "--method caa takes --strength s (0 = unchanged, 1 = full), not --multiplier" in flat
    assert "conversation cleared" in out and "unknown command /frobnicate" in out
    assert out.count("caa s=2>") == 1  # only "after reset" was answered under caa


def test_chat_history_goes_through_the_chat_template(setup: dict[str, str]) -> None:
    from neurogate.cli.chat import ChatSession
    from neurogate.models.loading import load_model

    lm = load_model(setup["model"], dtype="float32", device="cpu")
    settings = {"circuit_path": Path(setup["circuit"]), "positive": "", "negative": ""}
    session = ChatSession(lm, "cna", 0.0, settings, system_prompt="be brief", max_new_tokens=3)
    assert session.status() == "cna m=0"
    first = session.reply("one")
    session.reply("two")
    text = session.render()
    assert text.count("<|im_start|>user") == 2 and "be brief" in text
    assert text.endswith("<|im_start|>assistant\n")
    assert first in text


def test_chat_ends_at_end_of_input(setup: dict[str, str]) -> None:
    args = ["chat", *base(setup), "--circuit", setup["circuit"], "--max-new-tokens", "3"]
    result = runner.invoke(app, args, input="hi\n")
    assert result.exit_code == 0, result.output
    assert "cna m=0>" in result.output


def test_export_command_writes_a_loadable_model(setup: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "exported"
    args = ["export", *base(setup), "--circuit", setup["circuit"], "--multiplier", "0", "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    model = AutoModelForCausalLM.from_pretrained(out)
    circuit = Circuit.load(setup["circuit"])
    weight = model.model.layers[0].mlp.down_proj.weight
    idx = [n.index for n in circuit.neurons if n.layer == 0]
    assert torch.count_nonzero(weight[:, idx]) == 0 and torch.count_nonzero(weight) > 0
    again = runner.invoke(app, args)
    assert isinstance(again.exception, ConfigError) and "not empty" in str(again.exception)
    assert runner.invoke(app, [*args, "--overwrite"]).exit_code == 0


def test_commands_have_examples() -> None:
    for command in ("steer", "chat", "export"):
        result = runner.invoke(app, [command, "--help"])
        assert result.exit_code == 0 and "Example: neurogate" in result.output
