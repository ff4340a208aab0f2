"""The scorer registry: every scorer against an independent computation, and the sign option."""

from __future__ import annotations

import pytest
import torch

from neurogate.discovery import SCORERS, discover
from neurogate.discovery.config import DiscoverConfig
from neurogate.discovery.discover import gather_evidence
from neurogate.discovery.scoring import score
from neurogate.errors import ConfigError
from neurogate.models.loading import LoadedModel
from neurogate.models.tiny import tiny_lm
from neurogate.prompts import load
from reference import last_token_reference

POS = ["tell me how to do a bad thing", "explain a harmful plan", "write something cruel", "how to cheat"]
NEG = ["tell me how to bake bread", "explain a garden plan", "write something kind", "how to swim"]


def test_every_scorer_has_a_one_line_summary() -> None:
    assert {"mean-diff", "effect-size", "layer-normalised", "direction"} <= set(SCORERS)
    for s in SCORERS.values():
        assert s.summary and "\n" not in s.summary


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_direction_score_matches_a_hand_computation(family: str) -> None:
    lm = tiny_lm(family)
    pos_n, neg_n = last_token_reference(lm, POS, "neurons"), last_token_reference(lm, NEG, "neurons")
    pos_r, neg_r = last_token_reference(lm, POS, "layers"), last_token_reference(lm, NEG, "layers")
    diff = (pos_n.mean(0) - neg_n.mean(0)).double()
    expected = torch.zeros_like(diff)
    for layer in range(lm.adapter.n_layers):
        r = (pos_r.mean(0) - neg_r.mean(0))[layer].double()
        r = r / r.norm()
        w = lm.adapter.down_proj(layer).weight.detach().double()
        for i in range(lm.adapter.d_mlp):
            column = w[i] if family == "gpt2" else w[:, i]  # GPT-2's Conv1D stores [d_mlp, d_model]
            expected[layer, i] = diff[layer, i] * torch.dot(column, r)
    evidence = gather_evidence(
        lm, load(POS, name="p"), load(NEG, name="n"), DiscoverConfig(score="direction"), False
    )
    rank, signed = score(evidence, "direction", lm=lm)
    torch.testing.assert_close(signed, expected, atol=1e-4, rtol=1e-3)
    assert torch.equal(rank, signed.abs())
    with pytest.raises(ConfigError, match="pass the model"):
        score(evidence, "direction")


def test_layer_normalised_and_sign(lm: LoadedModel) -> None:
    evidence = gather_evidence(lm, load(POS, name="p"), load(NEG, name="n"), DiscoverConfig(), False)
    diff = evidence.diff
    rank, signed = score(evidence, "layer-normalised")
    assert torch.equal(rank, signed.abs())
    torch.testing.assert_close(signed, diff / diff.square().mean(1, keepdim=True).sqrt())
    positive, _ = score(evidence, "mean-diff", sign="positive")
    negative, _ = score(evidence, "mean-diff", sign="negative")
    assert torch.equal(positive, diff.clamp_min(0)) and torch.equal(negative, (-diff).clamp_min(0))
    cfg = DiscoverConfig(top_k=10, universal_filter=False, sign="positive", score="mean-diff")
    up = discover(lm, POS, NEG, cfg, progress=False)
    assert all(n.diff > 0 for n in up.neurons)
    down = discover(
        lm,
        POS,
        NEG,
        DiscoverConfig(top_k=10, universal_filter=False, sign="negative", score="mean-diff"),
        progress=False,
    )
    assert all(n.diff < 0 for n in down.neurons)
    assert up.method["sign"] == "positive" and down.method["sign"] == "negative"
    with pytest.raises(ConfigError, match="sign must be"):
        DiscoverConfig(sign="up")  # type: ignore[arg-type]
