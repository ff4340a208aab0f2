"""Per-neuron profiles: the few discovery prompts that drive each circuit neuron highest and lowest.

Which neurons end up in the circuit is known only after every prompt has been seen, and keeping every
prompt's value of every neuron would cost ``prompts x neurons`` floats. :class:`PromptExtremes` instead
keeps, for every neuron, the ``k`` largest and ``k`` smallest values seen so far and which prompt gave
each (``2k`` values per neuron, whatever the number of prompts); :func:`profiles` then reads the circuit
neurons' rows and adds each side's spread from the running statistics.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from neurogate.discovery.circuit import DiscoveryRecord, Neuron, NeuronProfile, PromptRef
from neurogate.discovery.stats import SiteStats

SIDES = ("positive", "negative")
DEFAULT_EXTREMES = 5


class PromptExtremes:
    """Running ``k`` largest and smallest values per unit of a ``[n_layers, width]`` site, with the global
    row (prompt) id of each. Feed it batches with :meth:`update`; read with :meth:`most` / :meth:`least`."""

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


def profiles(
    neurons: Sequence[Neuron],
    extremes: PromptExtremes,
    stats: tuple[SiteStats, SiteStats],
    prompts: tuple[Sequence[str], Sequence[str]],
    universal: set[tuple[int, int]] | None,
) -> tuple[list[Neuron], dict[str, dict[int, str]]]:
    """The neurons with a :class:`NeuronProfile` each, and the text of every prompt a profile names.

    Prompt ids are global: the positive set's prompts first, then the negative set's. ``universal`` is the
    set the filter computed (``None`` when the filter was off, so the profile says "not checked").
    """
    n_pos = len(prompts[0])
    texts: dict[str, dict[int, str]] = {side: {} for side in SIDES}

    def ref(pid: int, value: float) -> PromptRef:
        side, index = (SIDES[0], pid) if pid < n_pos else (SIDES[1], pid - n_pos)
        texts[side][index] = prompts[SIDES.index(side)][index]
        return PromptRef(side=side, index=index, value=value)

    std_pos, std_neg = (s.var.sqrt().cpu() for s in stats)
    out = []
    for n in neurons:
        profile = NeuronProfile(
            std_pos=float(std_pos[n.layer, n.index]),
            std_neg=float(std_neg[n.layer, n.index]),
            universal=None if universal is None else (n.layer, n.index) in universal,
            most=tuple(ref(p, v) for p, v in extremes.most(n.layer, n.index)),
            least=tuple(ref(p, v) for p, v in extremes.least(n.layer, n.index)),
        )
        out.append(Neuron(n.layer, n.index, n.score, n.diff, n.mean_pos, n.mean_neg, profile=profile))
    return out, {side: dict(sorted(t.items())) for side, t in texts.items()}


def record(
    texts: dict[str, dict[int, str]], skipped: Sequence[tuple[int, int]], scores: torch.Tensor
) -> DiscoveryRecord:
    """The circuit-level part of the profiles: prompt texts and the universal neurons passed over."""
    cpu = scores.cpu()
    return DiscoveryRecord(
        prompts=texts,
        universal_skipped=tuple((layer, index, float(cpu[layer, index])) for layer, index in skipped),
    )
