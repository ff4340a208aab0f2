"""GGUF export of a mixture-of-experts circuit: the folded ``ffn_down_exps`` (3-D, one slice per expert)
and ``ffn_down_shexp`` tensors equal the transformers fold; every other tensor is copied unchanged."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from gguf import GGUFReader, GGUFWriter

from neurogate.discovery.circuit import Circuit, Neuron
from neurogate.export.gguf import changed_tensors, export_gguf
from neurogate.models.loading import LoadedModel
from neurogate.models.moe import down_weights
from neurogate.models.tiny import D_EXPERT, tiny_lm
from neurogate.steering import fold

ARCH = {"qwen2_moe": "qwen2moe", "qwen3_moe": "qwen3moe", "mixtral": "llama", "olmoe": "olmoe"}


def gguf_of(lm: LoadedModel, path: Path) -> Path:
    """The tiny model's down-projections in llama.cpp's layout (F32), with the metadata that gives the
    shape, plus one unrelated tensor per layer."""
    arch = ARCH[lm.adapter.family]
    layout = lm.adapter.moe
    assert layout is not None
    writer = GGUFWriter(path, arch)
    writer.add_uint32(f"{arch}.block_count", lm.adapter.n_layers)
    writer.add_uint32(f"{arch}.embedding_length", lm.adapter.d_model)
    writer.add_uint32(f"{arch}.expert_count", layout.n_experts)
    writer.add_uint32(f"{arch}.expert_feed_forward_length", layout.d_expert)
    if layout.d_shared:
        writer.add_uint32(f"{arch}.expert_shared_feed_forward_length", layout.d_shared)
    for layer in range(lm.adapter.n_layers):
        weights = [w.numpy().copy() for w in down_weights(lm.adapter.down_proj(layer))]
        writer.add_tensor(f"blk.{layer}.ffn_down_exps.weight", np.stack(weights[: layout.n_experts]))
        if layout.d_shared:
            writer.add_tensor(f"blk.{layer}.ffn_down_shexp.weight", weights[-1])
        writer.add_tensor(f"blk.{layer}.attn_norm.weight", np.ones(lm.adapter.d_model, dtype=np.float32))
    writer.write_header_to_file(path)
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.mark.parametrize("family", ["qwen2_moe", "mixtral", "qwen3_moe", "olmoe"])
def test_gguf_export_folds_each_expert_like_transformers(family: str, tmp_path: Path) -> None:
    lm = tiny_lm(family)
    last = lm.adapter.d_mlp - 1
    chosen = [(0, 2), (0, 3 * D_EXPERT + 1), (2, D_EXPERT + 4), (2, last)]
    neurons = [Neuron(layer, index, 1.0, 1.0, 1.0, 0.0) for layer, index in chosen]
    circuit = Circuit(neurons=neurons, model={"spec": family, "shape": lm.shape})
    factors = torch.tensor([0.0, 2.0, -1.0, 3.0])
    source = gguf_of(lm, tmp_path / "tiny.gguf")
    out = export_gguf(source, circuit, factors, tmp_path / "steered.gguf", store="f16")
    changed = set(changed_tensors(source, out))
    expected = {"blk.0.ffn_down_exps.weight", "blk.2.ffn_down_exps.weight"}
    if lm.adapter.moe and lm.adapter.moe.d_shared:
        expected = {"blk.0.ffn_down_exps.weight", "blk.2.ffn_down_shexp.weight"} | {
            "blk.2.ffn_down_exps.weight"
        }
    assert changed == expected
    read = {t.name: t for t in GGUFReader(out).tensors}
    with fold(lm, circuit, factors):
        for layer in (0, 2):
            folded = down_weights(lm.adapter.down_proj(layer))
            exps = np.asarray(read[f"blk.{layer}.ffn_down_exps.weight"].data, dtype=np.float32)
            want = torch.stack(folded[:4]).numpy()
            assert exps.shape == want.shape
            assert np.allclose(exps, want, rtol=1e-3, atol=1e-4)  # stored as F16
            if lm.adapter.moe and lm.adapter.moe.d_shared and layer == 2:
                shexp = np.asarray(read["blk.2.ffn_down_shexp.weight"].data, dtype=np.float32)
                assert np.allclose(shexp, folded[-1].numpy(), rtol=1e-3, atol=1e-4)
