"""Per-neuron profiles: the few discovery prompts that drive each circuit neuron highest and lowest.

Which neurons end up in the circuit is known only after every prompt has been seen, and keeping every
prompt's value of every neuron would cost ``prompts x neurons`` floats. Discovery instead keeps a
:class:`~neurogate.discovery.stats.PromptExtremes` (the ``k`` largest and smallest values of every neuron
and which prompt gave each); :func:`profiles` reads the circuit neurons' rows from it and adds each side's
spread from the running statistics.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from neurogate.discovery.circuit import DiscoveryRecord, Neuron, NeuronProfile, PromptRef
from neurogate.discovery.stats import PromptExtremes, SiteStats

SIDES = ("positive", "negative")


def profiles(
    neurons: Sequence[Neuron],
    extremes: PromptExtremes | None,
    stats: tuple[SiteStats, SiteStats],
    prompts: tuple[Sequence[str], Sequence[str]],
    universal: set[tuple[int, int]] | None,
) -> tuple[list[Neuron], dict[str, dict[int, str]]]:
    """The neurons with a :class:`NeuronProfile` each, and the text of every prompt a profile names.

    Prompt ids are global: the positive set's prompts first, then the negative set's. ``universal`` is the
    set the filter computed (``None`` when the filter was off, so the profile says "not checked").
    Without ``extremes`` (statistics saved by an older version) the profiles name no prompts.
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
            most=tuple(ref(p, v) for p, v in extremes.most(n.layer, n.index)) if extremes else (),
            least=tuple(ref(p, v) for p, v in extremes.least(n.layer, n.index)) if extremes else (),
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
