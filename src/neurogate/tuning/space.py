"""One point of the search space, and turning it into a circuit from stored statistics (no forward pass)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import optuna
import torch

from neurogate.discovery.circuit import SITE, Circuit, Neuron
from neurogate.discovery.config import PAPER_RULE
from neurogate.discovery.scoring import Evidence, score
from neurogate.discovery.selection import select_top
from neurogate.models.loading import LoadedModel
from neurogate.tuning.config import EXPORTABLE, TuneConfig

PAPER_FRACTION = 0.001
"""The paper's circuit size (0.1% of all MLP neurons): the paper's rule and the seeded points use it (or the
cap, when that is smaller), however far the search's sizes reach."""


@dataclass(frozen=True)
class Point:
    """How a circuit is chosen and steered: scorer, sign, positions, size (share of all neurons), the
    window of layers it may use ``[first_layer, last_layer]``, the intervention, its multiplier, and how
    the neurons share it (``weights``: ``uniform`` or ``proportional`` to each neuron's score).
    ``slope``: a linear profile of the multiplier over the window, from ``multiplier - slope / 2`` at
    ``first_layer`` to ``multiplier + slope / 2`` at ``last_layer`` (``multiplier`` is its mean; 0, the
    default, steers every layer alike, exactly as points stored before profiles)."""

    scorer: str
    sign: str
    positions: str
    fraction: float
    first_layer: int
    last_layer: int
    intervention: str
    multiplier: float
    weights: str = "uniform"
    slope: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def label(self) -> str:
        return (
            f"{self.scorer}/{self.sign}/{self.positions}, {100 * self.fraction:.3f}%, layers "
            f"{self.first_layer}-{self.last_layer}, {self.intervention} {multiplier_text(self.to_dict())}"
            + (f" ({self.weights})" if self.weights != "uniform" else "")
        )

    @property
    def exportable(self) -> bool:
        """Whether a plain LoRA adapter or a GGUF ``ffn_down`` fold can serve it (no constant written)."""
        return self.intervention in EXPORTABLE

    def multiplier_at(self, layer: int) -> float:
        """The multiplier of ``layer`` under the point's profile (its own ``multiplier`` when flat)."""
        span = self.last_layer - self.first_layer
        if self.slope == 0.0 or span <= 0:
            return self.multiplier
        return self.multiplier + self.slope * ((layer - self.first_layer) / span - 0.5)

    @property
    def condition_multiplier(self) -> float:
        """The one multiplier the intervention is run with: the point's own; for a profile too, its
        per-layer values then live in the neurons' weights (:func:`profiled`), relative to this one (0 in
        the rare case where the mean multiplier is 1 and cannot carry a profile)."""
        if self.slope != 0.0 and abs(self.multiplier - 1.0) < 1e-3:
            return 0.0
        return self.multiplier


def multiplier_text(point: dict[str, Any]) -> str:
    """``m=-1.00``, or ``m=-1.00 (-1.40 to -0.60 over the layers)`` for a profile (a stored point's dict;
    points stored before profiles have no slope)."""
    m, slope = float(point["multiplier"]), float(point.get("slope", 0.0))
    if slope == 0.0:
        return f"m={m:.2f}"
    return f"m={m:.2f} ({m - slope / 2:.2f} to {m + slope / 2:.2f} over the layers)"


def profiled(circuit: Circuit, point: Point) -> Circuit:
    """``circuit`` with ``point``'s multiplier profile folded into each neuron's weight, so that at
    ``point.condition_multiplier`` every neuron's factor ``1 + weight * (m - 1)`` is the one its layer's
    multiplier gives (the hooks, the fold and export read the same factors). A flat point returns the
    circuit unchanged."""
    if point.slope == 0.0:
        return circuit
    ref = point.condition_multiplier
    neurons = [
        replace(n, weight=n.weight * (point.multiplier_at(n.layer) - 1.0) / (ref - 1.0))
        for n in circuit.neurons
    ]
    profile = {
        "slope": point.slope,
        "m_first": point.multiplier_at(point.first_layer),
        "m_last": point.multiplier_at(point.last_layer),
        "reference": ref,
    }
    return replace(circuit, neurons=neurons, method={**circuit.method, "profile": profile})


def suggest(trial: optuna.Trial, config: TuneConfig, n_layers: int) -> Point:
    """Draw a point from the search space (the sampler decides where)."""
    lo, hi = config.multipliers
    s_lo, s_hi = config.slopes
    return Point(
        scorer=trial.suggest_categorical("scorer", list(config.scorers)),
        sign=trial.suggest_categorical("sign", list(config.signs)),
        positions=trial.suggest_categorical("positions", list(config.positions)),
        fraction=trial.suggest_float("fraction", config.min_fraction, config.cap, log=True),
        first_layer=trial.suggest_int("first_layer", 0, n_layers // 2),
        last_layer=trial.suggest_int("last_layer", n_layers // 2, n_layers - 1),
        intervention=trial.suggest_categorical("intervention", list(config.interventions)),
        multiplier=trial.suggest_float("multiplier", lo, hi),
        weights=trial.suggest_categorical("weights", list(config.weights)),
        slope=trial.suggest_float("slope", s_lo, s_hi) if s_lo < s_hi else s_lo,
    )


def paper_size(cap: float, min_fraction: float = 0.0) -> float:
    """The paper's 0.1%, kept inside the search's size range ``[min_fraction, cap]``."""
    return max(min_fraction, min(cap, PAPER_FRACTION))


def paper_point(n_layers: int, cap: float, min_fraction: float = 0.0) -> Point:
    """The paper's rule at its size (:func:`paper_size`): mean difference, last token, every layer,
    ablation."""
    r = PAPER_RULE
    size = paper_size(cap, min_fraction)
    return Point(r["score"], r["sign"], r["positions"], size, 0, n_layers - 1, "cna", 0.0, r["weights"])


def circuit_at(
    lm: LoadedModel,
    point: Point,
    evidence: Evidence,
    universal: set[tuple[int, int]],
    spec: dict[str, Any],
    direction: torch.Tensor | None = None,
) -> Circuit:
    """The circuit ``point`` selects from ``evidence`` (statistics gathered at ``point.positions``), with
    universal neurons and layers outside the window skipped, and its multiplier profile in the neurons'
    weights. ``direction``: the residual direction the ``ablation-direction`` scorer ranks along (``None``:
    the one it reads off ``evidence``)."""
    scores, _ = score(evidence, point.scorer, lm=lm, sign=point.sign, direction=direction)  # type: ignore[arg-type]
    n_layers = lm.adapter.n_layers
    outside = [layer for layer in range(n_layers) if not point.first_layer <= layer <= point.last_layer]
    k = max(1, round(point.fraction * lm.adapter.n_neurons))
    chosen = select_top(scores, top_k=k, exclude_layers=outside, exclude=universal)
    diff = evidence.diff.cpu()
    mean_pos = evidence.positive["mlp.post"].mean.cpu()
    mean_neg = evidence.negative["mlp.post"].mean.cpu()
    scores = scores.cpu()
    neurons = [
        Neuron(
            layer,
            index,
            float(scores[layer, index]),
            float(diff[layer, index]),
            float(mean_pos[layer, index]),
            float(mean_neg[layer, index]),
        )
        for layer, index in chosen
    ]
    # "score" names the scorer under the key discovered circuits use, so summaries read both alike
    method = {"name": "neurogate tune", "score": point.scorer, **point.to_dict(), "k": k, "site": SITE}
    circuit = Circuit(
        neurons=neurons, model={"spec": lm.spec, "shape": lm.shape}, method=method, prompts=spec
    )
    return profiled(circuit.weighted(point.weights), point)
