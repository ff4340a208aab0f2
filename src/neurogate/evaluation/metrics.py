"""Metrics over generated replies: repetition quality, perplexity under the unsteered model, and
steered-vs-unsteered KL.

Generation happens once per condition; every metric here reads those same replies (or teacher-forces
their tokens), so adding a metric never costs another generation pass.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from neurogate.errors import ConfigError
from neurogate.models.generation import contiguous_head
from neurogate.models.inputs import encode, plan_batches, template_prefix
from neurogate.models.loading import LoadedModel
from neurogate.models.prefix import prefill

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


#: How many words of a reply :func:`matched_quality` reads: every reply is cut to the same length, since
#: the distinct n-gram ratio falls with length alone (a 64-token reply has about 45 words).
MATCHED_WORDS = 32


def matched_quality(text: str, words: int = MATCHED_WORDS, n: int = 4) -> float | None:
    """:func:`distinct_ngram_quality` of the reply's first ``words`` words, or ``None`` when it has fewer:
    quality at matched length, so a long answer is not scored against a short refusal (which cannot
    repeat itself). The study reads it on compliant replies only (:func:`neurogate.evaluation.tables.
    quality_values`): like with like."""
    split = text.split()
    if len(split) < words:
        return None
    return distinct_ngram_quality(" ".join(split[:words]), n)


def mean_quality(texts: Sequence[str], n: int = 4) -> float:
    """Mean :func:`distinct_ngram_quality` over replies (1.0 for none)."""
    if not texts:
        return 1.0
    return sum(distinct_ngram_quality(t, n) for t in texts) / len(texts)


# ---------------------------------------- teacher forcing


def _batches(lengths: Sequence[int], size: int) -> list[list[int]]:
    """Row indices in batches of at most ``size``, rows of similar length together
    (:func:`plan_batches`): a teacher-forced pass pads every row to its batch's longest, so mixing a
    12-token refusal with a 128-token answer would pay for ~116 padding positions."""
    return plan_batches(lengths, size, torch.device("cpu"))


@torch.no_grad()
def _continuation_logits(
    lm: LoadedModel,
    prompt_ids: Sequence[Sequence[int]],
    cont_ids: Sequence[Sequence[int]],
    prefix: int = 0,
) -> list[torch.Tensor]:
    """Per row, the raw logits ``[len(cont), vocab]`` (the model's dtype) of the positions predicting each
    continuation token (teacher forcing), in one left-padded forward pass; the first ``prefix`` tokens,
    where the rows share them (the chat template's), are computed once (:func:`prefill`). Only the last
    positions go through the LM head (``logits_to_keep``): the head over a large vocabulary at every
    prompt position would cost more than the rest of the pass."""
    seqs = [list(p) + list(c) for p, c in zip(prompt_ids, cont_ids, strict=True)]
    with contiguous_head(lm):
        done = prefill(lm, seqs, prefix=prefix, logits_to_keep=max(len(c) for c in cont_ids) + 1)
    logits = done.output.logits
    width = logits.shape[1]
    # position t predicts token t+1; the continuation occupies the last c positions
    return [logits[row, width - 1 - len(cont) : width - 1] for row, cont in enumerate(cont_ids)]


def log_probs(logits: torch.Tensor) -> torch.Tensor:
    """Log-probabilities over the last (vocabulary) dimension, in float32 whatever the model's dtype."""
    return torch.log_softmax(logits.float(), dim=-1)


def token_kl(reference: torch.Tensor, steered: torch.Tensor) -> torch.Tensor:
    """KL(reference || steered) at each position, from two ``[positions, vocab]`` log-probability tensors
    (clamped at 0: rounding can make a near-zero KL slightly negative)."""
    return (reference.exp() * (reference - steered)).sum(-1).clamp(min=0)


def _continuation_logprobs(
    lm: LoadedModel,
    prompt_ids: Sequence[Sequence[int]],
    cont_ids: Sequence[Sequence[int]],
    prefix: int = 0,
) -> list[torch.Tensor]:
    """Per row, float32 log-probabilities ``[len(cont), vocab]`` (see :func:`_continuation_logits`)."""
    return [log_probs(x) for x in _continuation_logits(lm, prompt_ids, cont_ids, prefix)]


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
    prefix = template_prefix(lm, system_prompt=system_prompt, chat=chat)
    conts = [list(replies[i]) for i in keep]
    for rows in _batches([len(p) + len(c) for p, c in zip(pids, conts, strict=True)], batch_size):
        lps = _continuation_logprobs(lm, [pids[i] for i in rows], [conts[i] for i in rows], prefix)
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
    out: list[tuple[float, int]] = [(0.0, 0)] * len(seqs)
    for rows in _batches([len(s) for s in seqs], batch_size):
        heads = [seqs[i][:1] for i in rows]
        tails = [seqs[i][1:] for i in rows]
        for lp, tail, i in zip(_continuation_logprobs(lm, heads, tails), tails, rows, strict=True):
            target = torch.tensor(tail, device=lp.device)
            out[i] = (-float(lp.gather(-1, target[:, None]).sum()), len(tail))
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


@dataclass(frozen=True)
class KLReference:
    """The unsteered side of :func:`kl_divergence`, computed once and reused for every intervention on the
    same prompts and replies: per prompt, the raw logits of its first ``n_tokens`` reply positions, kept
    on the CPU in the model's dtype (exactly what a fresh unsteered pass would give)."""

    logits: list[torch.Tensor]
    n_tokens: int


def _kl_inputs(
    lm: LoadedModel,
    prompts: Sequence[str],
    replies: Sequence[Sequence[int]],
    n_tokens: int,
    system_prompt: str | None,
    chat: bool,
) -> tuple[list[list[int]], list[list[int]], int]:
    if n_tokens < 1:
        raise ConfigError(f"n_tokens must be at least 1, got {n_tokens}")
    if len(prompts) != len(replies):
        raise ConfigError(f"{len(prompts)} prompts but {len(replies)} replies")
    pids = [list(p) for p in encode(lm, prompts, system_prompt=system_prompt, chat=chat)]
    # the first position needs no reply token; later ones need the reply tokens before them, and a dummy
    # last token turns "c reply tokens" into c+1 predicting positions (its value is never read)
    conts = [[*list(r)[: n_tokens - 1], 0] for r in replies]
    return pids, conts, template_prefix(lm, system_prompt=system_prompt, chat=chat)


def _teacher_forced(
    lm: LoadedModel,
    pids: Sequence[Sequence[int]],
    conts: Sequence[Sequence[int]],
    batch_size: int,
    steering: Steering | None,
    prefix: int,
) -> Iterator[tuple[list[int], list[torch.Tensor]]]:
    """(row indices, their raw continuation logits) batch by batch, under ``steering`` when given."""
    lengths = [len(p) + len(c) for p, c in zip(pids, conts, strict=True)]
    for rows in _batches(lengths, batch_size):
        with _maybe(steering):
            logits = _continuation_logits(lm, [pids[i] for i in rows], [conts[i] for i in rows], prefix)
        yield rows, logits


def _gathered(
    lm: LoadedModel,
    pids: Sequence[Sequence[int]],
    conts: Sequence[Sequence[int]],
    batch_size: int,
    steering: Steering | None,
    prefix: int,
) -> list[torch.Tensor]:
    """:func:`_teacher_forced`'s logits back in row order, each copied to the CPU."""
    out: list[torch.Tensor] = [torch.empty(0)] * len(pids)
    for rows, logits in _teacher_forced(lm, pids, conts, batch_size, steering, prefix):
        for i, x in zip(rows, logits, strict=True):
            out[i] = x.to("cpu", copy=True)
    return out


def kl_reference(
    lm: LoadedModel,
    prompts: Sequence[str],
    replies: Sequence[Sequence[int]],
    *,
    n_tokens: int = 16,
    system_prompt: str | None = None,
    chat: bool = True,
    batch_size: int = 8,
) -> KLReference:
    """The unsteered logits :func:`kl_divergence` compares against, for reuse across interventions."""
    pids, conts, prefix = _kl_inputs(lm, prompts, replies, n_tokens, system_prompt, chat)
    return KLReference(_gathered(lm, pids, conts, batch_size, None, prefix), n_tokens)


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
    reference: KLReference | None = None,
) -> KLResult:
    """How far an intervention moves the next-token distribution on (typically benign) prompts.

    The *unsteered* model's own replies (``replies``: its generated token ids) are teacher-forced through
    the model without and with ``steering``; KL(unsteered || steered) is taken at each of the first
    ``n_tokens`` positions. Using the unsteered tokens keeps both runs on the same, natural text, so the
    number measures the intervention and not a diverged continuation. Position 0 (predicting the first reply
    token from the prompt alone) is the first-token KL. ``reference`` (from :func:`kl_reference` on the
    same arguments) replaces the unsteered pass, halving the cost when many interventions are compared.
    """
    pids, conts, prefix = _kl_inputs(lm, prompts, replies, n_tokens, system_prompt, chat)
    if reference is not None and (
        reference.n_tokens != n_tokens
        or len(reference.logits) != len(prompts)
        or any(len(r) != len(c) for r, c in zip(reference.logits, conts, strict=True))
    ):
        raise ConfigError("the KL reference was computed for other prompts, replies or n_tokens")
    ref = reference or kl_reference(
        lm, prompts, replies, n_tokens=n_tokens, system_prompt=system_prompt, chat=chat, batch_size=batch_size
    )
    first = [0.0] * len(prompts)
    mean = [0.0] * len(prompts)
    for rows, logits in _teacher_forced(lm, pids, conts, batch_size, steering, prefix):
        for i, x in zip(rows, logits, strict=True):
            kl = token_kl(log_probs(ref.logits[i]), log_probs(x.to("cpu")))
            first[i], mean[i] = float(kl[0]), float(kl.mean())
    return KLResult(first, mean, n_tokens)


def continuation_logits(
    lm: LoadedModel,
    prompts: Sequence[str],
    continuations: Sequence[Sequence[int]],
    steering: Steering | None = None,
    *,
    system_prompt: str | None = None,
    chat: bool = True,
    batch_size: int = 8,
) -> list[torch.Tensor]:
    """Per prompt, the raw logits ``[len(continuation), vocab]`` (the model's dtype, on the CPU) of the
    positions predicting each token of its continuation (teacher forcing), under ``steering`` when given:
    row ``j`` is the distribution of continuation token ``j`` given the prompt and the tokens before it."""
    if len(prompts) != len(continuations) or any(not c for c in continuations):
        raise ConfigError("give one non-empty continuation (token ids) per prompt")
    pids = [list(p) for p in encode(lm, prompts, system_prompt=system_prompt, chat=chat)]
    prefix = template_prefix(lm, system_prompt=system_prompt, chat=chat)
    conts = [list(c) for c in continuations]
    return _gathered(lm, pids, conts, batch_size, steering, prefix)


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
    prefix = template_prefix(lm, system_prompt=system_prompt, chat=chat)
    rows: list[torch.Tensor] = [torch.empty(0)] * len(pids)
    with _maybe(steering):
        for batch in _batches([len(p) for p in pids], batch_size):
            lps = _continuation_logprobs(lm, [pids[i] for i in batch], [[0]] * len(batch), prefix)
            for i, lp in zip(batch, lps, strict=True):
                rows[i] = lp[0].cpu()
    return torch.stack(rows)
