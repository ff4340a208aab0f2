"""Conditions: the interventions a sweep or study evaluates, each named on its kind's own scale.

A :class:`Condition` is a kind from the steering registry at one value (the multiplier ``m`` for neuron
kinds, the strength ``s`` for residual kinds), optionally on the top ``size`` neurons of a circuit or with
a random ``seed``. Any kind at its scale's neutral value (``m = 1``, ``s = 0``) is the shared *baseline*.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from neurogate.errors import ConfigError
from neurogate.steering.base import Scale
from neurogate.steering.registry import KINDS, get_kind

BASELINE = "baseline"


@dataclass(frozen=True)
class Condition:
    """One intervention to evaluate. ``size``: keep only the circuit's top ``size`` neurons (sparsity);
    ``circuit``: which of the evaluator's named circuits a neuron kind acts on (``None``: the main one);
    ``benign``: also generate replies to the benign prompts (over-refusal); KL and corpus perplexity are
    measured either way; ``group``: which experiment."""

    kind: str
    value: float | None = None
    size: int | None = None
    seed: int = 0
    benign: bool = True
    group: str = "sweep"
    circuit: str | None = None

    def __post_init__(self) -> None:
        if self.kind == BASELINE:
            if self.value is not None:
                raise ConfigError("the baseline takes no value")
        else:
            scale = get_kind(self.kind).scale
            if self.value is None:
                raise ConfigError(
                    f"condition {self.kind!r} needs a value on its scale ({scale.name} {scale.symbol})"
                )
            value = self.value
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ConfigError(f"a condition's value must be a finite number, got {value!r}")
        if self.size is not None and (isinstance(self.size, bool) or self.size < 1):
            raise ConfigError(f"circuit size must be at least 1, got {self.size}")

    @property
    def scale(self) -> Scale | None:
        return None if self.kind == BASELINE else get_kind(self.kind).scale

    @property
    def is_baseline(self) -> bool:
        scale = self.scale
        return scale is None or self.value == scale.neutral

    @property
    def number(self) -> float:
        """The value on the kind's scale (0.0 for the baseline, which has no scale)."""
        return 0.0 if self.value is None else float(self.value)

    @property
    def key(self) -> str:
        """A file-name-safe identifier; equal conditions share it (and so share stored results)."""
        scale = self.scale
        if self.is_baseline or scale is None:
            return BASELINE
        key = f"{self.kind}-{scale.symbol}{self.number:g}"
        if self.size is not None:
            key += f"-n{self.size}"
        if self.kind == "random":
            key += f"-seed{self.seed}"
        if self.circuit is not None:
            key += f"@{self.circuit}"
        return key

    @property
    def label(self) -> str:
        """``"cna m=0"``, ``"caa s=1"``, ``"baseline"``: the kind and its number on its named scale."""
        scale = self.scale
        if self.is_baseline or scale is None:
            return BASELINE
        label = f"{self.kind} {scale.label(self.number)}"
        return label if self.circuit is None else f"{label} [{self.circuit}]"


def baseline() -> Condition:
    return Condition(BASELINE)


def plan_sweep(kinds: Iterable[str], values: Mapping[str, Sequence[float]]) -> list[Condition]:
    """The baseline once, then every kind at every non-neutral value of its scale.

    ``values`` maps a scale name (``"multiplier"``, ``"strength"``) to the values to try on it.
    """
    plan = [baseline()]
    for kind in kinds:
        scale = get_kind(kind).scale
        if scale.name not in values:
            raise ConfigError(f"no {scale.name} values given for {kind!r} (its scale is the {scale.name})")
        plan += [Condition(kind, float(v)) for v in values[scale.name] if float(v) != scale.neutral]
    return plan


def check_kinds(kinds: Iterable[str]) -> tuple[str, ...]:
    """Validate intervention kind names (each must be in the steering registry)."""
    out = tuple(kinds)
    for kind in out:
        get_kind(kind)
    if not out:
        raise ConfigError(f"give at least one method; choose from {', '.join(KINDS)}")
    return out
