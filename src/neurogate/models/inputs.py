"""Turning prompts into model input, the one path every stage uses: chat format -> tokens -> batches.

:func:`encode` formats each prompt with the model's chat template (user turn + generation prompt; raw
text when the tokenizer has none) and tokenizes it, keeping the *last* tokens of an over-long prompt.
:func:`plan_batches` groups sequences of similar length, and :func:`pad_left` pads a group on the left so
that every sequence's last token sits at position -1.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from neurogate.errors import ConfigError, PromptSetError
from neurogate.models.loading import LoadedModel
from neurogate.models.thinking import thinking_format

logger = logging.getLogger(__name__)

BatchSize = int | Literal["auto"]


def format_prompt(
    lm: LoadedModel, prompt: str, *, system_prompt: str | None = None, chat: bool = True
) -> str:
    """One prompt as the text the model sees: its chat template (user turn + generation prompt) when
    ``chat`` and the tokenizer has one, else the raw prompt (with the system prompt prepended, if any)."""
    if chat and lm.has_chat_template:
        messages = []
        if system_prompt is not None:
            messages.append({"role": "system", "content": system_prompt})
        messages.append({"role": "user", "content": prompt})
        text = lm.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return str(text)
    if chat:
        lm.note_once(
            "raw-prompts",
            f"{lm.spec}: no chat template, so prompts go in as raw text (pass chat=False to silence this)",
        )
    return prompt if system_prompt is None else f"{system_prompt}\n\n{prompt}"


def format_prompts(
    lm: LoadedModel, prompts: Sequence[str], *, system_prompt: str | None = None, chat: bool = True
) -> list[str]:
    """:func:`format_prompt` over a sequence, keeping order."""
    return [format_prompt(lm, p, system_prompt=system_prompt, chat=chat) for p in prompts]


def uses_template(lm: LoadedModel, chat: bool) -> bool:
    """Whether formatted texts already carry the special tokens (so tokenizing must not add more)."""
    return chat and lm.has_chat_template


def context_limit(lm: LoadedModel) -> int | None:
    """The model's maximum context in tokens, when the config states one."""
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(lm.model.config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def tokenize(lm: LoadedModel, text: str, *, templated: bool, max_length: int | None = None) -> list[int]:
    """Token ids of ``text``; longer than ``max_length`` (default: the context) keeps the *last* tokens,
    so the end of the prompt (where neurogate reads activations) survives, and warns."""
    ids: list[int] = lm.tokenizer(text, add_special_tokens=not templated)["input_ids"]
    limit = max_length or context_limit(lm)
    if limit is not None and len(ids) > limit:
        logger.warning(
            "a prompt of %d tokens exceeds the limit of %d; keeping its last %d tokens",
            len(ids),
            limit,
            limit,
        )
        ids = ids[-limit:]
    return ids


@dataclass
class Batch:
    """A left-padded batch: ``input_ids`` and ``attention_mask`` are ``[batch, pos]``."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor

    def to(self, device: torch.device) -> Batch:
        return Batch(self.input_ids.to(device), self.attention_mask.to(device))


def pad_left(sequences: Sequence[Sequence[int]], pad_id: int) -> Batch:
    """Left-pad token id lists into one batch, so every sequence's last real token is at position -1."""
    if not sequences:
        raise ValueError("pad_left needs at least one sequence")
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        if seq:
            ids[row, width - len(seq) :] = torch.tensor(list(seq), dtype=torch.long)
            mask[row, width - len(seq) :] = 1
    return Batch(ids, mask)


def pad_id(lm: LoadedModel) -> int:
    """The tokenizer's pad token id (the loader sets one when the tokenizer has none)."""
    pid = lm.tokenizer.pad_token_id
    if pid is None:
        pid = lm.tokenizer.eos_token_id
    return int(pid) if pid is not None else 0


def left_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids for a left-padded batch: each row counts from 0 at its first real token."""
    return (attention_mask.long().cumsum(-1) - 1).clamp_min(0)


def encode(
    lm: LoadedModel,
    prompts: Sequence[str],
    *,
    system_prompt: str | None = None,
    chat: bool = True,
    preformatted: bool = False,
    close_thinking: bool = False,
) -> list[list[int]]:
    """Token ids of each prompt as the model sees it (chat-formatted unless ``chat=False``; taken as
    model-ready text when ``preformatted``), truncated from the left beyond the context.
    ``close_thinking``: end each prompt with a closed, empty thinking block (a reasoning template's, see
    :mod:`neurogate.models.thinking`), so that its last token is where the answer starts."""
    if isinstance(prompts, str):
        raise PromptSetError("expected a sequence of prompts, got one string; wrap it in a list")
    if not prompts:
        raise PromptSetError("the prompt set is empty: give at least one prompt")
    if preformatted:
        texts, templated = list(prompts), lm.has_chat_template
    else:
        texts = format_prompts(lm, prompts, system_prompt=system_prompt, chat=chat)
        templated = uses_template(lm, chat)
    if close_thinking:
        texts = closed_thinking(lm, texts, chat=chat)
    seqs = [tokenize(lm, text, templated=templated) for text in texts]
    for i, seq in enumerate(seqs):
        if not seq:
            raise PromptSetError(f"prompt {i} tokenizes to nothing: remove empty prompts from the set")
    return seqs


def closed_thinking(lm: LoadedModel, texts: Sequence[str], *, chat: bool = True) -> list[str]:
    """Formatted prompts with the model's thinking block closed and empty at their end; a model whose
    chat template has no thinking block (or raw prompts) is refused with how to fix it."""
    fmt = thinking_format(lm, chat=chat)
    if fmt is None:
        raise ConfigError(
            f"{lm.spec}: reading after the thinking block needs a chat template with one (<think> ... "
            "</think>, as in Qwen3 or the DeepSeek-R1 distills); this model's has none: read before it "
            "(thinking = 'before')"
        )
    return [fmt.close_prompt(t) for t in texts]


def check_batch_size(batch_size: object, what: str = "batch_size") -> BatchSize:
    """Validate ``"auto"`` or a whole number >= 1."""
    if batch_size == "auto":
        return "auto"
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"{what} must be 'auto' or a whole number >= 1, got {batch_size!r}")
    return batch_size


def token_budget(device: torch.device) -> tuple[int, int]:
    """(tokens per batch, most rows per batch) for forward passes with ``batch_size="auto"``."""
    if device.type == "cuda":
        return 32_768, 256
    return 4_096, 128


def plan_batches(lengths: Sequence[int], batch_size: BatchSize, device: torch.device) -> list[list[int]]:
    """Group sequence indices into batches of similar length (sorted by length, so padding stays small).

    A fixed ``batch_size`` cuts the sorted order into equal groups; ``"auto"`` fills each batch up to a
    token budget that suits the device (:func:`token_budget`).
    """
    size = check_batch_size(batch_size)
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    if size != "auto":
        return [order[i : i + size] for i in range(0, len(order), size)]
    budget, max_rows = token_budget(device)
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        if current and ((len(current) + 1) * lengths[i] > budget or len(current) >= max_rows):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def left_padded(lm: LoadedModel, sequences: Sequence[Sequence[int]]) -> Batch:
    """:func:`pad_left` with the model's pad token, on the model's input device."""
    return pad_left(sequences, pad_id(lm)).to(lm.device)


_PROBES = ("x", "How are you today?", "Write two short sentences about rain.")


def post_instruction_tokens(
    lm: LoadedModel, *, system_prompt: str | None = None, chat: bool = True, close_thinking: bool = False
) -> int:
    """How many tokens the chat template puts after the user's message (its end-of-turn marker, the
    assistant header, ...; with ``close_thinking`` also the closed thinking block): the longest token
    suffix shared by a few formatted probe prompts. 1 (the last token) for raw prompts, or when the
    template puts nothing after the message."""
    if not uses_template(lm, chat):
        return 1
    seqs = encode(lm, list(_PROBES), system_prompt=system_prompt, chat=chat, close_thinking=close_thinking)
    return max(1, shared_prefix([s[::-1] for s in seqs]))


def template_prefix(lm: LoadedModel, *, system_prompt: str | None = None, chat: bool = True) -> int:
    """How many tokens the chat template puts before every user message (the system turn, the user
    header): the longest token prefix shared by a few formatted probe prompts; 0 for raw prompts. Passes
    over many prompts compute these tokens once (:mod:`neurogate.models.prefix`)."""
    if not uses_template(lm, chat):
        return 0
    return shared_prefix(encode(lm, list(_PROBES), system_prompt=system_prompt, chat=chat))


def shared_prefix(seqs: Sequence[Sequence[int]], limit: int | None = None) -> int:
    """How many tokens every sequence starts with, at most ``limit`` (None: no limit other than the next
    rule) and always at least one token short of the shortest sequence, so that every row keeps a token
    of its own to run on top of a shared prefix (the position whose output is read). The one definition
    of a shared prefix: :mod:`neurogate.models.prefix` and its callers use it, and so do
    :func:`template_prefix` and :func:`post_instruction_tokens`."""
    if not seqs:
        return 0
    longest = min(len(s) for s in seqs) - 1
    longest = longest if limit is None else min(limit, longest)
    first = seqs[0]
    n = 0
    while n < longest and all(s[n] == first[n] for s in seqs):
        n += 1
    return n
