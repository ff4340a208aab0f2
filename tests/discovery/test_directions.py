"""Residual difference-of-means directions and best-layer selection."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from neurogate.discovery.directions import ResidualDirections, candidate_layers, compute_directions, residual_last_token
from neurogate.errors import ConfigError
from neurogate.steering.registry import make
from neurogate.models.loading import LoadedModel

POS = [f"tell me how to do harmful thing number {i}" for i in range(8)]
NEG = [f"what is a nice fact about the number {i}?" for i in range(8)]


def test_residual_last_token_matches_unbatched_forward(lm: LoadedModel) -> None:
    prompts = ["short", "a somewhat longer prompt than the first"]
    batched = residual_last_token(lm, prompts, batch_size=2)
    one = residual_last_token(lm, prompts[1:], batch_size=1)
    assert batched.shape == (2, 3, 64)
    assert torch.allclose(batched[1], one[0], atol=1e-5)


def test_compute_directions_diffs_and_best_layer(lm: LoadedModel) -> None:
    dirs = compute_directions(lm, POS, NEG, heldout_fraction=0.25)
    acts_pos = residual_last_token(lm, POS)
    acts_neg = residual_last_token(lm, NEG)
    assert torch.allclose(dirs.diffs, acts_pos.mean(0) - acts_neg.mean(0), atol=1e-5)
    assert len(dirs.separation) == 3 and all(0.0 <= s <= 1.0 for s in dirs.separation)
    candidates = list(candidate_layers(len(dirs.separation)))
    assert candidates == [0, 1]  # 3 layers: the last 20% (layer 2) is not a candidate
    best = max(dirs.separation[i] for i in candidates)
    assert dirs.best_layer in candidates and dirs.separation[dirs.best_layer] == best
    assert all(dirs.separation[i] < best for i in candidates if i > dirs.best_layer)  # ties -> later layer
    assert dirs.model["fingerprint"] == lm.fingerprint and dirs.n_positive == 8
    assert torch.allclose(dirs.unit().norm(), torch.tensor(1.0))


def test_directions_save_and_load(lm: LoadedModel, tmp_path: Path) -> None:
    dirs = compute_directions(lm, POS[:4], NEG[:4])
    path = dirs.save(tmp_path / "d.safetensors")
    back = ResidualDirections.load(path)
    assert torch.equal(back.diffs, dirs.diffs) and back.best_layer == dirs.best_layer
    assert back.separation == dirs.separation and back.model == dirs.model


def test_bad_inputs_raise_config_errors(lm: LoadedModel) -> None:
    with pytest.raises(ConfigError):
        compute_directions(lm, [], NEG)
    with pytest.raises(ConfigError):
        compute_directions(lm, POS, NEG, heldout_fraction=1.0)
    with pytest.raises(ConfigError, match="layers"):
        make("caa", lm, ResidualDirections(torch.zeros(5, 64), 0, [0.5] * 5), 1.0)
    with pytest.raises(ConfigError, match="outside"):
        ResidualDirections(torch.zeros(3, 64), 3, [0.5] * 3)


def test_caa_and_ablation_from_computed_directions_change_output(lm: LoadedModel) -> None:
    dirs = compute_directions(lm, POS, NEG)
    ids = torch.tensor([lm.tokenizer("hello")["input_ids"]])
    with torch.no_grad():
        plain = lm.model(input_ids=ids).logits
        for kind in ("caa", "ablation"):
            with make(kind, lm, dirs, 1.0):  # type: ignore[arg-type]
                assert not torch.allclose(lm.model(input_ids=ids).logits, plain)
            with make(kind, lm, dirs, 0.0):  # type: ignore[arg-type]
                assert torch.allclose(lm.model(input_ids=ids).logits, plain, atol=1e-6)
