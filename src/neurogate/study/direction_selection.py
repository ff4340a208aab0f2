"""Choosing a residual baseline's direction by its effect, as Arditi et al. (2024) do for directional
ablation; CAA's vector is chosen the same way, so the two baselines get equal care.

Candidates are difference-of-means directions of the residual stream (``resid_post``) at each
post-instruction position and each layer before the last 20%, computed on training prompts. Each candidate
is applied (``method="ablation"``: removed at every residual site; ``method="caa"``: subtracted once after
its layer at strength 1, CAA's full change) and scored on a validation split with one forward pass per
prompt:

- *refusal score*: the log-odds that the first reply token is a refusal token, averaged over harmful
  validation prompts (lower = refusal removed better). Refusal tokens are read off the unsteered model: the
  first tokens it chooses for at least 10% of harmful validation prompts and at most half as often for
  harmless ones;
- *KL*: first-token KL(unsteered || steered) on harmless validation prompts, which must stay under
  ``kl_bound`` (0.1, Arditi et al.'s filter);
- *benign refusal*: the probability mass on refusal tokens for harmless prompts under ablation, which may
  rise by at most ``benign_bound`` over the unsteered model's.

The candidate with the lowest refusal score among those inside both bounds wins. To keep the cost to a
few minutes, every candidate gets the refusal score and only the ``shortlist`` best get the two bounds.
Both methods score the same candidates (the same count, the same ``shortlist``, the same bounds), and the
difference-of-means candidates can be computed once and shared (``diffs``).
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from neurogate.discovery.capture import CaptureOptions, capture_values
from neurogate.discovery.directions import ResidualDirections
from neurogate.errors import ConfigError
from neurogate.evaluation.metrics import next_token_logprobs, token_kl
from neurogate.models.loading import LoadedModel
from neurogate.steering.residual import ablate_direction, add_vector

logger = logging.getLogger(__name__)

#: The methods whose direction :func:`select_direction` chooses.
METHODS = ("ablation", "caa")


@dataclass
class Candidate:
    """One candidate direction: its layer, its position (counted from the end of the prompt: -1 is the
    last token) and its scores (``None`` where it was not measured)."""

    layer: int
    position: int
    refusal_score: float
    kl: float | None = None
    benign_refusal: float | None = None
    passed: bool | None = None


@dataclass
class DirectionSelection:
    """The chosen candidate, how it was chosen, and every candidate's scores. ``method``: the baseline it
    was chosen for (``"ablation"`` in records stored before CAA was chosen this way)."""

    layer: int
    position: int
    refusal_tokens: list[int]
    baseline_refusal_score: float
    baseline_benign_refusal: float
    kl_bound: float
    benign_bound: float
    within_bounds: bool
    candidates: list[Candidate] = field(default_factory=list)
    method: str = "ablation"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DirectionSelection:
        return cls(**{**data, "candidates": [Candidate(**c) for c in data.get("candidates", [])]})


def refusal_tokens(harmful: torch.Tensor, harmless: torch.Tensor, share: float = 0.1) -> list[int]:
    """Tokens the model picks first for at least ``share`` of harmful prompts and at most half as often for
    harmless ones (from next-token log-probabilities ``[n, vocab]``); the most common harmful first token
    when none qualifies."""
    h = Counter(harmful.argmax(-1).tolist())
    b = Counter(harmless.argmax(-1).tolist())
    n_h, n_b = len(harmful), len(harmless)
    chosen = [t for t, c in h.items() if c / n_h >= share and b.get(t, 0) / n_b <= 0.5 * c / n_h]
    return sorted(chosen) or [h.most_common(1)[0][0]]


def _mass(logprobs: torch.Tensor, tokens: Sequence[int]) -> torch.Tensor:
    """Per prompt, the probability of the first reply token being one of ``tokens``."""
    return logprobs[:, list(tokens)].double().exp().sum(-1).clamp(1e-9, 1 - 1e-9)


def refusal_score(logprobs: torch.Tensor, tokens: Sequence[int]) -> float:
    """Mean log-odds of a refusal token first."""
    p = _mass(logprobs, tokens)
    return float((p.log() - (1 - p).log()).mean())


def _kl(base: torch.Tensor, other: torch.Tensor) -> float:
    return float(token_kl(base, other).mean())


def candidate_directions(
    lm: LoadedModel, positive: Sequence[str], negative: Sequence[str], options: CaptureOptions
) -> torch.Tensor:
    """Difference-of-means residual directions at every post-instruction position and layer,
    ``[P, n_layers, d_model]`` (position -P first)."""
    each = CaptureOptions(**{**asdict(options), "positions": "post-each", "progress": False})
    pos = capture_values(lm, positive, "resid_post", each)
    neg = capture_values(lm, negative, "resid_post", each)
    return pos.mean(0) - neg.mean(0)


Apply = Callable[[torch.Tensor, int], contextlib.AbstractContextManager[Any]]


def applier(lm: LoadedModel, method: str) -> Apply:
    """How ``method`` applies a candidate (its vector, its layer) while it is scored: ablation removes the
    direction everywhere; CAA subtracts the vector once after its layer, at strength 1."""
    if method == "ablation":
        return lambda vector, layer: ablate_direction(lm, vector)
    if method == "caa":
        return lambda vector, layer: add_vector(lm, layer, vector, -1.0)
    raise ConfigError(f"direction selection knows the methods {', '.join(METHODS)}, not {method!r}")


def select_direction(
    lm: LoadedModel,
    train: tuple[Sequence[str], Sequence[str]],
    validation: tuple[Sequence[str], Sequence[str]],
    *,
    options: CaptureOptions | None = None,
    kl_bound: float = 0.1,
    benign_bound: float = 0.05,
    shortlist: int = 8,
    first_layer_fraction: float = 0.25,
    method: str = "ablation",
    diffs: torch.Tensor | None = None,
) -> tuple[ResidualDirections, DirectionSelection]:
    """The direction ``method`` uses (as :class:`ResidualDirections` whose ``best_layer`` row is the chosen
    direction) and the record of the selection. ``train``/``validation``: (harmful, harmless) prompts;
    ``diffs``: :func:`candidate_directions` of ``train`` when already computed (for the other method)."""
    apply = applier(lm, method)
    opts = options or CaptureOptions(progress=False)
    if diffs is None:
        diffs = candidate_directions(lm, train[0], train[1], opts)
    n_pos, n_layers = diffs.shape[0], diffs.shape[1]
    layers = range(int(first_layer_fraction * n_layers), max(1, int(0.8 * n_layers)))
    fmt: dict[str, Any] = {"system_prompt": opts.system_prompt, "chat": opts.chat}
    base_h = next_token_logprobs(lm, validation[0], **fmt)
    base_b = next_token_logprobs(lm, validation[1], **fmt)
    tokens = refusal_tokens(base_h, base_b)
    candidates = []
    for p in range(n_pos):
        for layer in layers:
            with apply(diffs[p, layer], layer):
                lp = next_token_logprobs(lm, validation[0], **fmt)
            candidates.append(Candidate(layer, p - n_pos, refusal_score(lp, tokens)))
    candidates.sort(key=lambda c: c.refusal_score)
    base_benign = float(_mass(base_b, tokens).mean())
    for cand in candidates[:shortlist]:
        with apply(diffs[cand.position + n_pos, cand.layer], cand.layer):
            lp = next_token_logprobs(lm, validation[1], **fmt)
        cand.kl, cand.benign_refusal = _kl(base_b, lp), float(_mass(lp, tokens).mean())
        cand.passed = cand.kl <= kl_bound and cand.benign_refusal <= base_benign + benign_bound
    passing = [c for c in candidates if c.passed]
    best = passing[0] if passing else min(candidates[:shortlist], key=lambda c: c.kl or 0.0)
    if not passing:
        logger.warning(
            "no candidate %s direction stays within the KL and benign bounds; using the lowest-KL one", method
        )
    selection = DirectionSelection(
        best.layer,
        best.position,
        tokens,
        refusal_score(base_h, tokens),
        base_benign,
        kl_bound,
        benign_bound,
        bool(passing),
        candidates,
        method,
    )
    chosen = diffs[best.position + n_pos].clone()
    directions = ResidualDirections(
        diffs=chosen,
        best_layer=best.layer,
        separation=[float("nan")] * n_layers,
        n_positive=len(train[0]),
        n_negative=len(train[1]),
        model={"spec": lm.spec, "shape": lm.shape, "position": best.position},
    )
    return directions, selection
