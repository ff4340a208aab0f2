"""Statistics of rates: the Wilson interval and the :class:`Rate` every table reports."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from neurogate.errors import ConfigError


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval for ``k`` successes in ``n`` trials (95% by default); (0, 1) when n = 0."""
    if n < 0 or not 0 <= k <= n:
        raise ConfigError(f"wilson_interval needs 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return 0.0, 1.0
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class Rate:
    """``k`` of ``n`` with its 95% Wilson interval ``[low, high]``."""

    k: int
    n: int
    low: float
    high: float

    @property
    def value(self) -> float:
        return self.k / self.n if self.n else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "value": self.value}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Rate:
        return cls(int(data["k"]), int(data["n"]), float(data["low"]), float(data["high"]))

    def __str__(self) -> str:
        return f"{100 * self.value:.0f}% [{100 * self.low:.0f}-{100 * self.high:.0f}]"


def rate_of(scores: Sequence[float], threshold: float = 0.5) -> Rate:
    """Count scores at or above ``threshold`` as hits and return the rate with its Wilson interval."""
    k = sum(1 for s in scores if s >= threshold)
    low, high = wilson_interval(k, len(scores))
    return Rate(k, len(scores), low, high)
