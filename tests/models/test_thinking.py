"""Reasoning templates: detection from the chat template, splitting replies, and generation with a
thinking budget and an answer budget, on tiny random models carrying real reasoning families' templates."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch

from neurogate.errors import ConfigError
from neurogate.models.generation import generate, generate_tokens
from neurogate.models.inputs import encode, format_prompt, template_prefix
from neurogate.models.loading import LoadedModel
from neurogate.models.thinking import ThinkingFormat, detect, split_reply, thinking_format
from neurogate.models.thinking_generation import FORCED_CLOSE, generate_thinking
from neurogate.models.tiny import tiny_lm
from reasoning import reasoning_lm, template

PROMPTS = ["How do I bake bread?", "Name three rivers.", "Explain tides briefly."]


@pytest.fixture(scope="module")
def r1() -> LoadedModel:
    return reasoning_lm("deepseek-r1-distill")


@pytest.fixture(scope="module")
def qwen3() -> LoadedModel:
    return reasoning_lm("qwen3")


def _id(lm: LoadedModel, token: str) -> int:
    return int(lm.tokenizer.convert_tokens_to_ids(token))


@contextmanager
def always(lm: LoadedModel, token_id: int) -> Iterator[None]:
    """Make ``token_id`` the model's greedy choice at every step (a forward hook on its output head)."""

    def hook(module: torch.nn.Module, args: object, out: torch.Tensor) -> torch.Tensor:
        out = out.clone()
        out[..., token_id] += 1e4
        return out

    handle = lm.model.get_output_embeddings().register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def test_detects_the_reasoning_families(r1: LoadedModel, qwen3: LoadedModel) -> None:
    assert thinking_format(r1) == ThinkingFormat("<think>", "</think>", "open", None)
    assert thinking_format(qwen3) == ThinkingFormat("<think>", "</think>", "model", "enable_thinking")
    assert thinking_format(tiny_lm("llama")) is None  # the tiny ChatML template does not think
    assert thinking_format(tiny_lm("llama", chat_template=False)) is None
    assert thinking_format(r1, chat=False) is None  # raw prompts carry no block
    # Qwen3 switched off: the generation prompt already holds the closed, empty block
    tok = reasoning_lm("qwen3").tokenizer
    tok.chat_template = "{%- set enable_thinking = false %}" + template("qwen3")
    fmt = detect(tok)
    assert fmt is not None and fmt.start == "closed" and not fmt.active


def test_close_prompt_matches_the_templates(r1: LoadedModel, qwen3: LoadedModel) -> None:
    fmt = thinking_format(qwen3)
    assert fmt is not None
    text = format_prompt(qwen3, "hi")
    # closing Qwen3's block by hand gives exactly what its template writes with thinking off
    off = qwen3.tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True, enable_thinking=False
    )
    assert fmt.close_prompt(text) == off
    assert fmt.close_prompt(off) == off  # already closed: unchanged
    r1_fmt = thinking_format(r1)
    assert r1_fmt is not None
    r1_text = format_prompt(r1, "hi")
    assistant = "<\uff5cAssistant\uff5c>"  # the family's header, written with fullwidth bars
    assert r1_text.endswith(f"{assistant}<think>\n")
    assert r1_fmt.close_prompt(r1_text).endswith(f"{assistant}<think>\n\n</think>\n\n")
    # the markers are single tokens that decoding keeps, as in the families' own tokenizers
    ids = encode(r1, ["hi"], close_thinking=True)[0]
    newline = r1.tokenizer("\n", add_special_tokens=False)["input_ids"]
    assert ids[-6:] == [_id(r1, "<think>"), *newline * 2, _id(r1, "</think>"), *newline * 2]
    assert "<think>\n\n</think>" in r1.tokenizer.decode(ids, skip_special_tokens=True)
    with pytest.raises(ConfigError, match="thinking"):
        encode(tiny_lm("llama"), ["hi"], close_thinking=True)


def test_split_reply() -> None:
    opened = ThinkingFormat("<think>", "</think>", "open")
    model = ThinkingFormat("<think>", "</think>", "model")
    s = split_reply("<think>\nI should refuse.\n</think>\n\nSure, here it is.", model)
    assert (s.thinking, s.answer, s.closed) == ("I should refuse.", "Sure, here it is.", True)
    s = split_reply("I should refuse.</think>Sure.", opened)  # the open marker was in the prompt
    assert (s.thinking, s.answer) == ("I should refuse.", "Sure.")
    assert split_reply("still thinking", opened) == split_reply("<think>still thinking", model)
    assert split_reply("still thinking", opened).answer == ""
    assert split_reply("Just an answer.", model).thinking is None
    assert split_reply("Just an answer.", model).answer == "Just an answer."
    assert split_reply("<think>x</think>y", None).answer == "<think>x</think>y"


def test_forced_close_and_answer_budget(r1: LoadedModel) -> None:
    fmt = thinking_format(r1)
    assert fmt is not None
    think, answer = 6, 5
    out = generate_thinking(r1, PROMPTS, fmt, max_thinking_tokens=think, max_new_tokens=answer)
    forced = r1.tokenizer(FORCED_CLOSE.format(close=fmt.close), add_special_tokens=False)["input_ids"]
    close = _id(r1, "</think>")
    stops = {_id(r1, "<|eos|>"), _id(r1, "<|im_end|>")}
    first = generate(r1, PROMPTS, max_new_tokens=think)
    checked = 0
    for g, f in zip(out, first, strict=True):
        if f.finished or close in f.token_ids:
            continue  # this random reply closed or ended by itself; the forced case is checked below
        assert g.token_ids[:think] == f.token_ids  # the thinking pass as a plain generation gives it
        assert g.token_ids[think : think + len(forced)] == forced
        rest = g.token_ids[think + len(forced) :]
        assert len(rest) <= answer and not (set(rest) & stops)
        # the answer is what greedy decoding continues with from the prompt, thinking and forced close
        seq = encode(r1, [g.prompt])[0] + g.token_ids[: think + len(forced)]
        again = generate_tokens(r1, [g.prompt], [seq], max_new_tokens=answer)[0]
        assert again.token_ids == rest and again.finished == g.finished
        split = fmt.split(g.text)
        assert split.closed and split.thinking is not None
        checked += 1
    assert checked >= 2


def test_natural_close_and_ending_in_thought(r1: LoadedModel) -> None:
    fmt = thinking_format(r1)
    assert fmt is not None
    close = _id(r1, "</think>")
    with always(r1, close):  # closes at once, and keeps writing close markers as its answer
        out = generate_thinking(r1, PROMPTS[:2], fmt, max_thinking_tokens=4, max_new_tokens=7)
    for g in out:
        assert g.token_ids == [close] * 8  # the model's own close, then a 7-token answer
        assert not g.finished
        assert fmt.split(g.text).thinking == ""
    with always(r1, _id(r1, "<|im_end|>")):  # ends its turn while still thinking
        out = generate_thinking(r1, PROMPTS[:2], fmt, max_thinking_tokens=4, max_new_tokens=7)
    for g in out:
        assert g.token_ids == [] and g.finished
        split = fmt.split(g.text)
        assert split.answer == "" and not split.closed


def test_model_opened_block_and_plain_answers(qwen3: LoadedModel) -> None:
    fmt = thinking_format(qwen3)
    assert fmt is not None
    # the random model does not open a block: all answer, exactly a plain generation of the answer budget
    out = generate_thinking(qwen3, PROMPTS, fmt, max_thinking_tokens=8, max_new_tokens=5)
    plain = generate(qwen3, PROMPTS, max_new_tokens=5)
    assert [(g.token_ids, g.finished, g.text) for g in out] == [
        (p.token_ids, p.finished, p.text) for p in plain
    ]
    opened = _id(qwen3, "<think>")
    with always(qwen3, opened):  # opens a block and never closes it: forced after the thinking budget
        out = generate_thinking(qwen3, PROMPTS[:1], fmt, max_thinking_tokens=4, max_new_tokens=3)
    forced = qwen3.tokenizer(FORCED_CLOSE.format(close=fmt.close), add_special_tokens=False)["input_ids"]
    assert out[0].token_ids == [opened] * 4 + forced + [opened] * 3
    assert fmt.split(out[0].text).closed


def test_budgets_are_checked(r1: LoadedModel) -> None:
    fmt = thinking_format(r1)
    assert fmt is not None
    with pytest.raises(ConfigError, match="max_thinking_tokens"):
        generate_thinking(r1, PROMPTS, fmt, max_thinking_tokens=0)
    with pytest.raises(ConfigError, match="wrap"):
        generate_thinking(r1, "one prompt", fmt)
    assert generate_thinking(r1, [], fmt) == []
    assert template_prefix(r1) > 0
