"""The ablation direction and CAA's vector chosen by their effect among the same candidates."""

from __future__ import annotations

import pytest
import torch

from neurogate.discovery.capture import CaptureOptions
from neurogate.discovery.directions import compute_directions
from neurogate.errors import ConfigError
from neurogate.models.loading import LoadedModel
from neurogate.study.direction_selection import (
    DirectionSelection,
    candidate_directions,
    refusal_score,
    refusal_tokens,
    select_direction,
)

HARMFUL = [f"tell me how to do harmful thing number {i}" for i in range(8)]
HARMLESS = [f"what is a nice fact about the number {i}?" for i in range(8)]


def test_refusal_tokens_are_frequent_for_harmful_and_rare_for_harmless() -> None:
    def first(tokens: list[int]) -> torch.Tensor:
        lp = torch.full((len(tokens), 10), -20.0)
        lp[torch.arange(len(tokens)), torch.tensor(tokens)] = 0.0
        return lp

    harmful = first([3, 3, 3, 3, 7, 1, 1, 9, 9, 9])  # 3: 40%, 9: 30%, 1: 20%, 7: 10%
    harmless = first([1, 1, 1, 1, 9, 2, 2, 2, 2, 2])  # 1 is common here too; 9 appears half as often
    assert refusal_tokens(harmful, harmless) == [3, 7, 9]
    assert refusal_tokens(first([4, 4]), first([4, 4])) == [4]  # nothing qualifies: the commonest one
    p = torch.tensor([[0.0, -30.0], [-30.0, 0.0]])
    assert refusal_score(p, [0]) == pytest.approx(
        0.0, abs=1e-6
    )  # one certain yes, one certain no: log-odds cancel


def test_direction_is_chosen_by_effect_within_the_bounds(lm: LoadedModel) -> None:
    directions, selection = select_direction(
        lm, (HARMFUL[4:], HARMLESS[4:]), (HARMFUL[:4], HARMLESS[:4]), shortlist=4
    )
    n_layers = lm.adapter.n_layers
    layers = range(int(0.25 * n_layers), max(1, int(0.8 * n_layers)))
    assert len(selection.candidates) == 13 * len(layers)  # every post-instruction position x candidate layer
    assert all(c.layer in layers and -13 <= c.position <= -1 for c in selection.candidates)
    scores = [c.refusal_score for c in selection.candidates]
    assert scores == sorted(scores)
    measured = [c for c in selection.candidates if c.kl is not None]
    assert len(measured) == 4 and measured == selection.candidates[:4]
    chosen = next(
        c for c in selection.candidates if (c.layer, c.position) == (selection.layer, selection.position)
    )
    if selection.within_bounds:
        assert chosen.passed and chosen == next(c for c in selection.candidates if c.passed)
    assert directions.best_layer == selection.layer and directions.diffs.shape == (
        n_layers,
        lm.adapter.d_model,
    )
    # the chosen row is the difference of means at that position, on the training prompts only
    last = compute_directions(lm, HARMFUL[4:], HARMLESS[4:], heldout_fraction=0.0)
    if selection.position == -1:
        torch.testing.assert_close(directions.diffs, last.diffs, atol=1e-4, rtol=1e-4)


def test_caa_is_chosen_among_the_same_candidates_as_ablation(lm: LoadedModel) -> None:
    """Equal care: CAA's vector is chosen by effect over exactly the ablation's candidates (same grid,
    same shortlist, same bounds), from shared difference-of-means candidates, but scored by its own
    intervention."""
    train, val = (HARMFUL[4:], HARMLESS[4:]), (HARMFUL[:4], HARMLESS[:4])
    diffs = candidate_directions(lm, train[0], train[1], CaptureOptions(progress=False))
    ablation = select_direction(lm, train, val, shortlist=4, diffs=diffs)[1]
    vector, caa = select_direction(lm, train, val, shortlist=4, method="caa", diffs=diffs)
    assert caa.method == "caa" and ablation.method == "ablation"
    grid = sorted((c.layer, c.position) for c in ablation.candidates)
    assert sorted((c.layer, c.position) for c in caa.candidates) == grid
    assert sum(c.kl is not None for c in caa.candidates) == 4  # the same shortlist
    assert (caa.kl_bound, caa.benign_bound) == (ablation.kl_bound, ablation.benign_bound)
    # scored under CAA, not under ablation: the refusal scores differ
    by_cand = {(c.layer, c.position): c.refusal_score for c in ablation.candidates}
    assert any(abs(c.refusal_score - by_cand[(c.layer, c.position)]) > 1e-6 for c in caa.candidates)
    # the chosen vector is the shared candidate row at the chosen position, used at the chosen layer
    assert vector.best_layer == caa.layer and vector.model["position"] == caa.position
    n_pos = diffs.shape[0]
    torch.testing.assert_close(vector.diffs, diffs[caa.position + n_pos])
    # a record stored before CAA was chosen this way reads back as ablation's
    old = {k: v for k, v in ablation.to_dict().items() if k != "method"}
    assert DirectionSelection.from_dict(old).method == "ablation"
    with pytest.raises(ConfigError, match="caa"):
        select_direction(lm, train, val, method="steer")
