"""The routing report: how often each expert holding circuit neurons was routed on each prompt set.

In a mixture-of-experts model an expert neuron is observed only on prompts whose last token was routed
to its expert (:mod:`neurogate.models.moe`); its mean on a set is over those prompts. The per-unit counts
of the statistics (:class:`~neurogate.discovery.stats.SiteStats`) say how many there were, the same for
every neuron of one expert. The report lists, for every (layer, expert) of the circuit, those counts and
their share of each set, and is stored in the circuit's ``method["routing"]``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from neurogate.discovery.stats import SiteStats
from neurogate.models.moe import MoeLayout


def routing_report(
    layout: MoeLayout, neurons: Sequence[tuple[int, int]], positive: SiteStats, negative: SiteStats
) -> list[dict[str, Any]]:
    """One record per (layer, expert) holding any of ``neurons`` (``(layer, flat index)``), in order:
    ``{"layer", "expert", "neurons", "positive_routed", "positive_share", "negative_routed",
    "negative_share"}``; the shared expert (``"expert": "shared"``) sees every token."""
    held: Counter[tuple[int, int | None]] = Counter(
        (layer, layout.split(index)[0]) for layer, index in neurons
    )
    counts = {side: stats.counts.cpu() for side, stats in (("positive", positive), ("negative", negative))}
    totals = {"positive": positive.n, "negative": negative.n}
    out: list[dict[str, Any]] = []
    for (layer, expert), n_neurons in sorted(held.items(), key=lambda kv: (kv[0][0], _order(kv[0][1]))):
        record: dict[str, Any] = {
            "layer": layer,
            "expert": "shared" if expert is None else expert,
            "neurons": n_neurons,
        }
        for side, count in counts.items():
            routed = int(count[layer, layout.flat(expert, 0)])
            record[f"{side}_routed"] = routed
            record[f"{side}_share"] = routed / totals[side] if totals[side] else 0.0
        out.append(record)
    return out


def _order(expert: int | None) -> int:
    return 1 << 30 if expert is None else expert


def format_routing(report: Sequence[dict[str, Any]]) -> str:
    """The report as text lines (what ``neurogate discover`` prints for a mixture-of-experts circuit)."""
    lines = ["routing of the circuit's experts (prompts whose last token went to the expert):"]
    for r in report:
        expert = "shared" if r["expert"] == "shared" else f"E{r['expert']}"
        lines.append(
            f"  L{r['layer']} {expert}: {r['neurons']} neuron(s); positive {r['positive_routed']} "
            f"({100 * r['positive_share']:.0f}%), negative {r['negative_routed']} "
            f"({100 * r['negative_share']:.0f}%)"
        )
    return "\n".join(lines)
