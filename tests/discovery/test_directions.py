"""Residual difference-of-means directions and best-layer selection."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from neurogate.discovery import directions
from neurogate.discovery.capture import CaptureOptions
from neurogate.discovery.directions import (
    ResidualDirections,
    candidate_layers,
    compute_directions,
    residual_last_token,
)
from neurogate.errors import ConfigError
from neurogate.models.loading import LoadedModel
from neurogate.models.tiny import tiny_lm
from neurogate.steering.registry import make
from reference import last_token_reference

POS = [f"tell me how to do harmful thing number {i}" for i in range(8)]
NEG = [f"what is a nice fact about the number {i}?" for i in range(8)]


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_residual_last_token_matches_unbatched_forward(family: str) -> None:
    lm = tiny_lm(family)
    prompts = ["short", "a somewhat longer prompt than the first", "x"]
    ref = last_token_reference(lm, prompts, "layers")
    batched = residual_last_token(lm, prompts, CaptureOptions(batch_size=3, progress=False))
    one = residual_last_token(lm, prompts[1:2], CaptureOptions(batch_size=1, progress=False))
    assert batched.shape == (3, 3, 64)
    assert torch.allclose(batched, ref, atol=1e-5)
    assert torch.allclose(one[0], ref[1], atol=1e-5)
    # each layer's output differs from the next one's, so reading the wrong layer would be caught
    assert (ref[:, 1:] - ref[:, :-1]).abs().amax() > 1e-2


def test_compute_directions_diffs_and_best_layer(lm: LoadedModel) -> None:
    dirs = compute_directions(lm, POS, NEG, heldout_fraction=0.25)
    expected = last_token_reference(lm, POS, "layers").mean(0) - last_token_reference(lm, NEG, "layers").mean(
        0
    )
    assert expected.abs().amax() > 1e-3  # the two sets really differ
    assert torch.allclose(dirs.diffs, expected, atol=1e-5)
    assert len(dirs.separation) == 3 and all(0.0 <= s <= 1.0 for s in dirs.separation)
    candidates = list(candidate_layers(len(dirs.separation)))
    assert candidates == [0, 1]  # 3 layers: the last 20% (layer 2) is not a candidate
    best = max(dirs.separation[i] for i in candidates)
    assert dirs.best_layer in candidates and dirs.separation[dirs.best_layer] == best
    assert all(dirs.separation[i] < best for i in candidates if i > dirs.best_layer)  # ties -> later layer
    assert dirs.model == {"spec": lm.spec, "shape": lm.shape} and dirs.n_positive == 8
    assert torch.allclose(dirs.unit().norm(), torch.tensor(1.0))


def planted(
    monkeypatch: pytest.MonkeyPatch, separated: tuple[int, ...], n_layers: int = 3
) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace the residual capture by planted values: in each layer of ``separated`` the positive prompts
    sit at +2 and the negative ones at -2 on the first axis (with per-prompt jitter on the second axis); in
    every other layer all prompts have the same vector, so no threshold can separate them."""
    jitter = torch.linspace(-1.0, 1.0, len(POS))
    pos = torch.zeros(len(POS), n_layers, 4)
    neg = torch.zeros(len(NEG), n_layers, 4)
    pos[:, :, 1] = jitter[:, None]
    neg[:, :, 1] = jitter.flip(0)[:, None]
    for layer in separated:
        pos[:, layer, 0] = 2.0
        neg[:, layer, 0] = -2.0
    for layer in set(range(n_layers)) - set(separated):
        pos[:, layer] = neg[:, layer] = torch.tensor([0.5, 0.0, 0.0, 1.0])

    def fake(_lm: LoadedModel, prompts: list[str], kind: str, _options: object) -> torch.Tensor:
        assert kind == "resid_post"
        return pos.clone() if list(prompts) == POS else neg.clone()

    monkeypatch.setattr(directions, "capture_values", fake)
    return pos, neg


# ties go to the later layer; layer 2 (the last 20%) is never a candidate
@pytest.mark.parametrize(("separated", "best"), [((1,), 1), ((0,), 0), ((0, 1), 1), ((0, 2), 0)])
def test_best_layer_of_a_hand_built_case(
    lm: LoadedModel, monkeypatch: pytest.MonkeyPatch, separated: tuple[int, ...], best: int
) -> None:
    planted(monkeypatch, separated)
    dirs = compute_directions(lm, POS, NEG, heldout_fraction=0.25)
    # a separated layer classifies every held-out prompt right; an inseparable one only the negatives
    # (projection == threshold counts as negative): 2 of the 4 held-out prompts
    assert dirs.separation == [1.0 if i in separated else 0.5 for i in range(3)]
    assert dirs.best_layer == best
    for layer in range(3):
        expected = [4.0, 0.0, 0.0, 0.0] if layer in separated else [0.0, 0.0, 0.0, 0.0]
        assert torch.allclose(dirs.diffs[layer], torch.tensor(expected), atol=1e-6)


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
