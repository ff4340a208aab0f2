"""Scorers: how a neuron's statistics on the two prompt sets become one number to rank it by.

Each :class:`Scorer` is registered by name in :data:`SCORERS` with a one-line summary of what it ranks by;
``discover(..., score=NAME)``, ``DiscoverConfig(score=NAME)``, the CLI's ``--score`` and the study all
select scorers from this one registry. Adding a scorer is one function and one entry.
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from neurogate.atomic import atomic_path
from neurogate.defaults import SCORER_SUMMARIES
from neurogate.discovery.stats import PromptExtremes, SiteStats
from neurogate.errors import ConfigError, NeurogateError, PromptSetError
from neurogate.models.loading import LoadedModel
from neurogate.models.moe import flat_down_weight
from neurogate.models.sites import NEURONS, RESIDUAL, SiteKind

EXTREMES = "extremes"


@dataclass(frozen=True)
class Evidence:
    """What a scorer reads: per-site-kind statistics of the positive and negative prompts. It is the whole
    cost of discovery (the forward passes), so it can be saved and reused for other scorers and sizes.
    ``extremes``: each neuron's highest and lowest prompts (ids: positive prompts first, then negative),
    for the circuit's per-neuron profiles; ``None`` in statistics saved without them."""

    positive: dict[str, SiteStats]
    negative: dict[str, SiteStats]
    extremes: PromptExtremes | None = None

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write every statistic as safetensors (float64), atomically."""
        tensors: dict[str, torch.Tensor] = {}
        meta: dict[str, str] = {"kind": "neurogate.evidence"}
        for side, stats in (("positive", self.positive), ("negative", self.negative)):
            for kind, st in stats.items():
                tensors.update(st.tensors(f"{side}.{kind}"))
                meta[f"{side}.{kind}"] = json.dumps({"n": st.n, "resolution": st.resolution})
        if self.extremes is not None:
            tensors.update(self.extremes.tensors(EXTREMES))
            meta[EXTREMES] = json.dumps({"k": self.extremes.k})
        target = Path(path)
        with atomic_path(target) as tmp:
            save_file({k: v.contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=meta)
        return target

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Evidence:
        """Read a file written by :meth:`save`."""
        p = Path(path)
        try:
            with safe_open(str(p), framework="pt") as fh:
                meta = fh.metadata() or {}
            tensors = load_file(str(p))
        except (OSError, SafetensorError) as exc:
            raise NeurogateError(
                f"cannot read the statistics file {p} ({exc}); delete it to recompute"
            ) from exc
        if meta.get("kind") != "neurogate.evidence":
            raise NeurogateError(f"{p} is not a neurogate statistics file")
        sides: dict[str, dict[str, SiteStats]] = {"positive": {}, "negative": {}}
        extremes = None
        try:
            for key, value in meta.items():
                if key == EXTREMES:
                    extremes = PromptExtremes.from_tensors(tensors, EXTREMES, int(json.loads(value)["k"]))
                    continue
                if key == "kind":
                    continue
                side, kind = key.split(".", 1)
                info = json.loads(value)
                sides[side][kind] = SiteStats.from_tensors(
                    tensors, key, int(info["n"]), float(info["resolution"])
                )
        except (KeyError, TypeError, ValueError) as exc:  # JSON errors too
            raise NeurogateError(
                f"{p} is a damaged statistics file ({type(exc).__name__}: {exc}); delete it to recompute"
            ) from exc
        if NEURONS not in sides["positive"] or NEURONS not in sides["negative"]:
            raise NeurogateError(f"{p} lacks the neuron statistics; delete it to recompute")
        return cls(sides["positive"], sides["negative"], extremes)

    @property
    def diff(self) -> torch.Tensor:
        """``mean_pos - mean_neg`` of every neuron, ``[n_layers, d_mlp]`` float64."""
        return self.positive[NEURONS].mean - self.negative[NEURONS].mean.to(
            self.positive[NEURONS].mean.device
        )


Sign = Literal["both", "positive", "negative"]
SIGNS: tuple[str, ...] = ("both", "positive", "negative")


@dataclass(frozen=True)
class Scorer:
    """A named ranking rule. ``fn(evidence, lm)`` returns each neuron's *signed* value ``[n_layers, d_mlp]``
    (positive: more on the positive prompts); neurons are ranked by its size, or by its positive or negative
    part alone (``sign``). ``needs`` lists the site kinds it reads; ``uses_weights``: it also reads ``lm``'s
    down-projection weights."""

    name: str
    summary: str
    fn: Callable[[Evidence, LoadedModel | None], torch.Tensor]
    needs: tuple[SiteKind, ...] = (NEURONS,)
    min_prompts: int = 1
    uses_weights: bool = False
    along: Callable[[Evidence, LoadedModel | None, torch.Tensor], torch.Tensor] | None = None
    """For scorers that rank along one residual direction: ``fn`` with that direction given (``score(...,
    direction=d)``) in place of the one ``fn`` reads off the statistics."""


def _mean_diff(ev: Evidence, _lm: LoadedModel | None) -> torch.Tensor:
    return ev.diff


def _effect_size(ev: Evidence, _lm: LoadedModel | None) -> torch.Tensor:
    pos, neg = ev.positive[NEURONS], ev.negative[NEURONS].to(ev.positive[NEURONS].mean.device)
    if pos.count is not None or neg.count is not None:  # expert neurons: each over its routed prompts
        n_pos, n_neg = pos.counts, neg.counts
        pooled = ((n_pos - 1).clamp_min(0) * pos.var + (n_neg - 1).clamp_min(0) * neg.var) / (
            n_pos + n_neg - 2
        ).clamp_min(1)
        floor = torch.maximum(pos.var_floor(), neg.var_floor())
        return ev.diff / torch.maximum(pooled, floor).sqrt()
    pooled = ((pos.n - 1) * pos.var + (neg.n - 1) * neg.var) / (pos.n + neg.n - 2)
    floor = torch.maximum(pos.var_floor(), neg.var_floor())
    return ev.diff / torch.maximum(pooled, floor).sqrt()


def _layer_normalised(ev: Evidence, _lm: LoadedModel | None) -> torch.Tensor:
    diff = ev.diff
    rms = diff.square().mean(dim=1, keepdim=True).sqrt().clamp_min(1e-12)
    return diff / rms


def writes_along(lm: LoadedModel, directions: torch.Tensor) -> torch.Tensor:
    """``<W_down[:, i], r_l>`` for every neuron: how much a unit activation of neuron i of layer l writes
    along the unit direction ``directions[l]`` (``[n_layers, d_model]``), ``[n_layers, d_mlp]`` float64."""
    adapter = lm.adapter
    rows = []
    for layer in range(adapter.n_layers):
        block = adapter.down_proj(layer)
        # a sparse layer's columns in its flat neuron order (each expert's down-projection, then shared)
        weight = flat_down_weight(block) if adapter.moe is not None else block.weight
        assert isinstance(weight, torch.Tensor)
        weight = weight.detach()
        r = directions[layer].to(weight.device, torch.float64)
        w = weight.to(torch.float64)
        # layers may sit on different devices (a model split across GPUs): gather the rows on the CPU
        rows.append(((w @ r) if adapter.spec.layout == "conv1d" else (r @ w)).cpu())
    return torch.stack(rows)


def _direction(ev: Evidence, lm: LoadedModel | None) -> torch.Tensor:
    if lm is None:
        raise ConfigError("the direction score reads the model's down-projection weights: pass the model")
    resid = ev.positive[RESIDUAL].mean - ev.negative[RESIDUAL].mean.to(ev.positive[RESIDUAL].mean.device)
    unit = resid / resid.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return ev.diff * writes_along(lm, unit).to(ev.diff.device)


def separating_layer(ev: Evidence) -> int:
    """The layer (among all but the last 20%, as for the residual baselines) whose residual mean
    difference is largest against the spread of the two sets: ``|mean_pos - mean_neg|^2`` over the summed
    pooled variance of the residual stream after that layer."""
    pos, neg = ev.positive[RESIDUAL], ev.negative[RESIDUAL].to(ev.positive[RESIDUAL].mean.device)
    diff = pos.mean - neg.mean
    pooled = (pos.m2 + neg.m2).sum(dim=1) / max(1, pos.n + neg.n - 2)
    ratio = diff.square().sum(dim=1) / pooled.clamp_min(1e-12)
    candidates = range(max(1, int(0.8 * diff.shape[0])))
    return max(candidates, key=lambda layer: (float(ratio[layer]), layer))


def ablation_direction(ev: Evidence) -> torch.Tensor:
    """The residual direction :func:`along_direction` uses when none is given: the difference of means of
    the residual stream after :func:`separating_layer`, ``[d_model]`` float64."""
    layer = separating_layer(ev)
    return ev.positive[RESIDUAL].mean[layer] - ev.negative[RESIDUAL].mean[layer].to(
        ev.positive[RESIDUAL].mean.device
    )


def along_direction(
    ev: Evidence, lm: LoadedModel | None, direction: torch.Tensor | None = None
) -> torch.Tensor:
    """``(mean_pos - mean_neg) * <W_down[:, j], d>``: how far each neuron's mean change writes along ONE
    unit residual direction ``d`` (the same for every layer, as directional ablation removes one direction
    from every layer). Ranked by size this is ``|W_down[:, j] . d|`` times ``|mean_pos - mean_neg|``; the sign
    says whether the neuron pushes toward the behaviour (positive) or away from it. ``direction``: the
    study's ablation direction (``ablation-direction.safetensors``) when given, else
    :func:`ablation_direction` of ``ev``."""
    if lm is None:
        raise ConfigError(
            "the ablation-direction score reads the model's down-projection weights: pass the model"
        )
    d = (direction if direction is not None else ablation_direction(ev)).to(torch.float64).flatten()
    if d.numel() != lm.adapter.d_model:
        raise ConfigError(
            f"the direction has {d.numel()} values; this model's residual stream has {lm.adapter.d_model}"
        )
    norm = d.norm()
    if not torch.isfinite(norm) or norm == 0:
        raise ConfigError("the ablation direction is zero or not finite; the two prompt sets look identical")
    unit = (d / norm).cpu().expand(lm.adapter.n_layers, -1)
    return ev.diff * writes_along(lm, unit).to(ev.diff.device)


def _ablation_direction(ev: Evidence, lm: LoadedModel | None) -> torch.Tensor:
    return along_direction(ev, lm)


SCORERS: dict[str, Scorer] = {
    s.name: s
    for s in (
        Scorer("mean-diff", SCORER_SUMMARIES["mean-diff"], _mean_diff),
        Scorer(
            "effect-size",
            SCORER_SUMMARIES["effect-size"],
            _effect_size,
            min_prompts=2,
        ),
        Scorer(
            "layer-normalised",
            SCORER_SUMMARIES["layer-normalised"],
            _layer_normalised,
        ),
        Scorer(
            "direction",
            SCORER_SUMMARIES["direction"],
            _direction,
            needs=(NEURONS, RESIDUAL),
            uses_weights=True,
        ),
        Scorer(
            "ablation-direction",
            SCORER_SUMMARIES["ablation-direction"],
            _ablation_direction,
            needs=(NEURONS, RESIDUAL),
            uses_weights=True,
            along=along_direction,
        ),
    )
}


def get_scorer(name: str) -> Scorer:
    """The scorer called ``name``; unknown names list the known ones with a "did you mean"."""
    try:
        return SCORERS[name]
    except KeyError:
        close = difflib.get_close_matches(name, SCORERS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown score {name!r}; choose from {', '.join(SCORERS)}.{hint}") from None


def score(
    evidence: Evidence,
    name: str = "mean-diff",
    *,
    lm: LoadedModel | None = None,
    sign: Sign = "both",
    direction: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ranking score, signed value)``, both ``[n_layers, d_mlp]``, under the scorer ``name``. The ranking
    score is the signed value's size (``sign="both"``) or only its positive or negative part (other neurons
    score 0 and rank last). ``direction``: the residual direction of a scorer that ranks along one
    (``ablation-direction``); other scorers ignore it."""
    scorer = get_scorer(name)
    if sign not in SIGNS:
        raise ConfigError(f"sign must be one of {', '.join(SIGNS)}, got {sign!r}")
    pos, neg = evidence.positive[NEURONS], evidence.negative[NEURONS]
    if pos.mean.shape != neg.mean.shape:
        raise ConfigError(
            f"the two statistics have different shapes {tuple(pos.mean.shape)} and {tuple(neg.mean.shape)}"
        )
    if min(pos.n, neg.n) < scorer.min_prompts:
        raise PromptSetError(
            f"the {scorer.name} score needs at least {scorer.min_prompts} prompt(s) on each side "
            f"(got {pos.n} and {neg.n})"
        )
    if direction is not None and scorer.along is not None:
        signed = scorer.along(evidence, lm, direction)
    else:
        signed = scorer.fn(evidence, lm)
    ranking = signed.abs() if sign == "both" else (signed if sign == "positive" else -signed).clamp_min(0.0)
    if pos.count is not None or neg.count is not None:
        # an expert neuron never routed on one set has no mean there to compare: it ranks last
        unseen = (pos.counts == 0) | (neg.counts.to(pos.counts.device) == 0)
        ranking = ranking.masked_fill(unseen.to(ranking.device), 0.0)
    return ranking, signed


def score_neurons(
    pos: SiteStats, neg: SiteStats, name: str = "mean-diff"
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`score` for neuron statistics alone (scorers that need only the ``mlp.post`` site)."""
    return score(Evidence({NEURONS: pos}, {NEURONS: neg}), name)
