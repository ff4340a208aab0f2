"""CAA as a llama.cpp control vector: the file holds ``direction.{L} = -s v``, and adding it after layer L
(llama.cpp's rule) reproduces neurogate's CAA."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from gguf import GGUFReader

from neurogate.discovery.directions import ResidualDirections
from neurogate.errors import ConfigError
from neurogate.export.control_vector import export_control_vector, read_control_vector
from neurogate.models.loading import LoadedModel
from neurogate.steering.residual import ActivationAddition, add_vector

IDS = torch.tensor([[1, 5, 9, 20, 33, 7]])


def directions_for(lm: LoadedModel, best: int = 1) -> ResidualDirections:
    diffs = torch.randn(lm.adapter.n_layers, lm.adapter.d_model)
    return ResidualDirections(
        diffs=diffs,
        best_layer=best,
        separation=[0.9] * lm.adapter.n_layers,
        model={"spec": lm.spec, "shape": lm.shape},
    )


def logits(lm: LoadedModel) -> torch.Tensor:
    with torch.no_grad():
        return lm.model(input_ids=IDS).logits


def test_control_vector_reproduces_caa(lm: LoadedModel, tmp_path: Path) -> None:
    directions = directions_for(lm)
    out = export_control_vector(directions, tmp_path / "caa.gguf", strength=0.7, model_hint="llama")
    reader = GGUFReader(out)
    assert reader.get_field("general.architecture").contents() == "controlvector"  # type: ignore[union-attr]
    assert reader.get_field("controlvector.model_hint").contents() == "llama"  # type: ignore[union-attr]
    assert reader.get_field("controlvector.layer_count").contents() == lm.adapter.n_layers  # type: ignore[union-attr]
    vectors = read_control_vector(out)
    assert list(vectors) == [1]
    assert np.allclose(vectors[1], -0.7 * directions.vector(1).numpy())
    with ActivationAddition(lm, directions, 0.7).attach():
        caa = logits(lm)
    with add_vector(lm, 1, torch.from_numpy(vectors[1])):  # what llama.cpp does with direction.1
        served = logits(lm)
    assert (served - caa).abs().max() <= 1e-6
    assert (caa - logits(lm)).abs().max() > 1e-3


def test_control_vector_layer_choice_and_refusals(lm: LoadedModel, tmp_path: Path) -> None:
    directions = directions_for(lm, best=0)
    with pytest.raises(ConfigError, match="cannot act after layer 0"):
        export_control_vector(directions, tmp_path / "a.gguf")
    out = export_control_vector(directions, tmp_path / "a.gguf", layer=2)
    assert list(read_control_vector(out)) == [2]
    with pytest.raises(ConfigError, match="exists"):
        export_control_vector(directions, out, layer=2)
    with pytest.raises(ConfigError, match="outside"):
        export_control_vector(directions, tmp_path / "b.gguf", layer=9)
