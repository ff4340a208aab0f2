"""Reading the template's post-instruction tokens: how many there are, and that each position mode equals
a plain per-prompt computation (with and without the shared-prefix cache)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from neurogate.discovery import discover
from neurogate.discovery.capture import CaptureOptions, capture_values, collect_stats_many
from neurogate.discovery.config import DiscoverConfig
from neurogate.discovery.discover import gather_evidence
from neurogate.discovery.scoring import Evidence
from neurogate.discovery.stats import SiteStats
from neurogate.errors import ConfigError
from neurogate.models.inputs import encode, post_instruction_tokens
from neurogate.models.loading import LoadedModel
from neurogate.models.tiny import tiny_lm
from neurogate.prompts import load

PROMPTS = ["name a colour", "how tall is a giraffe?", "say hello in French", "count to three please"]


def test_post_instruction_tokens_of_the_tiny_template(lm: LoadedModel) -> None:
    # "<|im_end|>", "\n", "<|im_start|>", "assistant" (9 byte tokens), "\n": 13 tokens after the message
    assert post_instruction_tokens(lm) == 13
    assert post_instruction_tokens(lm, chat=False) == 1
    assert post_instruction_tokens(tiny_lm("llama", chat_template=False)) == 1


def _reference(lm: LoadedModel, prompts: list[str], n_pos: int) -> torch.Tensor:
    """Each prompt alone: the down-projection input at its last ``n_pos`` tokens, [n, P, layers, d_mlp]."""
    rows = []
    for seq in encode(lm, prompts):
        seen: dict[int, torch.Tensor] = {}
        hooks = [
            lm.adapter.down_proj(i).register_forward_pre_hook(
                lambda _m, args, i=i, seen=seen: seen.__setitem__(i, args[0][0, -n_pos:].float().clone())
            )
            for i in range(lm.adapter.n_layers)
        ]
        try:
            with torch.no_grad():
                lm.model(torch.tensor([seq]))
        finally:
            for h in hooks:
                h.remove()
        rows.append(torch.stack([seen[i] for i in range(lm.adapter.n_layers)], dim=1))
    return torch.stack(rows)


@pytest.mark.parametrize("reuse_prefix", [True, False])
def test_every_position_mode_matches_one_prompt_at_a_time(lm: LoadedModel, reuse_prefix: bool) -> None:
    ref = _reference(lm, PROMPTS, 13)
    expected = {"post-each": ref, "post-mean": ref.mean(1), "post-max": ref.amax(1), "last": ref[:, -1]}
    for mode, want in expected.items():
        opts = CaptureOptions(progress=False, batch_size=3, reuse_prefix=reuse_prefix, positions=mode)  # type: ignore[arg-type]
        got = capture_values(lm, PROMPTS, "mlp.post", opts)
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4, msg=mode)


def test_statistics_refuse_unreduced_positions(lm: LoadedModel) -> None:
    with pytest.raises(ConfigError, match="one value per prompt"):
        collect_stats_many(lm, [PROMPTS], options=CaptureOptions(progress=False, positions="post-each"))
    with pytest.raises(ConfigError, match="positions must be one of"):
        CaptureOptions(positions="first")  # type: ignore[arg-type]


def test_evidence_round_trips_and_replaces_the_forward_passes(lm: LoadedModel, tmp_path: Path) -> None:
    pos, neg = (
        load(PROMPTS, name="p"),
        load(["bake bread", "plant a tree", "sing a song", "paint a wall"], name="n"),
    )
    cfg = DiscoverConfig(top_k=7, universal_filter=False, score="mean-diff")
    evidence = gather_evidence(lm, pos, neg, cfg, progress=False)
    path = evidence.save(tmp_path / "stats.safetensors")
    again = Evidence.load(path)
    for side in ("positive", "negative"):
        a, b = getattr(evidence, side)["mlp.post"], getattr(again, side)["mlp.post"]
        assert (a.n, a.resolution) == (b.n, b.resolution)
        for name in ("mean", "m2", "abs_mean"):
            assert torch.equal(getattr(a, name).cpu(), getattr(b, name))
    fresh = discover(lm, pos, neg, cfg, progress=False)
    reused = discover(lm, pos, neg, cfg, progress=False, evidence=again)
    assert reused.neurons == fresh.neurons
    wrong = Evidence({"mlp.post": SiteStats.zeros(2, 5)}, {"mlp.post": SiteStats.zeros(2, 5)})
    with pytest.raises(ConfigError, match=r"statistics given are \[2, 5\]"):
        discover(lm, pos, neg, cfg, progress=False, evidence=wrong)
    without = Evidence({"resid_post": SiteStats.zeros(3, 64)}, {"resid_post": SiteStats.zeros(3, 64)})
    with pytest.raises(ConfigError, match="lack site kind"):
        discover(lm, pos, neg, cfg, progress=False, evidence=without)
