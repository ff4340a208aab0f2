"""Running per-unit statistics of a site over prompts: count, mean and variance, numerically sound.

Batches are merged with Chan et al.'s parallel form of Welford's algorithm in float64, so a neuron with a
large mean and a tiny spread keeps its variance (the naive ``E[x^2] - E[x]^2`` in float32 returns 0 for a
neuron with mean 50 and sd 0.01). :meth:`SiteStats.var_floor` is the variance the activation dtype can
resolve at each unit's magnitude: two neurons that differ by one rounding step are not "separated".
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

UPDATE_ELEMENTS = 1 << 25  # values per float64 slice in :meth:`SiteStats.update` (256 MiB)


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
        total = self.n + k
        # A few layers at a time, so the float64 temporaries stay small next to a large model's weights.
        step = max(1, UPDATE_ELEMENTS // max(1, k * int(values.shape[2])))
        for lo in range(0, int(values.shape[1]), step):
            part = slice(lo, lo + step)
            x = values[:, part].to(device=self.mean.device, dtype=torch.float64)
            batch_mean = x.mean(0)
            batch_m2 = (x - batch_mean).square().sum(0)
            delta = batch_mean - self.mean[part]
            self.mean[part] += delta * (k / total)
            self.m2[part] += batch_m2 + delta.square() * (self.n * k / total)
            self.abs_mean[part] += (x.abs().mean(0) - self.abs_mean[part]) * (k / total)
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
