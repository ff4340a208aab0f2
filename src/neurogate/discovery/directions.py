"""Residual-stream difference-of-means directions, the raw material of the CAA and ablation baselines.

For each layer ``i`` the residual stream after that layer is read at the last prompt token; the direction
is ``mean_pos - mean_neg``. The *best layer* is the one whose direction best separates held-out prompts:
project each held-out prompt onto the direction (computed on the other prompts) and call it positive when
the projection is above the midpoint of the two training means; the layer with the highest held-out
accuracy wins, ties going to the later layer. As in Arditi et al. (2024), the last 20% of the layers are
not candidates: their directions mostly encode the next output token, and removing them everywhere hurts
unrelated prompts (on Qwen2.5-Coder-1.5B the last layer's direction raised benign refusal to 29%).
"""

from __future__ import annotations

import json
import logging
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from neurogate.atomic import atomic_path
from neurogate.discovery.capture import CaptureOptions, capture_values
from neurogate.errors import ConfigError, NeurogateError
from neurogate.models.loading import LoadedModel

logger = logging.getLogger(__name__)


@dataclass
class ResidualDirections:
    """Per-layer residual difference-of-means vectors and how well each separates the two sets.

    ``diffs``: ``[n_layers, d_model]`` float32, ``mean_pos - mean_neg`` over all prompts.
    ``separation``: held-out accuracy per layer (0.5 = chance, 1 = perfect).
    ``best_layer``: the layer with the highest separation among the first 80% (ties -> later layer).
    """

    diffs: torch.Tensor
    best_layer: int
    separation: list[float]
    n_positive: int = 0
    n_negative: int = 0
    model: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.diffs.dim() != 2:
            raise ConfigError(f"diffs must be [n_layers, d_model], got shape {list(self.diffs.shape)}")
        if not 0 <= self.best_layer < self.diffs.shape[0]:
            raise ConfigError(f"best_layer {self.best_layer} is outside 0..{self.diffs.shape[0] - 1}")
        self.diffs = self.diffs.float()

    @property
    def n_layers(self) -> int:
        return int(self.diffs.shape[0])

    def vector(self, layer: int | None = None) -> torch.Tensor:
        """The difference vector at ``layer`` (default: the best layer)."""
        return self.diffs[self.best_layer if layer is None else self.check_layer(layer)]

    def unit(self, layer: int | None = None) -> torch.Tensor:
        """The unit direction at ``layer`` (default: the best layer)."""
        v = self.vector(layer)
        norm = v.norm()
        if norm == 0:
            raise ConfigError(f"the direction at layer {layer} is zero; the two prompt sets look identical")
        return v / norm

    def check_layer(self, layer: int) -> int:
        if not 0 <= layer < self.n_layers:
            raise ConfigError(f"layer {layer} is outside this model's 0..{self.n_layers - 1}")
        return layer

    def check_model(self, lm: LoadedModel) -> None:
        """Raise unless the directions have ``lm``'s shape."""
        if self.diffs.shape != (lm.adapter.n_layers, lm.adapter.d_model):
            raise ConfigError(
                f"these directions are [{self.n_layers}, {self.diffs.shape[1]}] but {lm.spec} has "
                f"{lm.adapter.n_layers} layers of width {lm.adapter.d_model}"
                "; compute directions on this model"
            )

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write as safetensors (tensor + JSON metadata), atomically."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        meta = {
            "kind": "neurogate.directions",
            "best_layer": str(self.best_layer),
            "separation": json.dumps(self.separation),
            "n_positive": str(self.n_positive),
            "n_negative": str(self.n_negative),
            "model": json.dumps(self.model),
        }
        with atomic_path(target) as tmp:
            save_file({"diffs": self.diffs.contiguous()}, str(tmp), metadata=meta)
        return target

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ResidualDirections:
        """Read a file written by :meth:`save`."""
        p = Path(path)
        if not p.is_file():
            raise NeurogateError(f"directions file {str(p)!r} does not exist")
        try:
            with safe_open(str(p), framework="pt") as fh:
                meta = fh.metadata() or {}
            if meta.get("kind") != "neurogate.directions":
                raise NeurogateError(f"{p} is not a neurogate directions file")
            directions = cls(
                diffs=load_file(str(p))["diffs"],
                best_layer=int(meta["best_layer"]),
                separation=[float(s) for s in json.loads(meta["separation"])],
                n_positive=int(meta.get("n_positive", 0)),
                n_negative=int(meta.get("n_negative", 0)),
                model=json.loads(meta.get("model", "{}")),
            )
        except (OSError, SafetensorError, KeyError, TypeError, ValueError) as exc:  # JSON errors too
            raise NeurogateError(
                f"cannot read the directions file {p} ({type(exc).__name__}: {exc}); delete it to recompute"
            ) from exc
        if len(directions.separation) != directions.n_layers or not isinstance(directions.model, dict):
            raise NeurogateError(f"{p} is a damaged directions file; delete it to recompute")
        return directions


def residual_last_token(
    lm: LoadedModel, prompts: Sequence[str], options: CaptureOptions | None = None
) -> torch.Tensor:
    """The residual stream after every layer at each prompt's last token, ``[n_prompts, n_layers,
    d_model]`` float32 on the CPU, in prompt order (the ``resid_post`` site of the capture engine)."""
    return capture_values(lm, prompts, "resid_post", options)


def _accuracy(
    pos: torch.Tensor, neg: torch.Tensor, train_pos: torch.Tensor, train_neg: torch.Tensor
) -> float:
    """Held-out accuracy of a midpoint threshold on the projection onto the training mean difference."""
    mp, mn = train_pos.mean(0), train_neg.mean(0)
    direction = mp - mn
    threshold = float(((mp + mn) / 2) @ direction)
    right = int(((pos @ direction) > threshold).sum()) + int(((neg @ direction) <= threshold).sum())
    return right / (len(pos) + len(neg))


def candidate_layers(n_layers: int) -> range:
    """Layers eligible as the best layer: all but the last 20% (at least one)."""
    return range(max(1, int(0.8 * n_layers)))


def compute_directions(
    lm: LoadedModel,
    positive: Sequence[str],
    negative: Sequence[str],
    *,
    heldout_fraction: float = 0.25,
    options: CaptureOptions | None = None,
    seed: int = 0,
) -> ResidualDirections:
    """Difference-of-means residual directions for every layer, and the layer that separates best.

    ``heldout_fraction`` of each set (shuffled with ``seed``) scores the layers; the returned ``diffs`` use
    all prompts. With fewer than 2 held-out prompts per side the layers are scored in-sample (warned).
    """
    if not positive or not negative:
        raise ConfigError("compute_directions needs at least one positive and one negative prompt")
    if not 0.0 <= heldout_fraction < 1.0:
        raise ConfigError(f"heldout_fraction must be in [0, 1), got {heldout_fraction}")
    opts = options or CaptureOptions(progress=False)
    acts_pos = residual_last_token(lm, positive, opts)
    acts_neg = residual_last_token(lm, negative, opts)
    rng = random.Random(seed)
    perm_pos = list(range(len(positive)))
    perm_neg = list(range(len(negative)))
    rng.shuffle(perm_pos)
    rng.shuffle(perm_neg)
    k_pos = int(len(positive) * heldout_fraction)
    k_neg = int(len(negative) * heldout_fraction)
    if min(k_pos, k_neg) < 2 or k_pos == len(positive) or k_neg == len(negative):
        logger.warning("too few prompts to hold some out; scoring layers on the prompts the means come from")
        held_pos = train_pos = perm_pos
        held_neg = train_neg = perm_neg
    else:
        held_pos, train_pos = perm_pos[:k_pos], perm_pos[k_pos:]
        held_neg, train_neg = perm_neg[:k_neg], perm_neg[k_neg:]
    separation = [
        _accuracy(a_pos[held_pos], a_neg[held_neg], a_pos[train_pos], a_neg[train_neg])
        for a_pos, a_neg in zip(acts_pos.unbind(1), acts_neg.unbind(1), strict=True)
    ]
    best = max(candidate_layers(len(separation)), key=lambda i: (separation[i], i))
    return ResidualDirections(
        diffs=acts_pos.mean(0) - acts_neg.mean(0),
        best_layer=best,
        separation=separation,
        n_positive=len(positive),
        n_negative=len(negative),
        model={"spec": lm.spec, "shape": lm.shape},
    )
