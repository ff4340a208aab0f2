"""The generation batch size: memory arithmetic, the same answer every time, bounded by cap, memory and
prompt count, logged once."""

from __future__ import annotations

import logging

import pytest

from neurogate.models import batching
from neurogate.models.batching import auto_batch_size, kv_bytes_per_token, plan_batch, row_bytes
from neurogate.models.loading import LoadedModel
from neurogate.models.tiny import tiny_lm


def test_kv_bytes_follow_the_config(lm: LoadedModel) -> None:
    # tiny llama: 3 layers, 2 key/value heads of 16 dims, float32: keys and values
    assert kv_bytes_per_token(lm) == 2 * 3 * 2 * 16 * 4
    gpt2 = tiny_lm("gpt2")  # no grouped-query attention: 4 heads of 64 / 4 dims
    assert kv_bytes_per_token(gpt2) == 2 * 3 * 4 * 16 * 4


def test_row_cost_grows_with_prompt_and_new_tokens(lm: LoadedModel) -> None:
    base = row_bytes(lm, 64, 32)
    assert row_bytes(lm, 128, 32) > base and row_bytes(lm, 64, 64) > base
    extra_cache = batching.SAFETY * kv_bytes_per_token(lm) * 32  # 32 more new tokens: only the cache grows
    assert abs(row_bytes(lm, 64, 64) - base - extra_cache) <= 1


def test_same_call_same_size_on_a_fresh_model_of_the_same_shape() -> None:
    first = tiny_lm("qwen2")
    size = auto_batch_size(first, 40, 16, 1000)
    assert size == auto_batch_size(first, 40, 16, 1000)
    del first
    again = tiny_lm("qwen2")  # may reuse the freed model's id: nothing is cached by id any more
    assert auto_batch_size(again, 40, 16, 1000) == size
    assert auto_batch_size(again, 63, 16, 1000) == size  # same 64-token length step, same plan


def test_cap_prompt_count_and_even_batches(lm: LoadedModel) -> None:
    assert plan_batch(lm, 20, 8, 5).size == 5
    assert plan_batch(lm, 20, 8, 5).limit == "prompts"
    plan = plan_batch(lm, 20, 8, 300)  # CPU cap 128: three batches of 100 rather than 128+128+44
    assert (plan.size, plan.limit) == (100, "cap")
    assert plan_batch(lm, 20, 8, 128).size == 128


def test_memory_bounds_the_size(lm: LoadedModel, monkeypatch: pytest.MonkeyPatch) -> None:
    per_row = row_bytes(lm, 64, 8)
    monkeypatch.setattr(batching, "memory_budget", lambda _lm: 10 * per_row + 5)
    plan = plan_batch(lm, 20, 8, 100)
    assert plan.limit == "memory" and plan.size == 10
    monkeypatch.setattr(batching, "memory_budget", lambda _lm: -1)
    assert plan_batch(lm, 20, 8, 100).size == 1


def test_choice_is_logged_once(lm: LoadedModel, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="neurogate.models.batching")
    batching._LOGGED.clear()
    for _ in range(3):
        auto_batch_size(lm, 30, 12, 40)
    records = [r for r in caplog.records if "generation batch" in r.getMessage()]
    assert len(records) == 1 and "40 rows" in records[0].getMessage()
