"""Neuron statistics and selection: running sums per neuron, contrastive scores, and the top-k pick.

Everything here is plain tensor math on ``[n_layers, d_mlp]`` grids; nothing runs a model.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from neurogate.errors import ConfigError, PromptSetError

ScoreName = Literal["mean-diff", "effect-size"]
SCORES: tuple[str, ...] = ("mean-diff", "effect-size")
DEFAULT_FRACTION = 0.001
EPSILON = 1e-6


@dataclass
class SiteStats:
    """Running fp32 sums of the neuron values over ``n`` prompts, ``[n_layers, d_mlp]`` each.

    Memory is fixed by the model's shape, however many prompts are added.
    """

    n: int
    sum: torch.Tensor
    sumsq: torch.Tensor

    @classmethod
    def zeros(cls, n_layers: int, d_mlp: int, device: torch.device | str = "cpu") -> SiteStats:
        shape = (n_layers, d_mlp)
        return cls(
            0,
            torch.zeros(shape, dtype=torch.float32, device=device),
            torch.zeros(shape, dtype=torch.float32, device=device),
        )

    def update(self, acts: torch.Tensor) -> None:
        """Add a batch of per-prompt values ``[batch, n_layers, d_mlp]``."""
        assert acts.dim() == 3 and acts.shape[1:] == self.sum.shape, (acts.shape, self.sum.shape)
        acts = acts.to(device=self.sum.device, dtype=torch.float32)
        self.sum += acts.sum(dim=0)
        self.sumsq += acts.square().sum(dim=0)
        self.n += int(acts.shape[0])

    @property
    def mean(self) -> torch.Tensor:
        """Per-neuron mean ``[n_layers, d_mlp]`` (zeros before any update)."""
        return self.sum / max(self.n, 1)

    @property
    def var(self) -> torch.Tensor:
        """Per-neuron sample variance (``n - 1`` in the denominator; zeros when ``n < 2``)."""
        if self.n < 2:
            return torch.zeros_like(self.sum)
        centred = self.sumsq - self.sum.square() / self.n
        return (centred / (self.n - 1)).clamp_min(0.0)


def score_neurons(
    pos: SiteStats, neg: SiteStats, score: ScoreName = "mean-diff"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Contrastive scores ``(score >= 0, signed diff)``, both ``[n_layers, d_mlp]``.

    ``diff = mean_pos - mean_neg``. ``mean-diff`` scores ``|diff|``; ``effect-size`` scores ``|diff|`` over
    the pooled standard deviation (Cohen's d), which needs at least two prompts on each side.
    """
    if score not in SCORES:
        raise ConfigError(f"unknown score {score!r}: use one of {', '.join(SCORES)}")
    if pos.sum.shape != neg.sum.shape:
        raise ConfigError(
            f"the two statistics have different shapes {tuple(pos.sum.shape)} and {tuple(neg.sum.shape)}"
        )
    if pos.n < 1 or neg.n < 1:
        raise PromptSetError("both prompt sets need at least one prompt to score neurons")
    diff = pos.mean - neg.mean.to(pos.sum.device)
    if score == "mean-diff":
        return diff.abs(), diff
    if pos.n < 2 or neg.n < 2:
        raise PromptSetError(
            "the effect-size score needs at least two prompts on each side (it uses the variance)"
        )
    pooled = ((pos.n - 1) * pos.var + (neg.n - 1) * neg.var.to(pos.sum.device)) / (pos.n + neg.n - 2)
    return diff.abs() / (pooled.sqrt() + EPSILON), diff


def top_count(n_neurons: int, fraction: float | None = None, top_k: int | None = None) -> int:
    """How many neurons to keep: ``top_k``, or ``max(1, round(fraction * n_neurons))`` (default 0.1%)."""
    if fraction is not None and top_k is not None:
        raise ConfigError("give either a fraction or top_k, not both")
    if top_k is not None:
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ConfigError(f"top_k must be a whole number >= 1, got {top_k!r}")
        if top_k > n_neurons:
            raise ConfigError(f"top_k={top_k} is more than the model's {n_neurons} MLP neurons")
        return top_k
    frac = DEFAULT_FRACTION if fraction is None else fraction
    if isinstance(frac, bool) or not isinstance(frac, int | float) or not 0.0 < float(frac) <= 1.0:
        raise ConfigError(f"fraction must be in (0, 1] (0.001 keeps 0.1% of the neurons), got {frac!r}")
    return max(1, round(float(frac) * n_neurons))


def check_layers(exclude_layers: Sequence[int], n_layers: int) -> tuple[int, ...]:
    """Validate layer indices to exclude (negative ones count from the end); return them sorted, >= 0."""
    out: set[int] = set()
    for layer in exclude_layers:
        if isinstance(layer, bool) or not isinstance(layer, int) or not -n_layers <= layer < n_layers:
            raise ConfigError(f"exclude_layers holds {layer!r}, but the model has layers 0..{n_layers - 1}")
        out.add(layer % n_layers)
    if len(out) == n_layers:
        raise ConfigError("exclude_layers excludes every layer, so no neuron is left to select")
    return tuple(sorted(out))


def select_top(
    scores: torch.Tensor,
    *,
    fraction: float | None = None,
    top_k: int | None = None,
    exclude_layers: Sequence[int] = (),
    exclude: Collection[tuple[int, int]] = frozenset(),
) -> list[tuple[int, int]]:
    """The ``(layer, index)`` of the best-scoring neurons, best first.

    ``k`` counts against ALL neurons of all layers (see :func:`top_count`); excluded layers and neurons are
    skipped, so the result still has ``k`` entries when enough remain. Ties break by layer, then index;
    NaN scores rank last.
    """
    if scores.dim() != 2:
        raise ConfigError(f"scores must be [n_layers, d_mlp], got shape {tuple(scores.shape)}")
    n_layers, d_mlp = scores.shape
    k = top_count(scores.numel(), fraction, top_k)
    layers = check_layers(exclude_layers, n_layers)
    grid = torch.nan_to_num(scores.detach().to("cpu", torch.float64), nan=-1.0, posinf=1e300, neginf=-1.0)
    valid = torch.ones_like(grid, dtype=torch.bool)
    if layers:
        valid[list(layers), :] = False
    for layer, index in exclude:
        if 0 <= layer < n_layers and 0 <= index < d_mlp:
            valid[layer, index] = False
    flat = torch.where(valid, grid, torch.full_like(grid, -torch.inf)).flatten()
    order = torch.sort(flat, descending=True, stable=True).indices
    available = int(valid.sum())
    chosen = order[: min(k, available)].tolist()
    return [(i // d_mlp, i % d_mlp) for i in chosen]
