"""The random-neuron control: as many neurons as a circuit, in the same layers, chosen at random."""

from __future__ import annotations

import random

from neurogate.discovery.circuit import Circuit, Neuron
from neurogate.errors import CircuitError


def random_circuit(circuit: Circuit, seed: int = 0) -> Circuit:
    """A circuit with the same per-layer neuron counts as ``circuit`` and random indices (seeded), never
    one of ``circuit``'s own neurons. Scores and means are zero: these neurons were not measured."""
    d_mlp = int(circuit.shape.get("d_mlp", 0))
    rng = random.Random(seed)
    neurons: list[Neuron] = []
    for layer, count in circuit.per_layer().items():
        own = {n.index for n in circuit.neurons if n.layer == layer}
        pool = [i for i in range(d_mlp) if i not in own]
        if len(pool) < count:
            raise CircuitError(
                f"layer {layer} has too few other neurons ({len(pool)}) for a random control of {count}"
            )
        neurons += [Neuron(layer, i, 0.0, 0.0, 0.0, 0.0) for i in sorted(rng.sample(pool, count))]
    return Circuit(
        neurons=neurons,
        model=dict(circuit.model),
        method={"score": "random", "seed": seed, "matched_to": len(circuit)},
        prompts={},
    )
