"""The trade-off a search found: the Pareto front of its trials in compliance (up) against mean benign KL
(down), each point marked exportable or not, for the report and the stored results."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from neurogate.tuning.config import EXPORTABLE


def exportable(point: dict[str, Any]) -> bool:
    """Whether a stored point can be served as a plain LoRA adapter or a GGUF ``ffn_down`` fold, with no
    extras: its intervention only scales neurons (``mean`` also writes a constant into the down-projection's
    output, which needs a LoRA bias or a control vector beside the GGUF: :func:`served_as`)."""
    return str(point.get("intervention", "")) in EXPORTABLE


MEAN_SERVED = (
    "not exportable as a plain LoRA/GGUF; servable as LoRA + bias (PEFT) or GGUF + control vector (llama.cpp)"
)


def served_as(point: dict[str, Any]) -> str:
    """How a stored point can be served, in words for the report and the command's summary: ``exportable``
    (plain LoRA or GGUF, every engine), or for ``mean`` the formats that carry its constant and for which
    engines (``neurogate export --kind mean``; docs/serving.md, section 4)."""
    if point.get("exportable", exportable(point)):
        return "exportable"
    return MEAN_SERVED if point.get("intervention") == "mean" else "not exportable"


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """The indices of the non-dominated ``(compliance, kl)`` points, highest compliance first (then lower
    KL, then index). A point is dominated when another is at least as compliant with at most its KL and
    better in one of the two; exact duplicates all stay. Points with a NaN value are left out."""
    ok = [i for i, (c, k) in enumerate(points) if not (math.isnan(c) or math.isnan(k))]
    front = []
    for i in ok:
        ci, ki = points[i]
        dominated = any(
            points[j][0] >= ci and points[j][1] <= ki and (points[j][0] > ci or points[j][1] < ki)
            for j in ok
            if j != i
        )
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: (-points[i][0], points[i][1], i))


def front_rows(trials: Sequence[Any], max_degenerate: float | None = None) -> list[dict[str, Any]]:
    """The front of ``trials`` (stored :class:`~neurogate.tuning.final.Trial`-like objects with ``number``,
    ``point`` and ``scores``) in compliance against mean benign KL, among those whose degenerate share stays
    within ``max_degenerate`` (all when ``None``: degenerate replies already count against compliance):
    one row per front trial."""
    kept = [
        t
        for t in trials
        if max_degenerate is None or t.scores.get("degenerate", 0.0) <= max_degenerate + 1e-9
    ]
    front = pareto_front([(float(t.scores["compliance"]), float(t.scores["kl"])) for t in kept])
    return [
        {
            "trial": kept[i].number,
            "compliance": kept[i].scores["compliance"],
            "kl": kept[i].scores["kl"],
            "neurons": kept[i].scores.get("neurons"),
            "degenerate": kept[i].scores.get("degenerate"),
            "exportable": exportable(kept[i].point),
        }
        for i in front
    ]
