"""One point of the search space, and turning it into a circuit from stored statistics (no forward pass)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import optuna

from neurogate.discovery.circuit import SITE, Circuit, Neuron
from neurogate.discovery.config import PAPER_RULE
from neurogate.discovery.scoring import Evidence, score
from neurogate.discovery.selection import select_top
from neurogate.models.loading import LoadedModel
from neurogate.tuning.config import TuneConfig


@dataclass(frozen=True)
class Point:
    """How a circuit is chosen and steered: scorer, sign, positions, size (share of all neurons), the
    window of layers it may use ``[first_layer, last_layer]``, the intervention, its multiplier, and how
    the neurons share it (``weights``: ``uniform`` or ``proportional`` to each neuron's score)."""

    scorer: str
    sign: str
    positions: str
    fraction: float
    first_layer: int
    last_layer: int
    intervention: str
    multiplier: float
    weights: str = "uniform"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def label(self) -> str:
        return (
            f"{self.scorer}/{self.sign}/{self.positions}, {100 * self.fraction:.3f}%, layers "
            f"{self.first_layer}-{self.last_layer}, {self.intervention} m={self.multiplier:.2f}"
            + (f" ({self.weights})" if self.weights != "uniform" else "")
        )


def suggest(trial: optuna.Trial, config: TuneConfig, n_layers: int) -> Point:
    """Draw a point from the search space (the sampler decides where)."""
    lo, hi = config.multipliers
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
    )


def paper_point(n_layers: int, cap: float) -> Point:
    """The paper's rule at the cap: mean difference, last token, every layer, ablation."""
    r = PAPER_RULE
    return Point(r["score"], r["sign"], r["positions"], cap, 0, n_layers - 1, "cna", 0.0, r["weights"])


def circuit_at(
    lm: LoadedModel, point: Point, evidence: Evidence, universal: set[tuple[int, int]], spec: dict[str, Any]
) -> Circuit:
    """The circuit ``point`` selects from ``evidence`` (statistics gathered at ``point.positions``), with
    universal neurons and layers outside the window skipped."""
    scores, _ = score(evidence, point.scorer, lm=lm, sign=point.sign)  # type: ignore[arg-type]
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
    return circuit.weighted(point.weights)
