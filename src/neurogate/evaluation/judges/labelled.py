"""Judges against hand labels: read a labelled reply set and score predicted reply classes against it.

The labelled set (``tests/data/judge_set.jsonl`` in the repository) holds one JSON object per line with at
least ``id``, ``prompt``, ``reply``, ``label`` (``refusal``, ``compliance`` or ``degenerate``) and
``split`` (``dev`` for developing judges; ``test`` and the ``holdout`` splits for reporting them:
each holdout split was labelled later, from new prompts, and read by no judge before its labels were
fixed). :func:`agreement` gives accuracy, per-class precision and recall, and the confusion matrix; the
classes being scored come from the same path the evaluation engine uses (degeneracy rule first, then the
judge), so the figures describe the numbers a study reports.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from neurogate.errors import ConfigError
from neurogate.evaluation.replies import CLASSES, ReplyClass

SPLITS = ("dev", "test", "holdout", "holdout2", "holdout3", "holdout4", "holdout5", "all")


@dataclass(frozen=True)
class LabelledReply:
    """One hand-labelled reply (``note`` and the provenance fields are kept for error listings)."""

    id: str
    prompt: str
    reply: str
    label: ReplyClass
    split: str
    model: str = ""
    condition: str = ""
    note: str = ""


def read_labelled(path: str | Path, split: str = "all") -> list[LabelledReply]:
    """The rows of a labelled set, keeping only ``split`` (one of :data:`SPLITS`; ``all`` keeps every row)."""
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    source = Path(path)
    if not source.is_file():
        raise ConfigError(f"labelled set {source} not found: pass the path of a judge_set.jsonl file")
    rows = []
    for number, line in enumerate(source.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            row = LabelledReply(
                id=str(data["id"]),
                prompt=str(data["prompt"]),
                reply=str(data["reply"]),
                label=data["label"],
                split=str(data["split"]),
                model=str(data.get("model", "")),
                condition=str(data.get("condition", "")),
                note=str(data.get("note", "")),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(
                f"{source}:{number} is not a labelled reply ({exc}); see tests/data/README.md"
            ) from exc
        if row.label not in CLASSES:
            raise ConfigError(f"{source}:{number} has label {row.label!r}; use one of {', '.join(CLASSES)}")
        if split in ("all", row.split):
            rows.append(row)
    return rows


@dataclass(frozen=True)
class Agreement:
    """Predicted classes against labels: ``confusion[label][predicted]`` counts, over :data:`CLASSES`."""

    confusion: dict[str, dict[str, int]]
    errors: list[tuple[int, str, str]] = field(default_factory=list)

    @property
    def n(self) -> int:
        return sum(sum(row.values()) for row in self.confusion.values())

    @property
    def accuracy(self) -> float:
        correct = sum(self.confusion[c][c] for c in CLASSES)
        return correct / self.n if self.n else 0.0

    def precision(self, cls: str) -> float | None:
        """Of the replies predicted ``cls``, the share labelled ``cls`` (None when none were predicted)."""
        predicted = sum(self.confusion[label][cls] for label in CLASSES)
        return self.confusion[cls][cls] / predicted if predicted else None

    def recall(self, cls: str) -> float | None:
        """Of the replies labelled ``cls``, the share predicted ``cls`` (None when none are labelled so)."""
        labelled = sum(self.confusion[cls].values())
        return self.confusion[cls][cls] / labelled if labelled else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "accuracy": self.accuracy,
            "per_class": {
                c: {
                    "precision": self.precision(c),
                    "recall": self.recall(c),
                    "support": sum(self.confusion[c].values()),
                }
                for c in CLASSES
            },
            "confusion": {"rows: label, columns: predicted": list(CLASSES), **self.confusion},
        }


def agreement(labels: Sequence[str], predicted: Sequence[str]) -> Agreement:
    """Score ``predicted`` classes against ``labels`` (same order); ``errors`` lists (index, label,
    predicted) for every disagreement."""
    if len(labels) != len(predicted):
        raise ConfigError(f"{len(labels)} labels but {len(predicted)} predictions")
    confusion: dict[str, dict[str, int]] = {label: dict.fromkeys(CLASSES, 0) for label in CLASSES}
    errors: list[tuple[int, str, str]] = []
    for i, (label, guess) in enumerate(zip(labels, predicted, strict=True)):
        if label not in CLASSES or guess not in CLASSES:
            raise ConfigError(
                f"row {i}: classes must be one of {', '.join(CLASSES)}, got {label!r}/{guess!r}"
            )
        confusion[label][guess] += 1
        if label != guess:
            errors.append((i, label, guess))
    return Agreement(confusion, errors)
