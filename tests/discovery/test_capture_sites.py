"""The capture engine on every site kind, and its fallbacks when the shared-prefix cache cannot be used."""

from __future__ import annotations

import logging

import pytest
import torch

from neurogate.discovery import capture
from neurogate.discovery.capture import CaptureOptions, capture_values, collect_stats_many, last_token_values
from neurogate.models import prefix as prefix_mod
from neurogate.models.hooks import hook_site
from neurogate.models.inputs import encode
from neurogate.models.loading import LoadedModel
from neurogate.models.tiny import tiny_lm

PROMPTS = ["name a colour", "how tall is a giraffe?", "say hello in French", "count to three"]


def _reference(lm: LoadedModel, prompts: list[str], site: str) -> torch.Tensor:
    """Each prompt alone, full forward pass, the site read at its last token by a plain forward hook."""
    out = []
    for seq in encode(lm, prompts):
        seen: dict[int, torch.Tensor] = {}
        handles = []
        for layer in range(lm.adapter.n_layers):

            def read(x: torch.Tensor, layer: int = layer, seen: dict[int, torch.Tensor] = seen) -> None:
                seen[layer] = x[0, -1].float().clone()

            handles.append(hook_site(lm, f"blocks.{layer}.{site}", read))
        try:
            with torch.no_grad():
                lm.model(input_ids=torch.tensor([seq]))
        finally:
            for h in handles:
                h.remove()
        out.append(torch.stack([seen[i] for i in range(lm.adapter.n_layers)]))
    return torch.stack(out)


@pytest.mark.parametrize("family", ["llama", "gemma2", "gpt2", "gpt_neox"])
@pytest.mark.parametrize("site", ["mlp.post", "resid_pre", "attn.out", "resid_post"])
def test_every_site_kind_matches_one_prompt_at_a_time(family: str, site: str) -> None:
    lm = tiny_lm(family)
    got = capture_values(lm, PROMPTS, site, CaptureOptions(progress=False, batch_size=3))  # type: ignore[arg-type]
    torch.testing.assert_close(got, _reference(lm, PROMPTS, site), atol=1e-4, rtol=1e-4)


def test_two_kinds_in_one_pass_equal_two_passes(lm: LoadedModel) -> None:
    both = last_token_values(lm, encode(lm, PROMPTS), ("mlp.post", "resid_post"))
    alone = last_token_values(lm, encode(lm, PROMPTS), ("resid_post",))
    torch.testing.assert_close(both["resid_post"], alone["resid_post"])
    assert both["mlp.post"].shape == (len(PROMPTS), lm.adapter.n_layers, lm.adapter.d_mlp)


def test_failing_prefix_cache_falls_back_to_full_prompts(
    lm: LoadedModel, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    opts = CaptureOptions(progress=False)
    expected = collect_stats_many(lm, [PROMPTS], options=CaptureOptions(progress=False, reuse_prefix=False))

    class Broken:
        def __init__(self, **_: object) -> None:
            raise TypeError("this cache type is not supported")

    monkeypatch.setattr(prefix_mod, "DynamicCache", Broken)
    with caplog.at_level(logging.WARNING):
        got = collect_stats_many(lm, [PROMPTS], options=opts)
    assert "shared-prefix reuse is unavailable" in caplog.text
    torch.testing.assert_close(got[0]["mlp.post"].mean, expected[0]["mlp.post"].mean)


def test_sliding_window_shorter_than_prompts_skips_prefix_reuse(monkeypatch: pytest.MonkeyPatch) -> None:
    lm = tiny_lm("mistral")
    calls: list[int] = []
    original = capture.build_prefix

    def spy(*args: object, **kwargs: object) -> object:
        calls.append(1)
        return original(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(capture, "build_prefix", spy)
    lm.model.config.sliding_window = 4096
    collect_stats_many(lm, [PROMPTS], options=CaptureOptions(progress=False))
    assert calls, "with a long window the shared prefix is reused"
    calls.clear()
    lm.model.config.sliding_window = 4
    collect_stats_many(lm, [PROMPTS], options=CaptureOptions(progress=False))
    assert calls == []
