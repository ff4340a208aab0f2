"""Contrastive Neuron Attribution: find the MLP neurons whose last-token values separate two prompt sets.

Forward passes only: capture every neuron at the last prompt token for both sets
(:mod:`neurogate.discovery.capture`), score each neuron (:mod:`neurogate.discovery.scoring`; the paper's
rule is the difference of the two means), keep the top fraction of all neurons across all layers after
dropping universal neurons (:mod:`neurogate.discovery.universal`), and record the result as a
:class:`~neurogate.discovery.circuit.Circuit`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch

from neurogate import prompts as prompt_sets
from neurogate.discovery.capture import collect_stats_many
from neurogate.discovery.circuit import SITE, Circuit, Neuron
from neurogate.discovery.config import DiscoverConfig
from neurogate.discovery.profiles import SIDES, NeuronProfile, PromptRef, record
from neurogate.discovery.routing import routing_report
from neurogate.discovery.scoring import Evidence, get_scorer, score
from neurogate.discovery.selection import check_layers, select_top
from neurogate.discovery.stats import PromptExtremes, SiteStats
from neurogate.discovery.universal import BatteryContrast, universal_neurons
from neurogate.errors import ConfigError, DegenerateError, PromptSetError
from neurogate.models.loading import LoadedModel
from neurogate.models.sites import NEURONS
from neurogate.prompts import PromptSet

logger = logging.getLogger(__name__)

PromptsLike = PromptSet | str | os.PathLike[str] | Sequence[str]
MIN_PROMPTS = 2


def resolve_prompts(prompts: PromptsLike, side: str) -> PromptSet:
    """A :class:`PromptSet` from a set, a spec for :func:`neurogate.prompts.load`, or a list of strings,
    with at least two prompts."""
    inline = not isinstance(prompts, str | os.PathLike | PromptSet)
    if inline and isinstance(prompts, Sequence) and len(prompts) == 0:
        raise PromptSetError(f"the {side} prompt set is empty: give at least {MIN_PROMPTS} prompts")
    loaded = prompt_sets.load(prompts, name=f"<inline {side}>" if inline else None)
    if len(loaded) < MIN_PROMPTS:
        raise PromptSetError(
            f"the {side} prompt set {loaded.name!r} has {len(loaded)} prompt; contrastive discovery needs at "
            f"least {MIN_PROMPTS} on each side (the paper uses 100)"
        )
    return loaded


def gather_evidence(
    lm: LoadedModel, positive: PromptSet, negative: PromptSet, config: DiscoverConfig, progress: bool = True
) -> Evidence:
    """One capture pass over both sets, recording every site kind the config's scorer reads, and each
    neuron's highest and lowest prompts (for the circuit's per-neuron profiles)."""
    needs = tuple(dict.fromkeys((*get_scorer(config.score).needs, NEURONS)))
    n_pos = len(positive.prompts)
    extremes = PromptExtremes()

    def track(rows: list[tuple[int, int]], values: dict[str, torch.Tensor]) -> None:
        extremes.update(values[NEURONS], [i + n_pos * side for side, i in rows])

    pos, neg = collect_stats_many(
        lm, [positive.prompts, negative.prompts], needs, config.capture(progress), on_batch=track
    )
    return Evidence(pos, neg, extremes)


def discover(
    lm: LoadedModel,
    positive: PromptsLike,
    negative: PromptsLike,
    config: DiscoverConfig | None = None,
    *,
    progress: bool = True,
    battery: Sequence[BatteryContrast] | None = None,
    evidence: Evidence | None = None,
    allow_degenerate: bool = False,
    **settings: Any,
) -> Circuit:
    """The circuit of neurons that best separate ``positive`` from ``negative`` prompts.

    Settings come from ``config`` (a :class:`DiscoverConfig`), overridden by keyword ``settings`` of the
    same names: e.g. ``discover(lm, pos, neg, fraction=0.001, score="mean-diff")``. Universal neurons are
    skipped (the next-best take their place, so the circuit keeps its size); ``battery`` replaces the
    built-in contrast battery (:func:`neurogate.prompts.battery`) for that filter. ``evidence``: statistics
    already gathered on these prompts (:func:`gather_evidence`), to skip the forward passes.

    A contrast that cannot carry a behaviour is refused with :class:`DegenerateError`: two sets holding
    the same prompts (in any order), or scores that are all zero. ``allow_degenerate`` turns that into a
    loud warning (for tests of the machinery itself).
    """
    cfg = DiscoverConfig.from_mapping(settings, base=config or DiscoverConfig())
    k = cfg.k(lm.adapter.n_neurons)
    layers = check_layers(cfg.exclude_layers, lm.adapter.n_layers)
    pos_set, neg_set = resolve_prompts(positive, "positive"), resolve_prompts(negative, "negative")
    _check_overlap(pos_set, neg_set, allow_degenerate)
    if evidence is None:
        evidence = gather_evidence(lm, pos_set, neg_set, cfg, progress)
    _check_evidence(evidence, lm, cfg)
    scores, _signed = score(evidence, cfg.score, lm=lm, sign=cfg.sign)
    diff = evidence.diff
    plain = select_top(scores, top_k=k, exclude_layers=layers)
    if not any(float(scores[layer, index]) != 0.0 for layer, index in plain):
        _degenerate(
            f"every neuron scores 0 by {cfg.score!r} (no neuron separates {pos_set.name!r} from "
            f"{neg_set.name!r}), so the circuit would be arbitrary neurons",
            allow_degenerate,
        )
    universal: set[tuple[int, int]] = set()
    if cfg.universal_filter:
        universal = universal_neurons(
            lm,
            fraction=cfg.universal_fraction,
            threshold=cfg.universal_threshold,
            battery=battery,
            options=cfg.capture(progress),
        )
    chosen = select_top(scores, top_k=k, exclude_layers=layers, exclude=universal) if universal else plain
    skipped = [n for n in plain if n in universal]
    removed = len(skipped)
    method = {
        "name": "contrastive-neuron-attribution",
        **cfg.to_dict(),
        "k": k,
        "universal_fraction": cfg.universal_fraction if cfg.universal_filter else None,
        "universal_removed": removed,
        "universal_total": len(universal),
        "site": SITE,
    }
    if lm.adapter.moe is not None:
        method["routing"] = routing_report(
            lm.adapter.moe, chosen, evidence.positive[NEURONS], evidence.negative[NEURONS]
        )
    neurons, texts = profiles(
        _neurons(chosen, scores, diff, evidence),
        evidence.extremes,
        (evidence.positive[NEURONS], evidence.negative[NEURONS]),
        (pos_set.prompts, neg_set.prompts),
        universal if cfg.universal_filter else None,
    )
    circuit = Circuit(
        neurons=neurons,
        model={"spec": lm.spec, "shape": lm.shape},
        method=method,
        prompts={"positive": pos_set.describe(), "negative": neg_set.describe()},
        record=record(texts, skipped, scores),
    ).weighted(cfg.weights)
    logger.info("discovered %d neurons (%d universal neurons skipped)", len(circuit), removed)
    return circuit


def _check_evidence(evidence: Evidence, lm: LoadedModel, cfg: DiscoverConfig) -> None:
    missing = [
        k for k in get_scorer(cfg.score).needs if k not in evidence.positive or k not in evidence.negative
    ]
    if missing:
        raise ConfigError(
            f"the statistics given lack site kind(s) {missing} that the {cfg.score!r} scorer reads"
        )
    shape = tuple(evidence.positive["mlp.post"].mean.shape)
    if shape != (lm.adapter.n_layers, lm.adapter.d_mlp):
        raise ConfigError(
            f"the statistics given are {list(shape)}, but {lm.spec} has {lm.adapter.n_layers} layers of "
            f"{lm.adapter.d_mlp} neurons"
        )


def _neurons(
    chosen: Sequence[tuple[int, int]], scores: torch.Tensor, diff: torch.Tensor, evidence: Evidence
) -> list[Neuron]:
    mean_pos = evidence.positive["mlp.post"].mean.cpu()
    mean_neg = evidence.negative["mlp.post"].mean.cpu()
    score_cpu, diff_cpu = scores.cpu(), diff.cpu()
    return [
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


def _degenerate(problem: str, allow: bool) -> None:
    if not allow:
        raise DegenerateError(
            f"{problem}. Give two prompt sets that differ in the behaviour (--allow-degenerate / "
            "allow_degenerate=True saves such a circuit anyway)"
        )
    logger.warning(
        "DEGENERATE CONTRAST, the circuit is meaningless: %s (allowed by allow_degenerate)", problem
    )


def _check_overlap(pos: PromptSet, neg: PromptSet, allow_degenerate: bool = False) -> None:
    if pos.sha256 == neg.sha256:
        raise PromptSetError(
            f"the positive and negative prompt sets are identical ({pos.name!r}); give two different sets"
        )
    if {" ".join(p.split()) for p in pos.prompts} == {" ".join(p.split()) for p in neg.prompts}:
        _degenerate(
            f"the positive set {pos.name!r} and the negative set {neg.name!r} hold the same prompts (in "
            "another order), so there is no contrast to find",
            allow_degenerate,
        )
        return
    pos_norm = {prompt_sets.normalize(p) for p in pos.prompts}
    shared = pos_norm & {prompt_sets.normalize(p) for p in neg.prompts}
    if shared:
        logger.warning(
            "%d prompt(s) are in both sets (e.g. %r): weaker contrast",
            len(shared),
            next(iter(sorted(shared))),
        )


def profiles(
    neurons: Sequence[Neuron],
    extremes: PromptExtremes | None,
    stats: tuple[SiteStats, SiteStats],
    prompts: tuple[Sequence[str], Sequence[str]],
    universal: set[tuple[int, int]] | None,
) -> tuple[list[Neuron], dict[str, dict[int, str]]]:
    """The neurons with a :class:`NeuronProfile` each, and the text of every prompt a profile names.

    Prompt ids are global: the positive set's prompts first, then the negative set's. ``universal`` is the
    set the filter computed (``None`` when the filter was off, so the profile says "not checked").
    Without ``extremes`` (statistics saved by an older version) the profiles name no prompts.
    """
    n_pos = len(prompts[0])
    texts: dict[str, dict[int, str]] = {side: {} for side in SIDES}

    def ref(pid: int, value: float) -> PromptRef:
        side, index = (SIDES[0], pid) if pid < n_pos else (SIDES[1], pid - n_pos)
        texts[side][index] = prompts[SIDES.index(side)][index]
        return PromptRef(side=side, index=index, value=value)

    std_pos, std_neg = (s.var.sqrt().cpu() for s in stats)
    out = []
    for n in neurons:
        profile = NeuronProfile(
            std_pos=float(std_pos[n.layer, n.index]),
            std_neg=float(std_neg[n.layer, n.index]),
            universal=None if universal is None else (n.layer, n.index) in universal,
            most=tuple(ref(p, v) for p, v in extremes.most(n.layer, n.index)) if extremes else (),
            least=tuple(ref(p, v) for p, v in extremes.least(n.layer, n.index)) if extremes else (),
        )
        out.append(replace(n, profile=profile))
    return out, {side: dict(sorted(t.items())) for side, t in texts.items()}
