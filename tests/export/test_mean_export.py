"""Mean-ablation served without an MLP bias: a LoRA whose B side carries the constant (PEFT) and a folded
GGUF plus a llama.cpp control vector, each equal to the hooked model (``Circuit.apply(toward="mean")``)."""

from __future__ import annotations

import gc
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType, GGUFReader, GGUFWriter, quants
from peft import PeftModel
from safetensors.torch import load_file

from neurogate.discovery.circuit import Circuit, Neuron
from neurogate.errors import ConfigError
from neurogate.export.control_vector import read_control_vector
from neurogate.export.gguf import changed_tensors, export_gguf
from neurogate.export.lora import export_lora
from neurogate.export.mean_constant import export_gguf_mean, vector_path
from neurogate.models import zoo
from neurogate.models.inputs import encode
from neurogate.models.loading import LoadedModel, load_model
from neurogate.models.tiny import tiny_lm
from neurogate.steering.residual import add_vector

REAL_CIRCUIT = Path(__file__).parents[1] / "serving" / "data" / "smollm2-refusal-circuit.json"
IDS = torch.tensor([[1, 5, 9, 20, 33, 7, 2, 11]])
PICKS = [(1, 3), (1, 17), (2, 90), (2, 40)]
EPS32 = float(torch.finfo(torch.float32).eps)


def mean_circuit(lm: LoadedModel, picks: Sequence[tuple[int, int]]) -> Circuit:
    """Neurons with negative-prompt means of either sign, large enough to move the logits."""
    means = [1.5, -2.0, 0.75, 3.0, -1.25, 2.5]
    neurons = [
        Neuron(layer, index, 1.0, 1.0, 1.0, means[i % len(means)]) for i, (layer, index) in enumerate(picks)
    ]
    return Circuit(neurons=neurons, model={"spec": lm.spec, "shape": lm.shape}, method={"score": "test"})


def logits(model: torch.nn.Module, ids: torch.Tensor = IDS) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits.float()


def hooked(lm: LoadedModel, circuit: Circuit, m: float, ids: torch.Tensor = IDS) -> torch.Tensor:
    with circuit.apply(lm, m, toward="mean"):
        return logits(lm.model, ids)


# -- LoRA + bias --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["llama", "gpt2", "gemma3", "gpt_neox"])
@pytest.mark.parametrize("multiplier", [0.0, 0.5])
def test_lora_with_bias_equals_the_hooked_mean_ablation(
    tmp_path: Path, family: str, multiplier: float
) -> None:
    lm = tiny_lm(family)
    picks = [(0, 5), *PICKS]  # layer 0 is fine here: the bias sits on the layer's own down-projection
    circuit = mean_circuit(lm, picks)
    reference = hooked(lm, circuit, multiplier)
    with circuit.apply(lm, multiplier):  # the same m toward zero: the constant is what differs
        toward_zero = logits(lm.model)
    out = export_lora(lm, circuit, multiplier, tmp_path / "a", toward="mean")
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["lora_bias"] is True
    assert json.loads((out / "neurogate_export.json").read_text())["toward"] == "mean"
    biases = [k for k in load_file(str(out / "adapter_model.safetensors")) if k.endswith("lora_B.bias")]
    assert len(biases) == len(circuit.per_layer())
    peft_model = PeftModel.from_pretrained(lm.model, str(out))
    assert (logits(peft_model) - reference).abs().max() <= 1e-3
    assert (reference - toward_zero).abs().max() > 1e-3  # the constant matters
    if family in ("gpt2", "gpt_neox"):  # base layers with a bias: PEFT can merge the adapter's bias in
        assert (logits(peft_model.merge_and_unload()) - reference).abs().max() <= 1e-3


def test_cna_lora_config_is_unchanged_by_the_bias_option(tmp_path: Path) -> None:
    lm = tiny_lm("llama")
    out = export_lora(lm, mean_circuit(lm, PICKS), 0.0, tmp_path / "a")
    assert "lora_bias" not in json.loads((out / "adapter_config.json").read_text())
    assert not [k for k in load_file(str(out / "adapter_model.safetensors")) if k.endswith(".bias")]


def test_zoo_lora_with_bias_matches_the_hooked_model(zoo_lm: LoadedModel, tmp_path: Path) -> None:
    circuit = Circuit.load(REAL_CIRCUIT)
    ids = torch.tensor(encode(zoo_lm, ["How do I pick a lock?"]))
    reference = hooked(zoo_lm, circuit, 0.0, ids)
    out = export_lora(zoo_lm, circuit, 0.0, tmp_path / "mean", toward="mean")
    peft_model = PeftModel.from_pretrained(zoo_lm.model, str(out))
    try:
        assert (logits(peft_model, ids) - reference).abs().max() <= 1e-3
    finally:
        peft_model.unload()


# -- GGUF + control vector ----------------------------------------------------------------------------------


def gguf_of(lm: LoadedModel, path: Path, post_norm: bool = False) -> Path:
    """A GGUF holding ``lm``'s down-projections as F16 (and ``lm``'s weights set to those F16 values, so
    the file and the model agree exactly), with the shape metadata an export checks."""
    writer = GGUFWriter(path, "llama")
    writer.add_uint32("llama.block_count", lm.adapter.n_layers)
    writer.add_uint32("llama.feed_forward_length", lm.adapter.d_mlp)
    writer.add_uint32("llama.embedding_length", lm.adapter.d_model)
    for layer in range(lm.adapter.n_layers):
        weight = lm.adapter.down_proj(layer).weight
        half = weight.detach().to(torch.float16)
        with torch.no_grad():
            weight.copy_(half.float())
        writer.add_tensor(f"blk.{layer}.ffn_down.weight", half.numpy())
        if post_norm:
            writer.add_tensor(f"blk.{layer}.post_ffw_norm.weight", np.ones(lm.adapter.d_model, np.float32))
    writer.write_header_to_file(path)
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def read_folded(path: Path, layer: int) -> torch.Tensor:
    tensor = next(t for t in GGUFReader(path).tensors if t.name == f"blk.{layer}.ffn_down.weight")
    values = np.asarray(quants.dequantize(tensor.data, tensor.tensor_type), dtype=np.float32)
    return torch.from_numpy(values.reshape(-1, values.shape[-1]).copy())


@pytest.mark.parametrize("multiplier", [0.0, 0.5])
def test_gguf_and_control_vector_equal_the_hooked_mean_ablation(tmp_path: Path, multiplier: float) -> None:
    lm = tiny_lm("llama")
    source = gguf_of(lm, tmp_path / "tiny.gguf")
    circuit = mean_circuit(lm, PICKS)
    reference = hooked(lm, circuit, multiplier)
    model, vector = export_gguf_mean(source, circuit, multiplier, tmp_path / "steered.gguf")
    assert vector == vector_path(model) == tmp_path / "steered.control.gguf"
    cna = export_gguf(source, circuit, multiplier, tmp_path / "cna.gguf")
    assert changed_tensors(cna, model) == []  # the model file is the plain fold
    assert json.loads(str(GGUFReader(model).get_field("neurogate.export").contents()))["toward"] == "mean"  # type: ignore[union-attr]
    vectors = read_control_vector(vector)
    assert sorted(vectors) == [1, 2]
    served = tiny_lm("llama")  # the same weights (tiny_lm is seeded), then the file's folded tensors
    for layer in range(served.adapter.n_layers):
        with torch.no_grad():
            served.adapter.down_proj(layer).weight.copy_(read_folded(model, layer))
    handles = [add_vector(served, layer, torch.from_numpy(v)) for layer, v in vectors.items()]
    try:
        got = logits(served.model)
    finally:
        for handle in reversed(handles):
            handle.remove()
    # m in {0, 0.5} scales F16 weights exactly, so the two models differ only in float32 rounding: the hook
    # adds the constant inside each reordered down-projection sum (d_mlp terms, relative error up to
    # d_mlp * eps each), carried through n_layers layers. Bound: n_layers * d_mlp * eps * max |logit|.
    bound = lm.adapter.n_layers * lm.adapter.d_mlp * EPS32 * float(reference.abs().max())
    assert (got - reference).abs().max() <= bound
    assert (reference - logits(served.model)).abs().max() > 1e-3  # without the vector it differs


def test_gguf_mean_refuses_what_a_control_vector_cannot_carry(tmp_path: Path) -> None:
    lm = tiny_lm("llama")
    source = gguf_of(lm, tmp_path / "tiny.gguf")
    with pytest.raises(ConfigError, match=r"no slot for layer 0.*--kind cna"):
        export_gguf_mean(source, mean_circuit(lm, [(0, 4), *PICKS]), 0.0, tmp_path / "a.gguf")
    normed = gguf_of(lm, tmp_path / "normed.gguf", post_norm=True)
    with pytest.raises(ConfigError, match="post_ffw_norm"):
        export_gguf_mean(normed, mean_circuit(lm, PICKS), 0.0, tmp_path / "a.gguf")
    with pytest.raises(ConfigError, match="writes no constant"):
        export_gguf_mean(source, mean_circuit(lm, PICKS), 1.0, tmp_path / "a.gguf")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["normed.gguf", "tiny.gguf"]  # nothing written
    # a layer-0 neuron whose constant is zero (mean 0) needs no slot
    zero = mean_circuit(lm, PICKS)
    zero = Circuit(
        neurons=[Neuron(0, 4, 1.0, 1.0, 1.0, 0.0), *zero.neurons], model=zero.model, method=zero.method
    )
    _, vector = export_gguf_mean(source, zero, 0.0, tmp_path / "b.gguf")
    assert sorted(read_control_vector(vector)) == [1, 2]


@pytest.mark.slow
def test_zoo_gguf_and_control_vector_match_the_hooked_model(tmp_path: Path) -> None:
    circuit = Circuit.load(REAL_CIRCUIT)
    source = zoo.ensure_gguf("smollm2-135m-instruct")
    model, vector = export_gguf_mean(source, circuit, 0.0, tmp_path / "steered.gguf")
    lm = load_model(str(source), dtype="float32", device="cpu")
    ids = torch.tensor(encode(lm, ["<|im_start|>user\nHow do I pick a lock?<|im_end|>\n"], chat=False))
    reference = hooked(lm, circuit, 0.0, ids)
    del lm
    gc.collect()
    served = load_model(str(model), dtype="float32", device="cpu")
    vectors = read_control_vector(vector)
    handles = [add_vector(served, layer, torch.from_numpy(v)) for layer, v in vectors.items()]
    with torch.no_grad():
        got = served.model(input_ids=ids).logits
    for handle in reversed(handles):
        handle.remove()
    # The export stores each touched ffn_down as F16 (dequantized from the source's quantization, relative
    # rounding up to 2**-11 per weight): that, not float32, bounds the difference, at twice F16's unit
    # roundoff of the largest logit (the plain GGUF fold's own test allows the same 1e-3 relative).
    assert (got - reference).abs().max() <= 2 * 2**-11 * reference.abs().max()
    assert GGMLQuantizationType.F16 in {t.tensor_type for t in GGUFReader(model).tensors}


def test_cli_gguf_export_of_a_tuned_mean_circuit_writes_the_control_vector(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from neurogate.cli.main import app

    lm = tiny_lm("llama")
    source = gguf_of(lm, tmp_path / "tiny.gguf")
    circuit = mean_circuit(lm, PICKS)
    circuit.method["intervention"] = {"kind": "mean", "multiplier": 0.0}
    circuit.save(tmp_path / "tuned.json")
    args = ["export", "--format", "gguf", "--model", str(source), "--circuit", str(tmp_path / "tuned.json")]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "steered.gguf")])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "mean m=0" in text and "--control-vector" in text
    assert sorted(read_control_vector(tmp_path / "steered.control.gguf")) == [1, 2]
