"""Activation capture: last-token values, padding on either side, prefix reuse, hooks, batching."""

from __future__ import annotations

import logging

import pytest
import torch

from neurogate.discovery import capture, recorder
from neurogate.discovery import stats as stats_module
from neurogate.discovery.capture import CaptureOptions
from neurogate.discovery.stats import SiteStats
from neurogate.errors import ConfigError, PromptSetError
from neurogate.models import inputs
from neurogate.models.inputs import BatchSize
from neurogate.models.loading import LoadedModel
from neurogate.models.prefix import MIN_PREFIX
from neurogate.models.sites import SiteKind
from neurogate.models.tiny import tiny_lm
from reference import last_token_reference

PROMPTS = [
    "hello there",
    "how do I bake bread at home?",
    "x",
    "write a short poem about the sea and the sky",
    "tell me a joke",
    "what is 2 + 2?",
    "name three rivers in Europe",
    "why is the sky blue?",
    "translate 'cat' into French",
    "list the planets",
]
FAMILIES = ("llama", "qwen2", "gemma3", "gpt2", "gpt_neox", "phi3")
QUIET = CaptureOptions(progress=False)
RAW = CaptureOptions(chat=False, progress=False)


def hook_count(lm: LoadedModel) -> int:
    return sum(len(lm.adapter.down_proj(i)._forward_pre_hooks) for i in range(lm.adapter.n_layers))


def assert_close_rel(a: torch.Tensor, b: torch.Tensor, rel: float = 1e-4) -> None:
    scale = b.abs().max().item()
    assert scale > 0
    assert (a - b).abs().max().item() <= rel * scale


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("reuse_prefix", [False, True])
def test_stats_match_one_prompt_at_a_time(family: str, reuse_prefix: bool) -> None:
    lm = tiny_lm(family)
    ref = last_token_reference(lm, PROMPTS, "neurons")
    stats = capture.collect_stats(
        lm, PROMPTS, options=CaptureOptions(batch_size=4, progress=False, reuse_prefix=reuse_prefix)
    )
    assert stats.n == len(PROMPTS)
    assert_close_rel(stats.mean, ref.mean(0))
    assert_close_rel(stats.var, ref.var(0), rel=1e-3)


@pytest.mark.parametrize("batch_size", [1, 3, 8, "auto"])
def test_batch_size_does_not_change_stats(lm: LoadedModel, batch_size: BatchSize) -> None:
    ref = last_token_reference(lm, PROMPTS, "neurons").mean(0)
    for reuse in (False, True):
        options = CaptureOptions(batch_size=batch_size, progress=False, reuse_prefix=reuse)
        stats = capture.collect_stats(lm, PROMPTS, options=options)
        assert_close_rel(stats.mean, ref)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_right_padded_batch_read_at_last_real_token_matches_left_padding(family: str) -> None:
    lm = tiny_lm(family)
    seqs = inputs.encode(lm, PROMPTS[:5])
    left = capture.last_token_values(lm, seqs)["mlp.post"]
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), 0, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for r, seq in enumerate(seqs):
        ids[r, : len(seq)] = torch.tensor(seq)
        mask[r, : len(seq)] = 1
    last = torch.tensor([len(s) - 1 for s in seqs])
    with torch.inference_mode(), recorder.recording(lm) as rec:
        right = rec.run(ids, mask, last)
    assert set(right) == {"mlp.post"}
    assert_close_rel(right["mlp.post"], left)
    # reading the pad position instead would give other values: the index matters
    with torch.inference_mode(), recorder.recording(lm) as rec:
        wrong = rec.run(ids, mask, torch.full_like(last, width - 1))["mlp.post"]
    assert (wrong - left).abs().max() > 1e-3


@pytest.mark.parametrize("family", ["llama", "gemma3", "gpt2"])
def test_several_site_kinds_in_one_pass_match_one_prompt_at_a_time(family: str) -> None:
    lm = tiny_lm(family)
    prompts = PROMPTS[:5]
    neurons, stream = (
        last_token_reference(lm, prompts, "neurons"),
        last_token_reference(lm, prompts, "layers"),
    )
    kinds: tuple[SiteKind, ...] = ("resid_pre", "mlp.post", "resid_post")
    values = capture.last_token_values(lm, inputs.encode(lm, prompts), kinds)
    assert set(values) == set(kinds)
    assert values["mlp.post"].shape == (5, 3, 96) and values["resid_post"].shape == (5, 3, 64)
    assert_close_rel(values["mlp.post"], neurons)
    assert_close_rel(values["resid_post"], stream)
    assert_close_rel(values["resid_pre"][:, 1:], stream[:, :-1])  # layer L's input is layer L-1's output
    sizes: tuple[BatchSize, ...] = (2, "auto")
    for batch_size in sizes:
        for reuse in (False, True):
            options = CaptureOptions(batch_size=batch_size, progress=False, reuse_prefix=reuse)
            [stats] = capture.collect_stats_many(lm, [prompts], ("mlp.post", "resid_post"), options)
            assert_close_rel(stats["mlp.post"].mean, neurons.mean(0))
            assert_close_rel(stats["resid_post"].mean, stream.mean(0))
            assert_close_rel(stats["resid_post"].var, stream.var(0), rel=1e-3)
            kept = capture.capture_values(lm, prompts, "resid_post", options)
            assert_close_rel(kept, stream)  # every prompt, in prompt order


def test_hooks_removed_after_success_and_after_an_exception(lm: LoadedModel) -> None:
    capture.collect_stats(lm, PROMPTS[:3], options=QUIET)
    assert hook_count(lm) == 0
    bad = torch.tensor([[10_000, 1, 2]])  # out of the vocabulary: the embedding raises
    with pytest.raises(IndexError), torch.inference_mode(), recorder.recording(lm) as rec:
        assert hook_count(lm) == lm.adapter.n_layers
        rec.run(bad, torch.ones_like(bad), torch.tensor([2]))
    assert hook_count(lm) == 0


def test_lm_head_and_final_norm_never_run(lm: LoadedModel) -> None:
    fired: list[str] = []
    head = lm.model.get_output_embeddings()
    assert head is not None
    handles = [
        head.register_forward_hook(lambda *_: fired.append("lm_head")),
        lm.model.model.norm.register_forward_hook(lambda *_: fired.append("norm")),
    ]
    try:
        stats = capture.collect_stats(lm, PROMPTS, options=QUIET)
    finally:
        for h in handles:
            h.remove()
    assert stats.n == len(PROMPTS)
    assert fired == []


def test_prefix_is_found_and_reused(lm: LoadedModel) -> None:
    seqs = inputs.encode(lm, PROMPTS)
    n = inputs.shared_prefix(seqs)
    assert n >= MIN_PREFIX  # "<|im_start|>user\n" is shared by every chat-formatted prompt
    assert all(s[:n] == seqs[0][:n] for s in seqs)
    calls: list[int] = []
    handle = lm.model.register_forward_pre_hook(
        lambda _m, _a, kw: calls.append(kw["input_ids"].shape[1]), with_kwargs=True
    )
    try:
        capture.collect_stats(lm, PROMPTS, options=CaptureOptions(batch_size=len(PROMPTS), progress=False))
    finally:
        handle.remove()
    longest = max(len(s) for s in seqs)
    assert calls == [n, longest - n]  # one pass over the prefix, one over the suffixes


def test_shared_prefix_leaves_a_token_for_every_sequence() -> None:
    assert inputs.shared_prefix([[1, 2, 3], [1, 2, 3, 4]]) == 2
    assert inputs.shared_prefix([[1, 2], [3, 4]]) == 0
    assert inputs.shared_prefix([]) == 0


def test_plan_batches_sorts_by_length_and_respects_the_budget() -> None:
    lengths = [5, 1, 9, 3, 7]
    cpu = torch.device("cpu")
    assert inputs.plan_batches(lengths, 2, cpu) == [[1, 3], [0, 4], [2]]
    many = [100] * 100
    batches = inputs.plan_batches(many, "auto", cpu)
    budget, rows = inputs.token_budget(cpu)
    assert sorted(i for b in batches for i in b) == list(range(100))
    assert all(len(b) * 100 <= budget and len(b) <= rows for b in batches)
    for bad in (0, -1, 2.5, "big"):
        with pytest.raises(ConfigError):
            inputs.plan_batches(lengths, bad, cpu)  # type: ignore[arg-type]


def test_long_prompt_is_truncated_from_the_left_with_a_warning(
    lm: LoadedModel, caplog: pytest.LogCaptureFixture
) -> None:
    long_prompt = "lorem ipsum " * 40 + "the end"  # > 256 byte tokens: longer than the tiny context
    with caplog.at_level(logging.WARNING):
        stats = capture.collect_stats(lm, [long_prompt, "short"], options=QUIET)
    assert any("exceeds the limit" in r.message for r in caplog.records)
    seqs = inputs.encode(lm, [long_prompt, "short"])
    assert len(seqs[0]) == 256
    ref = capture.last_token_values(lm, seqs)["mlp.post"].mean(0)
    assert_close_rel(stats.mean, ref)


def test_empty_input_is_a_prompt_set_error(lm: LoadedModel) -> None:
    with pytest.raises(PromptSetError):
        capture.collect_stats(lm, [], options=QUIET)
    raw = tiny_lm("llama", chat_template=False)
    with pytest.raises(PromptSetError, match="tokenizes to nothing"):
        capture.collect_stats(raw, ["fine", ""], options=RAW)


def test_raw_text_model_runs_the_plain_path() -> None:
    raw = tiny_lm("llama", chat_template=False)
    ref = last_token_reference(raw, PROMPTS[:4], "neurons").mean(0)
    stats = capture.collect_stats(raw, PROMPTS[:4], options=RAW)
    assert_close_rel(stats.mean, ref)


def test_prefix_reuse_matches_plain_path_on_a_real_model(zoo_lm: LoadedModel) -> None:
    prompts = PROMPTS[:6]
    seqs = inputs.encode(zoo_lm, prompts)
    assert inputs.shared_prefix(seqs) >= MIN_PREFIX
    plain = capture.collect_stats(zoo_lm, prompts, options=CaptureOptions(progress=False, reuse_prefix=False))
    reused = capture.collect_stats(zoo_lm, prompts, options=CaptureOptions(progress=False, reuse_prefix=True))
    assert_close_rel(reused.mean, plain.mean)
    assert_close_rel(reused.var, plain.var, rel=1e-3)


def test_several_sets_in_one_pass_equal_separate_passes(lm: LoadedModel) -> None:
    first, second = PROMPTS[:4], PROMPTS[4:]
    together = capture.collect_stats_many(
        lm, [first, second], options=CaptureOptions(batch_size=3, progress=False)
    )
    for prompts, by_kind in zip((first, second), together, strict=True):
        assert set(by_kind) == {"mlp.post"}
        stats = by_kind["mlp.post"]
        alone = capture.collect_stats(lm, prompts, options=QUIET)
        assert stats.n == len(prompts)
        assert_close_rel(stats.mean, alone.mean)
        assert_close_rel(stats.var, alone.var, rel=1e-3)


def test_stats_updated_a_few_layers_at_a_time_equal_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    values = [torch.randn(5, 7, 11) * 3 + 40, torch.randn(3, 7, 11)]
    whole, sliced = SiteStats.zeros(7, 11), SiteStats.zeros(7, 11)
    for v in values:
        whole.update(v)
    monkeypatch.setattr(stats_module, "UPDATE_ELEMENTS", 2 * 5 * 11)  # two layers per slice, last one short
    for v in values:
        sliced.update(v)
    assert sliced.n == whole.n == 8
    assert torch.equal(sliced.mean, whole.mean) and torch.equal(sliced.m2, whole.m2)
    everything = torch.cat(values).double()
    assert torch.allclose(whole.mean, everything.mean(0)) and torch.allclose(whole.var, everything.var(0))
