"""The ablation-direction scorer: neurons ranked by how far their down-projection column writes along one
residual direction, times their mean change."""

from __future__ import annotations

import pytest
import torch

from neurogate.discovery.scoring import SCORERS, Evidence, ablation_direction, score, separating_layer
from neurogate.discovery.stats import SiteStats
from neurogate.errors import ConfigError
from neurogate.models.sites import NEURONS, RESIDUAL
from neurogate.models.tiny import tiny_lm


def _stats(mean: torch.Tensor, n: int = 8, var: float = 1.0) -> SiteStats:
    mean = mean.double()
    return SiteStats(n, mean, torch.full_like(mean, var * (n - 1)), mean.abs())


def test_the_neuron_most_aligned_with_the_direction_ranks_first() -> None:
    torch.manual_seed(0)
    lm = tiny_lm("llama")
    n_layers, d_mlp, d_model = lm.adapter.n_layers, lm.adapter.d_mlp, lm.adapter.d_model
    direction = torch.zeros(d_model)
    direction[3] = 2.0  # not unit: the scorer normalises it
    star = (1, 5)
    with torch.no_grad():
        for layer in range(n_layers):
            weight = lm.adapter.down_proj(layer).weight  # [d_model, d_mlp]
            columns = torch.randn(d_model, d_mlp)
            columns[3] = 0.3 * columns[3].clamp(-1, 1)  # every other column only partly along it
            weight.copy_(columns / columns.norm(dim=0, keepdim=True))
        lm.adapter.down_proj(star[0]).weight[:, star[1]] = direction / direction.norm()  # the aligned one
    ones, zeros = torch.ones(n_layers, d_mlp), torch.zeros(n_layers, d_mlp)  # every neuron changes by 1
    resid = torch.zeros(n_layers, d_model)
    evidence = Evidence(
        {NEURONS: _stats(ones), RESIDUAL: _stats(resid)}, {NEURONS: _stats(zeros), RESIDUAL: _stats(resid)}
    )
    rank, signed = score(evidence, "ablation-direction", lm=lm, direction=direction)
    flat = int(rank.flatten().argmax())
    assert divmod(flat, d_mlp) == star and float(signed[star]) == pytest.approx(1.0)
    w = lm.adapter.down_proj(0).weight.detach().double()
    torch.testing.assert_close(signed[0], w[3] * 1.0)  # (mean_pos - mean_neg) * <W_down[:, j], d>
    # a neuron that changes the other way writes against the direction: it leads only under "negative"
    neg_mean = ones.clone()
    neg_mean[star] = -1.0
    flipped = Evidence(
        {NEURONS: _stats(neg_mean), RESIDUAL: _stats(resid)},
        {NEURONS: _stats(zeros), RESIDUAL: _stats(resid)},
    )
    negative, _ = score(flipped, "ablation-direction", lm=lm, direction=direction, sign="negative")
    assert divmod(int(negative.flatten().argmax()), d_mlp) == star
    # without a direction given, the residual mean difference at the best-separating layer is used
    pos_resid = resid.clone()
    pos_resid[0] = direction  # layer 0 separates the two sets, along the same direction
    own = Evidence(
        {NEURONS: _stats(ones), RESIDUAL: _stats(pos_resid)},
        {NEURONS: _stats(zeros), RESIDUAL: _stats(resid)},
    )
    assert separating_layer(own) == 0
    torch.testing.assert_close(ablation_direction(own), direction.double())
    torch.testing.assert_close(score(own, "ablation-direction", lm=lm)[1], signed)
    with pytest.raises(ConfigError, match="pass the model"):
        score(own, "ablation-direction")
    with pytest.raises(ConfigError, match="has 3 values"):
        score(own, "ablation-direction", lm=lm, direction=torch.ones(3))
    # other scorers ignore a direction; this one is in the registry with a one-line summary
    torch.testing.assert_close(score(own, "mean-diff", direction=direction)[1], own.diff)
    assert "\n" not in SCORERS["ablation-direction"].summary
