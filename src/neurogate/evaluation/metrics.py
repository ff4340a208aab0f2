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


def reply_nll(
    lm: LoadedModel,
    prompts: Sequence[str],
    replies: Sequence[Sequence[int]],
    *,
    system_prompt: str | None = None,
    chat: bool = True,
    batch_size: int = 8,
) -> list[tuple[float, int]]:
    """Per reply, ``(negative log-likelihood summed over its tokens, number of tokens)`` under ``lm`` as
    it is (unsteered when called outside any intervention); ``(0.0, 0)`` for an empty reply."""
    if len(prompts) != len(replies):
        raise ConfigError(f"{len(prompts)} prompts but {len(replies)} replies")
    out: list[tuple[float, int]] = [(0.0, 0)] * len(replies)
    keep = [i for i, r in enumerate(replies) if len(r)]
    if not keep:
        return out
    pids = encode(lm, [prompts[i] for i in keep], system_prompt=system_prompt, chat=chat)
    conts = [list(replies[i]) for i in keep]
    for rows in _batches(len(conts), batch_size):
        lps = _continuation_logprobs(lm, [pids[i] for i in rows], [conts[i] for i in rows])
        for lp, i in zip(lps, rows, strict=True):
            target = torch.tensor(conts[i], device=lp.device)
            out[keep[i]] = (-float(lp.gather(-1, target[:, None]).sum()), len(conts[i]))
    return out


def perplexity_of(nlls: Sequence[tuple[float, int]]) -> float:
    """exp(total NLL / total tokens) over ``(nll, tokens)`` pairs; NaN when there are no tokens."""
    tokens = sum(n for _, n in nlls)
    return math.exp(sum(x for x, _ in nlls) / tokens) if tokens else float("nan")


def perplexity(
    lm: LoadedModel,
    prompts: Sequence[str],
    replies: Sequence[Sequence[int]],
    *,
    system_prompt: str | None = None,
    chat: bool = True,
    batch_size: int = 8,
) -> float:
    """Perplexity of the replies' tokens (e.g. a steered model's) under ``lm`` as it is (unsteered):
    exp of the mean negative log-likelihood over all reply tokens. It measures how far the text moved from
    what the unsteered model would write (content change as much as fluency). Empty replies are skipped;
    NaN when every reply is empty."""
    nlls = reply_nll(lm, prompts, replies, system_prompt=system_prompt, chat=chat, batch_size=batch_size)
    return perplexity_of(nlls)


def text_nll(lm: LoadedModel, texts: Sequence[str], *, batch_size: int = 4) -> list[tuple[float, int]]:
    """Per text (raw, no chat template), ``(NLL summed over every token after the first, tokens scored)``
    under ``lm`` as it is: the capability proxy's corpus perplexity, steered or not."""
    seqs = [lm.tokenizer(t, add_special_tokens=True)["input_ids"] for t in texts]
    out: list[tuple[float, int]] = []
    for rows in _batches(len(seqs), batch_size):
        heads = [seqs[i][:1] for i in rows]
        tails = [seqs[i][1:] for i in rows]
        for lp, tail in zip(_continuation_logprobs(lm, heads, tails), tails, strict=True):
            target = torch.tensor(tail, device=lp.device)
            out.append((-float(lp.gather(-1, target[:, None]).sum()), len(tail)))
    return out


@dataclass(frozen=True)
class KLResult:
    """KL(unsteered || steered) in nats, per prompt: at the first generated token (``first``), and averaged
    over the first ``n_tokens`` reply positions (``mean``). ``first_token``/``mean_token`` average them
    over prompts."""

    first: list[float]
    mean: list[float]
    n_tokens: int

    @property
    def first_token(self) -> float:
        return sum(self.first) / len(self.first) if self.first else float("nan")

    @property
    def mean_token(self) -> float:
        return sum(self.mean) / len(self.mean) if self.mean else float("nan")


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
        return KLResult([], [], n_tokens)
    pids = encode(lm, prompts, system_prompt=system_prompt, chat=chat)
    # the first position needs no reply token; later ones need the reply tokens before them
    conts = [list(r)[: n_tokens - 1] for r in replies]
    first: list[float] = []
    mean: list[float] = []
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
            mean.append(float(kl.mean()))
    return KLResult(first, mean, n_tokens)


def next_token_logprobs(
    lm: LoadedModel,
    prompts: Sequence[str],
    steering: Steering | None = None,
    *,
    system_prompt: str | None = None,
    chat: bool = True,
    batch_size: int = 16,
) -> torch.Tensor:
    """Log-probabilities of each prompt's first reply token, ``[n_prompts, vocab]`` float32 on the CPU,
    under ``steering`` when given (one forward pass per batch; only the last position reaches the head)."""
    pids = encode(lm, prompts, system_prompt=system_prompt, chat=chat)
    rows: list[torch.Tensor] = []
    with _maybe(steering):
        for batch in _batches(len(pids), batch_size):
            lps = _continuation_logprobs(lm, [pids[i] for i in batch], [[0]] * len(batch))
            rows.extend(lp[0].cpu() for lp in lps)
    return torch.stack(rows)
