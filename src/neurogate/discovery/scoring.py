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

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from neurogate.atomic import atomic_path
from neurogate.discovery.stats import SiteStats
from neurogate.errors import ConfigError, NeurogateError, PromptSetError
from neurogate.models.sites import NEURONS, SiteKind


@dataclass(frozen=True)
class Evidence:
    """What a scorer reads: per-site-kind statistics of the positive and negative prompts. It is the whole
    cost of discovery (the forward passes), so it can be saved and reused for other scorers and sizes."""

    positive: dict[str, SiteStats]
    negative: dict[str, SiteStats]

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write every statistic as safetensors (float64), atomically."""
        tensors: dict[str, torch.Tensor] = {}
        meta: dict[str, str] = {"kind": "neurogate.evidence"}
        for side, stats in (("positive", self.positive), ("negative", self.negative)):
            for kind, st in stats.items():
                tensors.update(st.tensors(f"{side}.{kind}"))
                meta[f"{side}.{kind}"] = json.dumps({"n": st.n, "resolution": st.resolution})
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
        for key, value in meta.items():
            if key == "kind":
                continue
            side, kind = key.split(".", 1)
            info = json.loads(value)
            sides[side][kind] = SiteStats.from_tensors(
                tensors, key, int(info["n"]), float(info["resolution"])
            )
        return cls(sides["positive"], sides["negative"])

    @property
    def diff(self) -> torch.Tensor:
        """``mean_pos - mean_neg`` of every neuron, ``[n_layers, d_mlp]`` float64."""
        return self.positive[NEURONS].mean - self.negative[NEURONS].mean.to(
            self.positive[NEURONS].mean.device
        )


@dataclass(frozen=True)
class Scorer:
    """A named ranking rule: ``fn(evidence)`` returns a ``[n_layers, d_mlp]`` score, larger = better."""

    name: str
    summary: str
    fn: Callable[[Evidence], torch.Tensor]
    needs: tuple[SiteKind, ...] = (NEURONS,)
    min_prompts: int = 1


def _mean_diff(ev: Evidence) -> torch.Tensor:
    return ev.diff.abs()


def _effect_size(ev: Evidence) -> torch.Tensor:
    pos, neg = ev.positive[NEURONS], ev.negative[NEURONS].to(ev.positive[NEURONS].mean.device)
    pooled = ((pos.n - 1) * pos.var + (neg.n - 1) * neg.var) / (pos.n + neg.n - 2)
    floor = torch.maximum(pos.var_floor(), neg.var_floor())
    return ev.diff.abs() / torch.maximum(pooled, floor).sqrt()


SCORERS: dict[str, Scorer] = {
    s.name: s
    for s in (
        Scorer("mean-diff", "|mean_pos - mean_neg| of each neuron (the paper's rule)", _mean_diff),
        Scorer(
            "effect-size",
            "|mean_pos - mean_neg| over the pooled standard deviation (Cohen's d), variance floored at the "
            "dtype's resolution",
            _effect_size,
            min_prompts=2,
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


def score(evidence: Evidence, name: str = "mean-diff") -> tuple[torch.Tensor, torch.Tensor]:
    """``(score, signed diff)``, both ``[n_layers, d_mlp]``, under the scorer ``name``."""
    scorer = get_scorer(name)
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
    return scorer.fn(evidence), evidence.diff


def score_neurons(
    pos: SiteStats, neg: SiteStats, name: str = "mean-diff"
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`score` for neuron statistics alone (scorers that need only the ``mlp.post`` site)."""
    return score(Evidence({NEURONS: pos}, {NEURONS: neg}), name)
