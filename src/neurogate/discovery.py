"""Contrastive Neuron Attribution: find the MLP neurons whose last-token values separate two prompt sets.

Forward passes only: capture every neuron at the last prompt token for both sets
(:func:`neurogate.capture.collect_stats`), score each neuron by the difference of the two means
(:func:`neurogate.stats.score_neurons`), keep the top fraction of all neurons across all layers after
dropping universal neurons (:func:`neurogate.universal.universal_neurons`), and record it as a
:class:`~neurogate.circuit.Circuit`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

from neurogate import prompts as prompt_sets
from neurogate.capture import BatchSize, collect_stats_many
from neurogate.circuit import SITE, Circuit, Neuron
from neurogate.errors import ConfigError, PromptSetError
from neurogate.loading import LoadedModel
from neurogate.prompts import PromptSet
from neurogate.stats import (
    DEFAULT_FRACTION,
    SCORES,
    ScoreName,
    check_layers,
    score_neurons,
    select_top,
    top_count,
)
from neurogate.universal import Contrast, universal_neurons

logger = logging.getLogger(__name__)

PromptsLike = PromptSet | str | os.PathLike[str] | Sequence[str]
MIN_PROMPTS = 2


def resolve_prompts(prompts: PromptsLike, side: str) -> PromptSet:
    """A :class:`PromptSet` from a set, a spec for :func:`neurogate.prompts.load`, or a list of strings,
    with at least two prompts."""
    if isinstance(prompts, Sequence) and not isinstance(prompts, str | PromptSet) and len(prompts) == 0:
        raise PromptSetError(f"the {side} prompt set is empty: give at least {MIN_PROMPTS} prompts")
    loaded = prompt_sets.load(prompts, name=f"<inline {side}>" if _inline(prompts) else None)
    if len(loaded) < MIN_PROMPTS:
        raise PromptSetError(
            f"the {side} prompt set {loaded.name!r} has {len(loaded)} prompt; contrastive discovery needs at "
            f"least {MIN_PROMPTS} on each side (the paper uses 100)"
        )
    return loaded


def _inline(prompts: PromptsLike) -> bool:
    return not isinstance(prompts, str | os.PathLike | PromptSet)


def _check_args(
    lm: LoadedModel,
    fraction: float | None,
    top_k: int | None,
    score: str,
    exclude_layers: Sequence[int],
    universal_threshold: float,
    batch_size: BatchSize,
) -> tuple[int, tuple[int, ...]]:
    if score not in SCORES:
        raise ConfigError(f"unknown score {score!r}: use one of {', '.join(SCORES)}")
    k = top_count(lm.adapter.n_neurons, fraction, top_k)
    layers = check_layers(exclude_layers, lm.adapter.n_layers)
    if isinstance(universal_threshold, bool) or not 0.0 < float(universal_threshold) <= 1.0:
        raise ConfigError(f"universal_threshold must be in (0, 1], got {universal_threshold!r}")
    if batch_size != "auto" and (
        isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
    ):
        raise ConfigError(f"batch_size must be 'auto' or a whole number >= 1, got {batch_size!r}")
    return k, layers


def discover(
    lm: LoadedModel,
    positive: PromptsLike,
    negative: PromptsLike,
    *,
    fraction: float | None = None,
    top_k: int | None = None,
    score: ScoreName = "mean-diff",
    exclude_layers: Sequence[int] = (),
    universal_filter: bool = True,
    universal_threshold: float = 0.8,
    batch_size: BatchSize = "auto",
    system_prompt: str | None = None,
    chat: bool = True,
    progress: bool = True,
    battery: Sequence[Contrast] | None = None,
) -> Circuit:
    """The circuit of neurons that best separate ``positive`` from ``negative`` prompts.

    Keeps ``top_k`` neurons, or the top ``fraction`` of all MLP neurons (default 0.001, i.e. 0.1%); give at
    most one of the two. ``score``: ``"mean-diff"`` (paper) or ``"effect-size"`` (difference over pooled std).
    With ``universal_filter`` the neurons that rank at the top for most unrelated contrasts are skipped (the
    next-best take their place, so the circuit keeps its size); ``battery`` replaces the built-in contrast
    battery (:func:`neurogate.prompts.battery`) for that filter.
    """
    k, layers = _check_args(lm, fraction, top_k, score, exclude_layers, universal_threshold, batch_size)
    pos_set, neg_set = resolve_prompts(positive, "positive"), resolve_prompts(negative, "negative")
    _check_overlap(pos_set, neg_set)
    kwargs: dict[str, Any] = {
        "batch_size": batch_size,
        "system_prompt": system_prompt,
        "chat": chat,
        "progress": progress,
    }
    pos, neg = collect_stats_many(lm, [pos_set.prompts, neg_set.prompts], **kwargs)
    scores, diff = score_neurons(pos, neg, score)
    selection: dict[str, Any] = {"top_k": k, "exclude_layers": layers}
    plain = select_top(scores, **selection)
    universal: set[tuple[int, int]] = set()
    universal_fraction = fraction if fraction is not None else DEFAULT_FRACTION
    if universal_filter:
        universal = universal_neurons(
            lm,
            fraction=universal_fraction,
            threshold=universal_threshold,
            batch_size=batch_size,
            chat=chat,
            system_prompt=system_prompt,
            progress=progress,
            battery=battery,
        )
    chosen = select_top(scores, exclude=universal, **selection) if universal else plain
    mean_pos, mean_neg = pos.mean.cpu(), neg.mean.cpu()
    score_cpu, diff_cpu = scores.cpu(), diff.cpu()
    neurons = [
        Neuron(
            layer=layer,
            index=index,
            score=float(score_cpu[layer, index]),
            diff=float(diff_cpu[layer, index]),
            mean_pos=float(mean_pos[layer, index]),
            mean_neg=float(mean_neg[layer, index]),
        )
        for layer, index in chosen
    ]
    removed = sum(1 for n in plain if n in universal)
    method = {
        "name": "contrastive-neuron-attribution",
        "score": score,
        "fraction": (fraction if fraction is not None else DEFAULT_FRACTION) if top_k is None else None,
        "top_k": top_k,
        "k": k,
        "exclude_layers": list(layers),
        "universal_filter": universal_filter,
        "universal_threshold": universal_threshold,
        "universal_fraction": universal_fraction if universal_filter else None,
        "universal_removed": removed,
        "universal_total": len(universal),
        "chat": chat,
        "system_prompt": system_prompt,
        "site": SITE,
        "position": "last prompt token",
    }
    circuit = Circuit(
        neurons=neurons,
        model={"spec": lm.spec, "fingerprint": lm.fingerprint},
        method=method,
        prompts={"positive": pos_set.describe(), "negative": neg_set.describe()},
    )
    logger.info("discovered %d neurons (%d universal neurons skipped)", len(neurons), removed)
    return circuit


def _check_overlap(pos: PromptSet, neg: PromptSet) -> None:
    if pos.sha256 == neg.sha256:
        raise PromptSetError(
            f"the positive and negative prompt sets are identical ({pos.name!r}); give two different sets"
        )
    shared = {prompt_sets.normalize(p) for p in pos.prompts} & {prompt_sets.normalize(p) for p in neg.prompts}
    if shared:
        logger.warning(
            "%d prompt(s) are in both sets (e.g. %r): weaker contrast",
            len(shared),
            next(iter(sorted(shared))),
        )
