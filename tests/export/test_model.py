"""Export: a plain transformers directory with folded weights that reproduces the steered model."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from neurogate.discovery.circuit import Circuit, Neuron
from neurogate.errors import CircuitError, ConfigError
from neurogate.export.model import export_model
from neurogate.models.loading import LoadedModel, load_model
from neurogate.models.tiny import tiny_model, tiny_tokenizer
from neurogate.steering import steer

PICKS = [(0, 3), (0, 17), (1, 5), (2, 90)]
PROMPT = "<|im_start|>user\nexport me<|im_end|>\n<|im_start|>assistant\n"


def make_circuit(lm: LoadedModel, picks: Sequence[tuple[int, int]]) -> Circuit:
    neurons = [Neuron(layer, index, 1.0, 1.0, 1.0, 0.0) for layer, index in picks]
    model = {"spec": lm.spec, "shape": lm.shape}
    return Circuit(neurons=neurons, model=model, method={"score": "test"})


def saved_tiny(path: Path, family: str = "llama") -> LoadedModel:
    tiny_model(family).save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return load_model(str(path), dtype="float32", device="cpu")


def logits(model: torch.nn.Module, tokenizer: object, text: str = PROMPT) -> torch.Tensor:
    ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])  # type: ignore[operator]
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_exported_model_loads_plainly_and_gives_folded_logits(tmp_path: Path, family: str) -> None:
    lm = saved_tiny(tmp_path / "src", family)
    circuit = make_circuit(lm, PICKS)
    before = {k: v.clone() for k, v in lm.model.state_dict().items()}
    with steer(lm, circuit, 0.0):
        hooked = logits(lm.model, lm.tokenizer)
    out = export_model(lm, circuit, 0.0, tmp_path / "out")
    assert all(torch.equal(v, before[k]) for k, v in lm.model.state_dict().items())
    plain = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.chat_template
    assert (logits(plain, tokenizer) - hooked).abs().max() <= 1e-5
    assert list(out.glob("*.safetensors")) and (out / "config.json").is_file()
    readme = (out / "README.md").read_text()
    assert "4 neurons" in readme and "L0: 2, L1: 1, L2: 1" in readme and "0 for every neuron" in readme
    assert str(tmp_path / "src") in readme
    assert Circuit.load(out / "neurogate_circuit.json").neurons == circuit.neurons
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left behind


def test_export_refuses_non_empty_dir_unless_overwrite(tmp_path: Path) -> None:
    lm = saved_tiny(tmp_path / "src")
    circuit = make_circuit(lm, PICKS)
    target = tmp_path / "out"
    target.mkdir()
    (target / "keep.txt").write_text("precious")
    with pytest.raises(ConfigError, match="not empty"):
        export_model(lm, circuit, 0.0, target)
    assert (target / "keep.txt").read_text() == "precious"
    with pytest.raises(ConfigError, match="not a neurogate export"):
        export_model(lm, circuit, 0.0, target, overwrite=True)
    assert (target / "keep.txt").read_text() == "precious"
    target = tmp_path / "out2"
    export_model(lm, circuit, 0.0, target)
    export_model(lm, circuit, {(0, 3): 0.5, (2, 90): 2.0}, target, overwrite=True)
    meta = json.loads((target / "neurogate_export.json").read_text())
    assert meta["multiplier"][0] == {"layer": 0, "index": 3, "multiplier": 0.5}
    assert meta["multiplier"][1]["multiplier"] == 1.0
    assert "per neuron" in (target / "README.md").read_text()
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(ConfigError, match="not a directory"):
        export_model(lm, circuit, 0.0, tmp_path / "a_file", overwrite=True)


def test_export_checks_the_circuit_fits(tmp_path: Path) -> None:
    lm = saved_tiny(tmp_path / "src")
    other = saved_tiny(tmp_path / "gpt2", "gpt2")
    with pytest.raises(CircuitError):
        export_model(lm, make_circuit(other, [(0, 1)]), 0.0, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_zoo_export_round_trip(tmp_path: Path) -> None:
    lm = load_model("zoo:smollm2-135m-instruct", dtype="bfloat16", device="cpu")
    circuit = make_circuit(lm, [(layer, 7 * layer) for layer in range(lm.adapter.n_layers)])
    with steer(lm, circuit, 0.0):
        hooked = logits(lm.model, lm.tokenizer).float()
    out = export_model(lm, circuit, 0.0, tmp_path / "smol")
    plain = AutoModelForCausalLM.from_pretrained(out, dtype=torch.bfloat16).eval()
    assert torch.equal(logits(plain, AutoTokenizer.from_pretrained(out)).float(), hooked)


def test_export_refuses_weights_that_overflow_the_dtype(tmp_path: Path) -> None:
    lm = saved_tiny(tmp_path / "src")
    lm.model.to(torch.float16)
    with pytest.raises(ConfigError, match="float16"):
        export_model(lm, make_circuit(lm, PICKS), 1e9, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_mean_ablation_exports_where_the_mlp_can_save_a_bias(tmp_path: Path, family: str) -> None:
    lm = saved_tiny(tmp_path / "src", family)
    neurons = [Neuron(layer, index, 1.0, 1.0, 1.0, 0.5 + 0.1 * layer) for layer, index in PICKS]
    circuit = Circuit(neurons=neurons, model={"spec": lm.spec, "shape": lm.shape}, method={"score": "test"})
    before = {k: v.clone() for k, v in lm.model.state_dict().items()}
    with circuit.apply(lm, 0.25, toward="mean"):
        hooked = logits(lm.model, lm.tokenizer)
    with steer(lm, circuit, 0.25):
        toward_zero = logits(lm.model, lm.tokenizer)
    out = export_model(lm, circuit, 0.25, tmp_path / "out", toward="mean")
    # the source model is as it was: same tensors, no added biases, config unchanged
    assert lm.model.state_dict().keys() == before.keys()
    assert all(torch.equal(v, before[k]) for k, v in lm.model.state_dict().items())
    assert not getattr(lm.model.config, "mlp_bias", False)
    plain = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    assert (logits(plain, AutoTokenizer.from_pretrained(out)) - hooked).abs().max() <= 1e-5
    assert (hooked - toward_zero).abs().max() > 1e-4  # mean-ablation is not the plain multiplier
    assert json.loads((out / "neurogate_export.json").read_text())["toward"] == "mean"
    assert "Mean-ablation" in (out / "README.md").read_text()


def test_mean_ablation_export_is_refused_where_no_bias_can_be_saved(tmp_path: Path) -> None:
    lm = saved_tiny(tmp_path / "src", "qwen2")
    circuit = make_circuit(lm, PICKS)
    with pytest.raises(ConfigError, match="qwen2 models have none"):
        export_model(lm, circuit, 0.0, tmp_path / "out", toward="mean")
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_cli_export_uses_the_circuits_recorded_intervention(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from neurogate.cli.main import app

    lm = saved_tiny(tmp_path / "src")
    circuit = make_circuit(lm, PICKS)
    circuit.method["intervention"] = {"kind": "mean", "multiplier": 0.5}
    circuit.save(tmp_path / "tuned.json")
    base = ["export", "--model", str(tmp_path / "src"), "--circuit", str(tmp_path / "tuned.json")]
    base += ["--dtype", "float32", "--device", "cpu"]
    result = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "mean m=0.5" in result.output
    meta = json.loads((tmp_path / "out" / "neurogate_export.json").read_text())
    assert (meta["toward"], meta["multiplier"]) == ("mean", 0.5)
    result = CliRunner().invoke(app, [*base, "--kind", "cna", "-x", "0", "--out", str(tmp_path / "o2")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "o2" / "neurogate_export.json").read_text())["toward"] == "zero"
    result = CliRunner().invoke(app, [*base, "--format", "lora", "--out", str(tmp_path / "o3")])
    assert result.exit_code == 0, result.output  # the constant rides in the LoRA's B bias (for peft)
    assert "vLLM does not apply LoRA biases" in " ".join(result.output.split())
    assert json.loads((tmp_path / "o3" / "adapter_config.json").read_text())["lora_bias"] is True
    assert json.loads((tmp_path / "o3" / "neurogate_export.json").read_text())["toward"] == "mean"
