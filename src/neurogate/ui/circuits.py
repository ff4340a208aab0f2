"""The circuit map as JSON for the page: neurons by layer with each layer's score spread, one neuron's
profile, and two circuits overlaid layer by layer."""

from __future__ import annotations

from typing import Any

from neurogate.discovery.circuit import Circuit, Neuron
from neurogate.errors import CircuitError
from neurogate.models.moe import neuron_label


def _quartiles(values: list[float]) -> dict[str, float] | None:
    """Min, quartiles and max (linear interpolation), or ``None`` for no values."""
    if not values:
        return None
    xs = sorted(values)

    def at(q: float) -> float:
        pos = q * (len(xs) - 1)
        lo = int(pos)
        hi = min(lo + 1, len(xs) - 1)
        return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)

    return {"min": xs[0], "q1": at(0.25), "median": at(0.5), "q3": at(0.75), "max": xs[-1]}


def late_start(n_layers: int) -> int:
    """The first layer of the last quarter (what :meth:`Circuit.late_share` counts)."""
    return n_layers - max(1, n_layers // 4)


def pick(obj: Any, names: tuple[str, ...]) -> dict[str, Any]:
    """The named attributes of ``obj`` as a dict."""
    return {name: getattr(obj, name) for name in names}


def neuron_row(n: Neuron, moe: dict[str, Any] | None = None) -> dict[str, Any]:
    """One neuron's numbers; in a mixture-of-experts circuit (``moe``: its expert layout) also ``label``
    (``L2 E1 #5``) and ``in_expert`` (``E1 #5``: the expert and the neuron's index inside it)."""
    fields = ("layer", "index", "score", "diff", "mean_pos", "mean_neg")
    row = {**pick(n, fields), "universal": None if n.profile is None else n.profile.universal}
    if moe:
        label = neuron_label(n.layer, n.index, moe)
        row.update(label=label, in_expert=label.split(" ", 1)[1])
    return row


def circuit_map(circuit: Circuit) -> dict[str, Any]:
    """Everything the map shows: per-layer counts and score spread, the late-layer share, the table."""
    n_layers = circuit.n_layers
    by_layer: dict[int, list[float]] = {layer: [] for layer in range(n_layers)}
    for n in circuit.neurons:
        by_layer.setdefault(n.layer, []).append(n.score)
    record = circuit.record
    return {
        "spec": circuit.model.get("spec", "?"),
        "shape": circuit.shape,
        "created": circuit.created,
        "n_neurons": len(circuit),
        "n_layers": n_layers,
        "late_start": late_start(n_layers) if n_layers else 0,
        "late_share": circuit.late_share(),
        "method": circuit.method,
        "prompts": circuit.prompts,
        "has_profiles": any(n.profile is not None for n in circuit.neurons),
        "layers": [
            {"layer": layer, "count": len(scores), "scores": sorted(scores), "spread": _quartiles(scores)}
            for layer, scores in sorted(by_layer.items())
        ],
        "neurons": [
            neuron_row(n, circuit.shape.get("moe")) for n in sorted(circuit.neurons, key=lambda n: -n.score)
        ],
        "universal_skipped": [
            {"layer": a, "index": b, "score": c} for a, b, c in (record.universal_skipped if record else ())
        ],
    }


def neuron_detail(circuit: Circuit, layer: int, index: int) -> dict[str, Any]:
    """One neuron: its numbers, rank, and (when stored) its profile with the prompts' text."""
    ranked = sorted(circuit.neurons, key=lambda n: -n.score)
    places = [i for i, n in enumerate(ranked) if (n.layer, n.index) == (layer, index)]
    if not places:
        raise CircuitError(f"neuron (layer {layer}, index {index}) is not in this circuit")
    n = ranked[places[0]]
    out = {
        **neuron_row(n, circuit.shape.get("moe")),
        "rank": places[0] + 1,
        "of": len(ranked),
        "profile": None,
    }
    if n.profile is not None:
        texts = circuit.record.prompts if circuit.record else {}

        def refs(items: Any) -> list[dict[str, Any]]:
            return [
                {
                    "side": r.side,
                    "index": r.index,
                    "value": r.value,
                    "text": texts.get(r.side, {}).get(r.index),
                }
                for r in items
            ]

        p = n.profile
        out["profile"] = {
            "std_pos": p.std_pos,
            "std_neg": p.std_neg,
            "universal": p.universal,
            "most": refs(p.most),
            "least": refs(p.least),
        }
    return out


def overlay(a: Circuit, b: Circuit) -> dict[str, Any]:
    """Two circuits of one model compared layer by layer: each one's count and the neurons they share."""
    if a.shape.get("n_layers") != b.shape.get("n_layers") or a.shape.get("d_mlp") != b.shape.get("d_mlp"):
        raise CircuitError(
            "these circuits were found on models of different shapes, so their neurons cannot be compared"
        )
    set_a = {(n.layer, n.index) for n in a.neurons}
    set_b = {(n.layer, n.index) for n in b.neurons}
    shared = set_a & set_b
    layers = [
        {
            "layer": layer,
            "a": sum(1 for n in set_a if n[0] == layer),
            "b": sum(1 for n in set_b if n[0] == layer),
            "both": sum(1 for n in shared if n[0] == layer),
        }
        for layer in range(a.n_layers)
    ]
    union = set_a | set_b
    return {
        "n_a": len(set_a),
        "n_b": len(set_b),
        "shared": len(shared),
        "jaccard": len(shared) / len(union) if union else 0.0,
        "layers": layers,
        "shared_neurons": [{"layer": layer, "index": index} for layer, index in sorted(shared)],
    }
