"""Measuring a single-prompt attribution: the ablation self-check and the comparison with a circuit.

The self-check ablates (``m = 0``, the ``cna`` intervention) the attribution's top-k neurons and, as the
control, as many random neurons with the same per-layer counts (the ``random`` intervention, averaged over
a few seeds), and compares how far each moves the target's log-prob. The comparison with a contrastive
circuit counts shared neurons and the circuit's share of the total absolute attribution.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import torch

from neurogate.discovery.attribution import Attribution, Target, target_logprob_from
from neurogate.discovery.circuit import Circuit
from neurogate.discovery.linearise import attention_implementation
from neurogate.errors import CircuitError, ConfigError
from neurogate.models.loading import LoadedModel
from neurogate.steering.base import Intervention
from neurogate.steering.registry import make


def target_logprob(
    lm: LoadedModel, ids: list[int], n_prompt: int, target: Target, intervention: Intervention | None = None
) -> float:
    """The target's summed log-prob after ``ids`` (eager attention), with ``intervention`` attached."""
    inputs = torch.tensor([ids], dtype=torch.long, device=lm.device)
    with torch.no_grad(), attention_implementation(lm, "eager"):
        if intervention is None:
            logits = lm.model(input_ids=inputs, use_cache=False).logits
        else:
            with intervention:
                logits = lm.model(input_ids=inputs, use_cache=False).logits
        return float(target_logprob_from(logits, n_prompt, target))


@dataclass(frozen=True)
class SelfCheck:
    """The target's log-prob unchanged, the change when the top-k are ablated, the mean change over the
    random controls (and each), and ``ratio`` = |top-k change| / mean |random change|."""

    logprob: float
    top_delta: float
    random_delta: float
    random_deltas: tuple[float, ...]
    ratio: float
    k: int

    @property
    def passed(self) -> bool:
        """Whether ablating the top-k moved the target more than ablating random neurons did."""
        return abs(self.top_delta) > sum(abs(d) for d in self.random_deltas) / len(self.random_deltas)

    def line(self) -> str:
        """One line for people: both changes and their ratio."""
        verdict = "ok" if self.passed else "FAILED"
        return (
            f"self-check {verdict}: ablating the top {self.k} neurons moves log p(target) by "
            f"{self.top_delta:+.4f}, {self.k} random neurons of the same layers by {self.random_delta:+.4f} "
            f"(mean |change| over {len(self.random_deltas)} draws); ratio {self.ratio:.1f}x"
        )

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "random_deltas": list(self.random_deltas), "passed": self.passed}


def self_check(lm: LoadedModel, attribution: Attribution) -> SelfCheck:
    """Ablate the attribution's circuit and random controls and measure the target's log-prob."""
    a = attribution
    base = target_logprob(lm, a.input_ids, a.n_prompt, a.target)
    top = target_logprob(lm, a.input_ids, a.n_prompt, a.target, make("cna", lm, a.circuit, 0.0))
    deltas = tuple(
        target_logprob(lm, a.input_ids, a.n_prompt, a.target, make("random", lm, a.circuit, 0.0, seed=seed))
        - base
        for seed in range(a.config.control_seeds)
    )
    mean_abs = sum(abs(d) for d in deltas) / len(deltas)
    ratio = abs(top - base) / mean_abs if mean_abs > 0 else float("inf")
    return SelfCheck(base, top - base, sum(deltas) / len(deltas), deltas, ratio, len(a.circuit))


@dataclass(frozen=True)
class Comparison:
    """An attribution's top-k against a circuit: ``overlap`` shared neurons, ``jaccard`` their share of
    the union, ``share`` the circuit's neurons' share of the total absolute attribution (over every
    neuron), ``top_share`` the same for the attribution's own top-k."""

    circuit_size: int
    top_k: int
    overlap: int
    jaccard: float
    share: float
    top_share: float

    def line(self) -> str:
        return (
            f"vs the circuit ({self.circuit_size} neurons): {self.overlap} shared with the top {self.top_k} "
            f"(Jaccard {self.jaccard:.3f}); the circuit holds {100 * self.share:.1f}% of the total "
            f"|attribution| (the top {self.top_k}: {100 * self.top_share:.1f}%)"
        )

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def load_circuit(path: str | os.PathLike[str], lm: LoadedModel) -> Circuit:
    """A circuit file to compare with, checked against ``lm``; a missing, invalid or foreign circuit is
    a :class:`ConfigError`."""
    try:
        circuit = Circuit.load(path)
        circuit.check_model(lm)
    except CircuitError as exc:
        raise ConfigError(f"cannot compare with the circuit {os.fspath(path)!r}: {exc}") from exc
    return circuit


def compare(attribution: Attribution, circuit: Circuit) -> Comparison:
    """How ``circuit`` relates to ``attribution`` (see :class:`Comparison`)."""
    n_layers, d_mlp = attribution.scores.shape
    shape = circuit.shape
    if (shape.get("n_layers"), shape.get("d_mlp")) != (n_layers, d_mlp):
        raise ConfigError(
            f"the circuit was found on a model with {shape.get('n_layers')} layers x {shape.get('d_mlp')} "
            f"neurons, the attribution's model has {n_layers} x {d_mlp}; compare circuits of the same model"
        )
    mine = {(n.layer, n.index) for n in attribution.circuit.neurons}
    theirs = {(n.layer, n.index) for n in circuit.neurons}
    size = attribution.scores.abs()
    total = float(size.sum())

    def share(cells: set[tuple[int, int]]) -> float:
        if total == 0 or not cells:
            return 0.0
        return sum(float(size[layer, index]) for layer, index in cells) / total

    union = mine | theirs
    return Comparison(
        circuit_size=len(theirs),
        top_k=len(mine),
        overlap=len(mine & theirs),
        jaccard=len(mine & theirs) / len(union) if union else 0.0,
        share=share(theirs),
        top_share=share(mine),
    )
