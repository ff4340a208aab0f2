"""GGUF export: only the circuit's down-projections change (folded, F16/BF16); every other tensor and all
metadata are copied as they were; the file reads back with the gguf reader and transformers' GGUF loader."""

from __future__ import annotations

import gc
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType, GGUFReader, GGUFWriter, quants

from neurogate.discovery.circuit import Circuit, Neuron
from neurogate.errors import CircuitError, ConfigError, ModelLoadError
from neurogate.export.gguf import changed_tensors, export_gguf
from neurogate.models import zoo
from neurogate.models.inputs import encode
from neurogate.models.loading import load_model
from neurogate.steering import fold

Q = GGMLQuantizationType
SHAPE = {"family": "llama", "model_type": "llama", "n_layers": 3, "d_mlp": 64, "d_model": 32}
PICKS = [(0, 3), (0, 40), (2, 63)]


def circuit_of(picks: Sequence[tuple[int, int]], shape: dict[str, object] = SHAPE) -> Circuit:
    neurons = [Neuron(layer, index, 1.0, 1.0, 1.0, 0.0) for layer, index in picks]
    return Circuit(neurons=neurons, model={"spec": "tiny.gguf", "shape": dict(shape)})


@pytest.fixture
def tiny_gguf(tmp_path: Path) -> Path:
    """A small llama-shaped GGUF with quantized, F16 and F32 tensors and assorted metadata."""
    rng = np.random.default_rng(0)
    path = tmp_path / "tiny.gguf"
    writer = GGUFWriter(path, "llama")
    writer.add_custom_alignment(64)
    writer.add_uint32("llama.block_count", 3)
    writer.add_uint32("llama.feed_forward_length", 64)
    writer.add_uint32("llama.embedding_length", 32)
    writer.add_float32("llama.attention.layer_norm_rms_epsilon", 1e-5)
    writer.add_string("general.name", "tiny")
    writer.add_bool("tokenizer.ggml.add_bos_token", True)
    writer.add_array("tokenizer.ggml.tokens", ["<s>", "</s>", "a", "b"])
    writer.add_array("tokenizer.ggml.scores", [0.0, -1.5, -2.0, -2.5])

    def quantized(rows: int, cols: int, qtype: GGMLQuantizationType) -> np.ndarray:
        return np.asarray(quants.quantize(rng.normal(0, 0.05, (rows, cols)).astype(np.float32), qtype))

    writer.add_tensor("token_embd.weight", quantized(4, 32, Q.Q8_0), raw_dtype=Q.Q8_0)
    for layer in range(3):
        writer.add_tensor(f"blk.{layer}.attn_norm.weight", rng.normal(1, 0.1, 32).astype(np.float32))
        writer.add_tensor(f"blk.{layer}.ffn_up.weight", quantized(64, 32, Q.Q4_0), raw_dtype=Q.Q4_0)
        writer.add_tensor(f"blk.{layer}.ffn_down.weight", quantized(32, 64, Q.Q8_0), raw_dtype=Q.Q8_0)
        writer.add_tensor(f"blk.{layer}.ffn_gate.weight", rng.normal(0, 0.05, (64, 32)).astype(np.float16))
    writer.write_header_to_file(path)
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def fields(reader: GGUFReader) -> dict[str, object]:
    return {name: f.contents() for name, f in reader.fields.items() if not name.startswith("GGUF.")}


def dequantized(reader: GGUFReader, name: str) -> np.ndarray:
    tensor = next(t for t in reader.tensors if t.name == name)
    return np.asarray(quants.dequantize(tensor.data, tensor.tensor_type)).reshape(32, 64)


@pytest.mark.parametrize("store", ["f16", "bf16"])
def test_gguf_copy_changes_only_the_folded_tensors(tiny_gguf: Path, tmp_path: Path, store: str) -> None:
    circuit = circuit_of(PICKS)
    out = export_gguf(
        tiny_gguf, circuit, {(0, 3): 0.0, (0, 40): 2.0, (2, 63): -0.5}, tmp_path / "o.gguf", store=store
    )
    assert sorted(changed_tensors(tiny_gguf, out)) == ["blk.0.ffn_down.weight", "blk.2.ffn_down.weight"]
    src, new = GGUFReader(tiny_gguf), GGUFReader(out)
    meta = fields(new)
    assert json.loads(str(meta.pop("neurogate.export")))["per_layer"] == {"0": 2, "2": 1}
    assert meta == fields(src) and new.alignment == src.alignment == 64
    for layer, factors in ((0, {3: 0.0, 40: 2.0}), (2, {63: -0.5})):
        expected = dequantized(src, f"blk.{layer}.ffn_down.weight").copy()
        for index, factor in factors.items():
            expected[:, index] *= factor
        tensor = next(t for t in new.tensors if t.name == f"blk.{layer}.ffn_down.weight")
        assert tensor.tensor_type == (Q.F16 if store == "f16" else Q.BF16)
        stored = expected.astype(np.float16) if store == "f16" else quants.quantize(expected, Q.BF16)
        assert np.array_equal(
            dequantized(new, tensor.name), quants.dequantize(np.asarray(stored), tensor.tensor_type)
        )
        assert (dequantized(new, tensor.name)[:, 3 if layer == 0 else 63] == 0).all() == (layer == 0)


def test_gguf_export_refuses_bad_input(tiny_gguf: Path, tmp_path: Path) -> None:
    circuit = circuit_of(PICKS)
    with pytest.raises(CircuitError, match="d_mlp"):
        export_gguf(tiny_gguf, circuit_of([(0, 1)], {**SHAPE, "d_mlp": 128}), 0.0, tmp_path / "a.gguf")
    with pytest.raises(ConfigError, match="not finite once stored as float16"):
        export_gguf(tiny_gguf, circuit, 1e9, tmp_path / "a.gguf")
    with pytest.raises(ConfigError, match="f16 or bf16"):
        export_gguf(tiny_gguf, circuit, 0.0, tmp_path / "a.gguf", store="q4")
    with pytest.raises(ModelLoadError, match="does not exist"):
        export_gguf(tmp_path / "missing.gguf", circuit, 0.0, tmp_path / "a.gguf")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.gguf"]  # nothing half-written
    notes = tmp_path / "notes.gguf"
    notes.write_text("not a model")
    with pytest.raises(ConfigError, match="exists; pass overwrite"):
        export_gguf(tiny_gguf, circuit, 0.0, notes)
    with pytest.raises(ConfigError, match="not a GGUF file"):
        export_gguf(tiny_gguf, circuit, 0.0, notes, overwrite=True)
    assert notes.read_text() == "not a model"
    first = export_gguf(tiny_gguf, circuit, 0.0, tmp_path / "b.gguf")
    export_gguf(tiny_gguf, circuit, 0.5, first, overwrite=True)
    assert "0.5" in str(fields(GGUFReader(first))["neurogate.export"])


def _zoo_round_trip(name: str, circuit: Circuit, tmp_path: Path) -> None:
    """Export ``circuit`` at m = 0.3 from the zoo GGUF; compare with folding the same GGUF in transformers."""
    source = zoo.ensure_gguf(name)
    out = export_gguf(source, circuit, 0.3, tmp_path / "steered.gguf")
    touched = {f"blk.{layer}.ffn_down.weight" for layer in circuit.per_layer()}
    assert set(changed_tensors(source, out)) == touched
    lm = load_model(str(source), dtype="float32", device="cpu")
    ids = torch.tensor(encode(lm, ["<|im_start|>user\nHow do I bake bread?<|im_end|>\n"], chat=False))
    with torch.no_grad(), fold(lm, circuit, 0.3):
        reference = lm.model(input_ids=ids).logits
    del lm
    gc.collect()
    steered = load_model(str(out), dtype="float32", device="cpu")
    with torch.no_grad():
        got = steered.model(input_ids=ids).logits
    assert (got - reference).abs().max() <= 1e-3 * reference.abs().max()


@pytest.mark.slow
def test_zoo_135m_gguf_export_loads_in_transformers_with_the_folds_logits(tmp_path: Path) -> None:
    circuit = Circuit.load(Path(__file__).parents[1] / "serving" / "data" / "smollm2-refusal-circuit.json")
    _zoo_round_trip("smollm2-135m-instruct", circuit, tmp_path)


@pytest.mark.slow
def test_zoo_1_5b_gguf_export_loads_in_transformers_with_the_folds_logits(tmp_path: Path) -> None:
    shape = {"family": "qwen2", "model_type": "qwen2", "n_layers": 28, "d_mlp": 8960, "d_model": 1536}
    picks = [(layer, (97 * layer + 31 * k) % 8960) for layer in range(14, 28) for k in range(18)]  # 0.1%
    _zoo_round_trip("qwen2.5-coder-1.5b-instruct", circuit_of(picks, shape), tmp_path)
