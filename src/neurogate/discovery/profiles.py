"""Per-neuron profiles: the few discovery prompts that drive each circuit neuron highest and lowest.

Which neurons end up in the circuit is known only after every prompt has been seen, and keeping every
prompt's value of every neuron would cost ``prompts x neurons`` floats. Discovery instead keeps a
:class:`~neurogate.discovery.stats.PromptExtremes` (the ``k`` largest and smallest values of every neuron
and which prompt gave each); :func:`neurogate.discovery.discover.profiles` reads the circuit neurons'
rows from it and adds each side's spread from the running statistics.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

SIDES = ("positive", "negative")


@dataclass(frozen=True)
class PromptRef:
    """A discovery prompt (``side`` "positive" or "negative", ``index`` in that set) and a neuron's value
    at its last token."""

    side: str
    index: int
    value: float


@dataclass(frozen=True)
class NeuronProfile:
    """What discovery saw of one neuron beyond its means: each side's standard deviation, whether the
    universal filter flagged it (``None``: the filter was off), and the prompts that drove it highest
    (``most``, largest first) and lowest (``least``, smallest first)."""

    std_pos: float
    std_neg: float
    universal: bool | None
    most: tuple[PromptRef, ...] = ()
    least: tuple[PromptRef, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        refs = {"most": [asdict(r) for r in self.most], "least": [asdict(r) for r in self.least]}
        return {**asdict(self), **refs}

    @classmethod
    def from_dict(cls, data: Any) -> NeuronProfile:
        """Build from JSON; raises ``TypeError``/``KeyError``/``ValueError`` on a malformed entry."""
        if not isinstance(data, dict):
            raise TypeError("a profile must be an object")
        universal = data.get("universal")
        if universal is not None and not isinstance(universal, bool):
            raise TypeError("profile.universal must be true, false or null")

        def refs(key: str) -> tuple[PromptRef, ...]:
            items = data.get(key, [])
            if not isinstance(items, list):
                raise TypeError(f"profile.{key} must be a list")
            return tuple(PromptRef(str(r["side"]), int(r["index"]), float(r["value"])) for r in items)

        return cls(float(data["std_pos"]), float(data["std_neg"]), universal, refs("most"), refs("least"))


@dataclass(frozen=True)
class DiscoveryRecord:
    """Circuit-level companion of the profiles: the text of each prompt a profile names
    (``prompts[side][index]``) and the universal neurons passed over, as ``(layer, index, score)``."""

    prompts: dict[str, dict[int, str]] = field(default_factory=dict)
    universal_skipped: tuple[tuple[int, int, float], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompts": {side: {str(i): t for i, t in texts.items()} for side, texts in self.prompts.items()},
            "universal_skipped": [list(n) for n in self.universal_skipped],
        }

    @classmethod
    def from_dict(cls, data: Any) -> DiscoveryRecord:
        if not isinstance(data, dict):
            raise TypeError("the discovery record must be an object")
        prompts = {
            str(side): {int(i): str(t) for i, t in texts.items()}
            for side, texts in dict(data.get("prompts", {})).items()
        }
        skipped = tuple((int(a), int(b), float(c)) for a, b, c in data.get("universal_skipped", []))
        return cls(prompts, skipped)


def record(
    texts: dict[str, dict[int, str]], skipped: Sequence[tuple[int, int]], scores: torch.Tensor
) -> DiscoveryRecord:
    """The circuit-level part of the profiles: prompt texts and the universal neurons passed over."""
    cpu = scores.cpu()
    return DiscoveryRecord(
        prompts=texts,
        universal_skipped=tuple((layer, index, float(cpu[layer, index])) for layer, index in skipped),
    )
