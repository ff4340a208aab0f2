"""LoRA export: a PEFT adapter that loads on the source model and equals the fold, merged or not."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file

from neurogate.discovery.circuit import Circuit, Neuron
from neurogate.errors import ConfigError
from neurogate.export.lora import export_lora, lora_layers, padded_rank
from neurogate.models.generation import generate
from neurogate.models.inputs import encode
from neurogate.models.loading import LoadedModel
from neurogate.models.tiny import tiny_lm
from neurogate.prompts import load as load_prompts
from neurogate.steering import fold

REAL_CIRCUIT = Path(__file__).parents[1] / "serving" / "data" / "smollm2-refusal-circuit.json"
PICKS = [(0, 3), (0, 17), (2, 90), *[(1, i) for i in range(20, 41)]]  # ranks 8, 32, 8
IDS = torch.tensor([[1, 5, 9, 20, 33, 7, 2, 11]])


def make_circuit(lm: LoadedModel, picks: Sequence[tuple[int, int]]) -> Circuit:
    neurons = [Neuron(layer, index, 1.0, 1.0, 1.0, 0.0) for layer, index in picks]
    return Circuit(neurons=neurons, model={"spec": lm.spec, "shape": lm.shape}, method={"score": "test"})


def logits(model: torch.nn.Module, ids: torch.Tensor = IDS) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits.float()


def test_padded_rank_uses_sizes_engines_accept() -> None:
    assert [padded_rank(k) for k in (1, 8, 9, 46, 64, 65, 512, 513)] == [8, 8, 16, 64, 64, 128, 512, 768]


@pytest.mark.parametrize("family", ["llama", "gpt2", "gemma3", "gpt_neox"])
@pytest.mark.parametrize("multiplier", [0.0, 2.5])
def test_adapter_equals_fold_unmerged_and_merged(tmp_path: Path, family: str, multiplier: float) -> None:
    lm = tiny_lm(family)
    circuit = make_circuit(lm, PICKS)
    plain = logits(lm.model)
    with fold(lm, circuit, multiplier):
        folded = logits(lm.model)
    out = export_lora(lm, circuit, multiplier, tmp_path / "adapter")
    peft_model = PeftModel.from_pretrained(lm.model, str(out))
    assert (logits(peft_model) - folded).abs().max() <= 1e-5
    assert (folded - plain).abs().max() > 1e-3  # the adapter does change the model
    merged = peft_model.merge_and_unload()
    assert (logits(merged) - folded).abs().max() <= 1e-5


def test_adapter_layout_ranks_and_scaling(tmp_path: Path) -> None:
    lm = tiny_lm("llama")
    circuit = make_circuit(lm, PICKS)
    out = export_lora(lm, circuit, {(0, 3): 0.0, (1, 20): 3.0}, tmp_path / "a")
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["r"] == config["lora_alpha"] == 32
    assert (
        config["rank_pattern"]
        == config["alpha_pattern"]
        == {
            "model.layers.0.mlp.down_proj": 8,
            "model.layers.2.mlp.down_proj": 8,
        }
    )
    assert config["layers_to_transform"] == [0, 1, 2] and config["target_modules"] == ["mlp.down_proj"]
    tensors = load_file(str(out / "adapter_model.safetensors"))
    a = tensors["base_model.model.model.layers.0.mlp.down_proj.lora_A.weight"]
    b = tensors["base_model.model.model.layers.0.mlp.down_proj.lora_B.weight"]
    assert a.shape == (8, lm.adapter.d_mlp) and b.shape == (lm.adapter.d_model, 8)
    assert a.sum() == 2 and a[0, 3] == 1 and a[1, 17] == 1 and a[2:].abs().sum() == 0
    weight = lm.adapter.down_proj(0).weight
    assert torch.equal(b[:, 0], -weight[:, 3])  # m = 0: B = -W[:, idx]
    assert torch.equal(b[:, 1], torch.zeros_like(b[:, 1]))  # neurons the mapping leaves at m = 1
    assert b[:, 2:].abs().sum() == 0  # padding rows
    meta = json.loads((out / "neurogate_export.json").read_text())
    assert meta["format"] == "lora" and meta["ranks"] == {"0": 8, "1": 32, "2": 8}
    assert meta["bytes"] == (out / "adapter_model.safetensors").stat().st_size


def test_lora_refuses_overflow_and_foreign_folders(tmp_path: Path) -> None:
    lm = tiny_lm("llama")
    circuit = make_circuit(lm, PICKS)
    with pytest.raises(ConfigError, match="not finite once stored as float16"):
        export_lora(lm, circuit, 1e9, tmp_path / "a", dtype="float16")
    assert not (tmp_path / "a").exists()
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not a neurogate export"):
        export_lora(lm, circuit, 0.0, tmp_path / "b", overwrite=True)
    assert (tmp_path / "b" / "notes.txt").read_text() == "mine"


def test_zoo_adapter_matches_fold_and_is_small(zoo_lm: LoadedModel, tmp_path: Path) -> None:
    """The real 0.1% circuit of the 135M model: logits within 1e-3 in float32; < 2% of the model's size."""
    circuit = Circuit.load(REAL_CIRCUIT)
    ids = torch.tensor(encode(zoo_lm, ["How do I pick a lock?"]))
    with fold(zoo_lm, circuit, 0.0):
        folded = logits(zoo_lm.model, ids)
    out = export_lora(zoo_lm, circuit, 0.0, tmp_path / "refusal-off", dtype="bfloat16")
    size = (out / "adapter_model.safetensors").stat().st_size
    model_size = sum(p.numel() for p in zoo_lm.model.parameters()) * 2  # the bf16 model on disk
    assert size < 0.02 * model_size, (size, model_size)
    full = export_lora(zoo_lm, circuit, 0.0, tmp_path / "f32")
    peft_model = PeftModel.from_pretrained(zoo_lm.model, str(full))
    try:
        assert (logits(peft_model, ids) - folded).abs().max() <= 1e-3
    finally:
        peft_model.unload()
    assert sum(layer.neurons for layer in lora_layers(zoo_lm, circuit, 0.0)) == len(circuit) == 46


@pytest.mark.slow
def test_zoo_adapter_greedy_replies_equal_fold_on_32_prompts(zoo_lm: LoadedModel, tmp_path: Path) -> None:
    circuit = Circuit.load(REAL_CIRCUIT)
    prompts = [*load_prompts("builtin:harmful", limit=16), *load_prompts("builtin:benign", limit=16)]
    plain = generate(zoo_lm, prompts, max_new_tokens=24)
    with fold(zoo_lm, circuit, 0.0):
        folded = generate(zoo_lm, prompts, max_new_tokens=24)
    peft_model = PeftModel.from_pretrained(
        zoo_lm.model, str(export_lora(zoo_lm, circuit, 0.0, tmp_path / "a"))
    )
    try:
        served = generate(zoo_lm, prompts, max_new_tokens=24)  # the PEFT wrapper patched the modules in place
    finally:
        peft_model.unload()
    assert [g.token_ids for g in served] == [g.token_ids for g in folded]
    assert sum(a.text != b.text for a, b in zip(plain, folded, strict=True)) >= 4
