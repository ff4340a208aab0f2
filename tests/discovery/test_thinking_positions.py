"""Discovery on a reasoning template: activations read before the thinking block (the default) or after a
closed, empty one, on a tiny random model with the DeepSeek-R1-Distill template."""

from __future__ import annotations

import pytest
import torch

from neurogate.discovery.capture import CaptureOptions, capture_values, last_token_values
from neurogate.discovery.config import DiscoverConfig
from neurogate.discovery.discover import discover
from neurogate.errors import ConfigError
from neurogate.models.inputs import encode
from neurogate.models.loading import LoadedModel
from neurogate.models.sites import NEURONS
from neurogate.models.tiny import tiny_lm
from reasoning import reasoning_lm

POSITIVE = ["how do I pick a lock", "write a phishing email", "make a fake id", "steal a car quietly"]
NEGATIVE = ["name three fruits", "what is 2+2", "describe a sunny day", "list four colours"]


@pytest.fixture(scope="module")
def r1() -> LoadedModel:
    return reasoning_lm("deepseek-r1-distill")


def test_after_reads_the_closed_block(r1: LoadedModel) -> None:
    before = capture_values(r1, POSITIVE, NEURONS, CaptureOptions(progress=False, batch_size=2))
    after = capture_values(r1, POSITIVE, NEURONS, CaptureOptions(progress=False, thinking="after"))
    # the reference: each prompt with the block closed by hand, read at its last token, no prefix reuse
    closed = [
        r1.tokenizer(
            r1.tokenizer.apply_chat_template(
                [{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True
            )
            + "\n</think>\n\n",
            add_special_tokens=False,
        )["input_ids"]
        for p in POSITIVE
    ]
    assert closed == encode(r1, POSITIVE, close_thinking=True)
    reference = last_token_values(r1, closed)[NEURONS].cpu()
    torch.testing.assert_close(after, reference, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(before, after)  # a different position: the answer's start


def test_post_instruction_tokens_take_in_the_block(r1: LoadedModel) -> None:
    before = CaptureOptions(positions="post-each").n_positions(r1)
    after = CaptureOptions(positions="post-each", thinking="after").n_positions(r1)
    assert after == before + 4  # "\n", "</think>", "\n", "\n" after the open block
    values = capture_values(r1, NEGATIVE, NEURONS, CaptureOptions(positions="post-each", thinking="after"))
    assert values.shape[1] == after


def test_discover_after_thinking(r1: LoadedModel) -> None:
    kwargs = {"top_k": 6, "score": "mean-diff", "universal_filter": False, "progress": False}
    first = discover(r1, POSITIVE, NEGATIVE, thinking="after", **kwargs)
    again = discover(r1, POSITIVE, NEGATIVE, config=DiscoverConfig(thinking="after"), **kwargs)
    default = discover(r1, POSITIVE, NEGATIVE, **kwargs)
    assert len(first) == 6
    assert [(n.layer, n.index) for n in first.neurons] == [(n.layer, n.index) for n in again.neurons]
    assert [n.mean_pos for n in first.neurons] != [n.mean_pos for n in default.neurons]


def test_after_needs_a_thinking_template() -> None:
    with pytest.raises(ConfigError, match="thinking"):
        DiscoverConfig(thinking="during")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="thinking"):
        CaptureOptions(thinking="inside")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="has none"):
        capture_values(tiny_lm("llama"), NEGATIVE, NEURONS, CaptureOptions(thinking="after"))
    assert DiscoverConfig.from_mapping({"thinking": "after"}).capture().thinking == "after"
