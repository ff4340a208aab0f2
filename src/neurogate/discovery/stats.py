"""Running per-unit statistics of a site over prompts: count, mean and variance, numerically sound.

Batches are merged with Chan et al.'s parallel form of Welford's algorithm in float64, so a neuron with a
large mean and a tiny spread keeps its variance (the naive ``E[x^2] - E[x]^2`` in float32 returns 0 for a
neuron with mean 50 and sd 0.01). :meth:`SiteStats.var_floor` is the variance the activation dtype can
resolve at each unit's magnitude: two neurons that differ by one rounding step are not "separated".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass
class SiteStats:
    """Count, mean, sum of squared deviations (``m2``) and mean absolute value (``abs_mean``, the unit's
    typical magnitude) per unit, ``[n_layers, width]`` float64 each.

    ``resolution``: the relative precision of the activations' dtype (``torch.finfo(dtype).eps``).
    Memory is fixed by the model's shape, however many prompts are added.
    """

    n: int
    mean: torch.Tensor
    m2: torch.Tensor
    abs_mean: torch.Tensor
    resolution: float = 2.0**-23

    @classmethod
    def zeros(
        cls, n_layers: int, width: int, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"
    ) -> SiteStats:
        shape = (n_layers, width)

        def zeros() -> torch.Tensor:
            return torch.zeros(shape, dtype=torch.float64, device=device)

        return cls(0, zeros(), zeros(), zeros(), float(torch.finfo(dtype).eps))

    def update(self, values: torch.Tensor) -> None:
        """Add a batch of per-prompt values ``[batch, n_layers, width]``."""
        if values.dim() != 3 or values.shape[1:] != self.mean.shape:
            raise ValueError(f"expected [batch, {list(self.mean.shape)}], got {list(values.shape)}")
        k = int(values.shape[0])
        if k == 0:
            return
        x = values.to(device=self.mean.device, dtype=torch.float64)
        batch_mean = x.mean(0)
        batch_m2 = (x - batch_mean).square().sum(0)
        total = self.n + k
        delta = batch_mean - self.mean
        self.mean += delta * (k / total)
        self.m2 += batch_m2 + delta.square() * (self.n * k / total)
        self.abs_mean += (x.abs().mean(0) - self.abs_mean) * (k / total)
        self.n = total

    @property
    def var(self) -> torch.Tensor:
        """Per-unit sample variance (``n - 1`` in the denominator; zeros when ``n < 2``)."""
        if self.n < 2:
            return torch.zeros_like(self.mean)
        return (self.m2 / (self.n - 1)).clamp_min(0.0)

    def var_floor(self) -> torch.Tensor:
        """The smallest variance the activations' dtype can express at each unit's magnitude:
        ``(resolution * |mean|)^2``, plus a tiny absolute term for units at zero."""
        return (self.resolution * self.mean.abs()).square() + 1e-12

    def to(self, device: torch.device | str) -> SiteStats:
        return SiteStats(
            self.n, self.mean.to(device), self.m2.to(device), self.abs_mean.to(device), self.resolution
        )

    def tensors(self, prefix: str) -> dict[str, torch.Tensor]:
        """The statistics as named tensors (for saving)."""
        return {f"{prefix}.mean": self.mean, f"{prefix}.m2": self.m2, f"{prefix}.abs_mean": self.abs_mean}

    @classmethod
    def from_tensors(
        cls, tensors: dict[str, torch.Tensor], prefix: str, n: int, resolution: float
    ) -> SiteStats:
        """The inverse of :meth:`tensors`."""
        return cls(
            n, tensors[f"{prefix}.mean"], tensors[f"{prefix}.m2"], tensors[f"{prefix}.abs_mean"], resolution
        )


DEFAULT_EXTREMES = 5


class PromptExtremes:
    """Running ``k`` largest and smallest values per unit of a ``[n_layers, width]`` site, with the global
    row (prompt) id of each: ``2k`` values per unit, whatever the number of prompts. Feed it batches with
    :meth:`update`; read with :meth:`most` / :meth:`least`."""

    def __init__(self, k: int = DEFAULT_EXTREMES) -> None:
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        self.k = k
        self._top: tuple[torch.Tensor, torch.Tensor] | None = None  # values, ids: [<=k, L, W] each
        self._bottom: tuple[torch.Tensor, torch.Tensor] | None = None

    def update(self, values: torch.Tensor, ids: Sequence[int]) -> None:
        """Add a batch: ``values`` ``[batch, n_layers, width]``, ``ids[i]`` the prompt id of row ``i``."""
        x = values.detach().float().cpu()
        rows = torch.tensor(list(ids), dtype=torch.long).view(-1, 1, 1).expand_as(x)
        self._top = self._merge(self._top, x, rows, largest=True)
        self._bottom = self._merge(self._bottom, x, rows, largest=False)

    def _merge(
        self,
        kept: tuple[torch.Tensor, torch.Tensor] | None,
        x: torch.Tensor,
        rows: torch.Tensor,
        *,
        largest: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        vals, ids = (x, rows) if kept is None else (torch.cat([kept[0], x]), torch.cat([kept[1], rows]))
        k = min(self.k, vals.shape[0])
        best, where = vals.topk(k, dim=0, largest=largest, sorted=True)
        return best, ids.gather(0, where)

    def most(self, layer: int, index: int) -> list[tuple[int, float]]:
        """``(prompt id, value)`` pairs of the unit's largest values, largest first."""
        return self._read(self._top, layer, index)

    def least(self, layer: int, index: int) -> list[tuple[int, float]]:
        """``(prompt id, value)`` pairs of the unit's smallest values, smallest first."""
        return self._read(self._bottom, layer, index)

    @staticmethod
    def _read(
        kept: tuple[torch.Tensor, torch.Tensor] | None, layer: int, index: int
    ) -> list[tuple[int, float]]:
        if kept is None:
            return []
        vals, ids = kept
        return [(int(i), float(v)) for v, i in zip(vals[:, layer, index], ids[:, layer, index], strict=True)]

    def tensors(self, prefix: str) -> dict[str, torch.Tensor]:
        """The kept values and ids as named tensors (for saving; empty before any update)."""
        if self._top is None or self._bottom is None:
            return {}
        return {
            f"{prefix}.top.values": self._top[0],
            f"{prefix}.top.ids": self._top[1],
            f"{prefix}.bottom.values": self._bottom[0],
            f"{prefix}.bottom.ids": self._bottom[1],
        }

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], prefix: str, k: int) -> PromptExtremes:
        """The inverse of :meth:`tensors`."""
        out = cls(k)
        out._top = (tensors[f"{prefix}.top.values"], tensors[f"{prefix}.top.ids"])
        out._bottom = (tensors[f"{prefix}.bottom.values"], tensors[f"{prefix}.bottom.ids"])
        return out
