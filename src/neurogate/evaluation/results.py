"""What an evaluated condition produces, and where finished conditions are kept.

A :class:`ConditionResult` holds every metric of one condition with every reply it was computed from;
:class:`ResultStore` keeps one JSON file per finished condition, written atomically, so an interrupted run
resumes where it stopped.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from neurogate.atomic import write_json_atomic
from neurogate.evaluation.statistics import Rate

logger = logging.getLogger(__name__)


@dataclass
class Reply:
    """One generated reply and its judge score (1.0 = refusal)."""

    prompt: str
    text: str
    token_ids: list[int]
    finished: bool
    refusal: float


@dataclass
class ConditionResult:
    """Everything measured for one condition. ``kind``/``scale``/``value``: the intervention on its own
    named scale (``"baseline"`` has neither); ``label``: e.g. ``"cna m=0"``."""

    key: str
    label: str
    kind: str
    scale: str | None
    value: float | None
    group: str
    n_neurons: int | None
    refusal: Rate
    quality: float
    perplexity: float | None
    kl_first: float | None
    kl_mean: float | None
    benign_refusal: Rate | None
    benign_quality: float | None
    tokens_per_s: float
    seconds: float
    intervention: dict[str, Any]
    harmful: list[Reply] = field(default_factory=list)
    benign: list[Reply] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["refusal"] = self.refusal.to_dict()
        data["benign_refusal"] = self.benign_refusal.to_dict() if self.benign_refusal else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ConditionResult:
        data = dict(data)
        data["refusal"] = Rate.from_dict(data["refusal"])
        benign_rate = data.get("benign_refusal")
        data["benign_refusal"] = Rate.from_dict(benign_rate) if benign_rate else None
        data["harmful"] = [Reply(**r) for r in data.get("harmful", [])]
        data["benign"] = [Reply(**r) for r in data.get("benign", [])]
        return cls(**data)

    def summary(self) -> dict[str, Any]:
        """The result without its replies (for printing as JSON)."""
        data = self.to_dict()
        data.pop("harmful")
        data.pop("benign")
        return data


class ResultStore:
    """Finished conditions as one JSON file each under ``root`` (``<key>.json``), written atomically."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / f"{key}.json"

    def get(self, key: str) -> ConditionResult | None:
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            return ConditionResult.from_dict(json.loads(path.read_text()))
        except (ValueError, KeyError, TypeError) as exc:
            logger.warning("ignoring unreadable stored result %s (%s); it will be recomputed", path, exc)
            return None

    def put(self, result: ConditionResult) -> Path:
        return write_json_atomic(self.path(result.key), result.to_dict())

    def keys(self) -> list[str]:
        return sorted(p.stem for p in self.root.glob("*.json")) if self.root.is_dir() else []
