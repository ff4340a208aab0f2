"""Metrics over generated replies: repetition quality, perplexity under the unsteered model, and
steered-vs-unsteered KL.

Generation happens once per condition; every metric here reads those same replies (or teacher-forces
their tokens), so adding a metric never costs another generation pass.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from neurogate.errors import ConfigError
from neurogate.models.generation import contiguous_head
from neurogate.models.inputs import encode, left_padded, left_positions
from neurogate.models.loading import LoadedModel

logger = logging.getLogger(__name__)


#: Anything that steers the model while its context is open (an intervention).
Steering = contextlib.AbstractContextManager[Any]


# ---------------------------------------- quality


def distinct_ngram_quality(text: str, n: int = 4) -> float:
    """The paper's generation quality: distinct word ``n``-grams / all word ``n``-grams of the reply.

    1.0 means no repeated n-gram. A reply with fewer than ``n`` words has no n-grams and scores 1.0 (it
    cannot repeat itself), so an empty reply is not penalised here; look at the reply lengths too.
    A refusal also scores about 1.0: quality alone does not tell a good answer from a refusal.
    """
    words = text.split()
    if len(words) < n:
        return 1.0
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams)


def mean_quality(texts: Sequence[str], n: int = 4) -> float:
    """Mean :func:`distinct_ngram_quality` over replies (1.0 for none)."""
    if not texts:
        return 1.0
    return sum(distinct_ngram_quality(t, n) for t in texts) / len(texts)


# ---------------------------------------- teacher forcing


def _batches(n: int, size: int) -> Iterator[range]:
    for start in range(0, n, size):
        yield range(start, min(n, start + size))


@torch.no_grad()
def _continuation_logprobs(
    lm: LoadedModel, prompt_ids: Sequence[Sequence[int]], cont_ids: Sequence[Sequence[int]]
) -> list[torch.Tensor]:
    """Per row, float32 log-probabilities ``[len(cont), vocab]`` of the positions predicting each
    continuation token (teacher forcing), in one left-padded forward pass. Only the last positions go
    through the LM head (``logits_to_keep``, where the model takes it): the head over a large vocabulary
    at every prompt position would cost more than the rest of the pass."""
    seqs = [list(p) + list(c) for p, c in zip(prompt_ids, cont_ids, strict=True)]
    batch = left_padded(lm, seqs)
    positions = left_positions(batch.attention_mask)
    extra: dict[str, Any] = {}
    if "logits_to_keep" in inspect.signature(lm.model.forward).parameters:
        extra["logits_to_keep"] = max(len(c) for c in cont_ids) + 1
    with contiguous_head(lm):
        logits = lm.model(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=positions, **extra
        ).logits
    width = logits.shape[1]
    out = []
    for row, cont in enumerate(cont_ids):
        c = len(cont)
        # position t predicts token t+1; the continuation occupies the last c positions
        out.append(torch.log_softmax(logits[row, width - 1 - c : width - 1].float(), dim=-1))
    return out


def _maybe(steering: Steering | None) -> contextlib.AbstractContextManager[Any]:
    return steering if steering is not None else contextlib.nullcontext()


def perplexity(
    lm: LoadedModel,
    prompts: Sequence[str],
    replies: Sequence[Sequence[int]],
    *,
    system_prompt: str | None = None,
    chat: bool = True,
    batch_size: int = 8,
    max_tokens: int | None = None,
) -> float:
    """Perplexity of the replies' tokens (e.g. a steered model's) under ``lm`` as it is (unsteered):
    exp of the mean negative log-likelihood over all reply tokens. High values flag broken text.
    Empty replies are skipped; NaN when every reply is empty."""
    if len(prompts) != len(replies):
        raise ConfigError(f"{len(prompts)} prompts but {len(replies)} replies")
    conts = [list(r)[:max_tokens] if max_tokens else list(r) for r in replies]
    keep = [i for i, c in enumerate(conts) if c]
    if not keep:
        return float("nan")
    pids = encode(lm, [prompts[i] for i in keep], system_prompt=system_prompt, chat=chat)
    conts = [conts[i] for i in keep]
    total, count = 0.0, 0
    for rows in _batches(len(conts), batch_size):
        lps = _continuation_logprobs(lm, [pids[i] for i in rows], [conts[i] for i in rows])
        for lp, i in zip(lps, rows, strict=True):
            target = torch.tensor(conts[i], device=lp.device)
            total -= float(lp.gather(-1, target[:, None]).sum())
            count += len(conts[i])
    return math.exp(total / count)


@dataclass(frozen=True)
class KLResult:
    """KL(unsteered || steered) in nats: at the first generated token, and the mean over the first
    ``n_tokens`` positions of every reply (per-token mean, all prompts pooled)."""

    first_token: float
    mean: float
    n_tokens: int
    n_prompts: int


def kl_divergence(
    lm: LoadedModel,
    prompts: Sequence[str],
    replies: Sequence[Sequence[int]],
    steering: Steering,
    *,
    n_tokens: int = 16,
    system_prompt: str | None = None,
    chat: bool = True,
    batch_size: int = 8,
) -> KLResult:
    """How far an intervention moves the next-token distribution on (typically benign) prompts.

    The *unsteered* model's own replies (``replies``: its generated token ids) are teacher-forced through
    the model twice, without and with ``steering``; KL(unsteered || steered) is taken at each of the first
    ``n_tokens`` positions. Using the unsteered tokens keeps both runs on the same, natural text, so the
    number measures the intervention and not a diverged continuation. Position 0 (predicting the first reply
    token from the prompt alone) is the first-token KL.
    """
    if n_tokens < 1:
        raise ConfigError(f"n_tokens must be at least 1, got {n_tokens}")
    if len(prompts) != len(replies):
        raise ConfigError(f"{len(prompts)} prompts but {len(replies)} replies")
    if not prompts:
        return KLResult(float("nan"), float("nan"), n_tokens, 0)
    pids = encode(lm, prompts, system_prompt=system_prompt, chat=chat)
    # the first position needs no reply token; later ones need the reply tokens before them
    conts = [list(r)[: n_tokens - 1] for r in replies]
    first: list[float] = []
    pooled: list[float] = []
    for rows in _batches(len(prompts), batch_size):
        p = [pids[i] for i in rows]
        # a dummy last token turns "c reply tokens" into c+1 predicting positions (its value is never read)
        c = [[*conts[i], 0] for i in rows]
        base = _continuation_logprobs(lm, p, c)
        with _maybe(steering):
            steered = _continuation_logprobs(lm, p, c)
        for b, s in zip(base, steered, strict=True):
            kl = (b.exp() * (b - s)).sum(-1).clamp(min=0)
            first.append(float(kl[0]))
            pooled.extend(float(x) for x in kl)
    return KLResult(sum(first) / len(first), sum(pooled) / len(pooled), n_tokens, len(prompts))
