"""Turning user prompts into model input: chat formatting and left-padded, left-truncated batches."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from neurogate.loading import LoadedModel

logger = logging.getLogger(__name__)


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
