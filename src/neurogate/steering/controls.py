"""The random-neuron control: as many neurons as a circuit, in the same layers, chosen at random."""

from __future__ import annotations

import random

import torch

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


def magnitude_matched_circuit(
    circuit: Circuit, magnitude: torch.Tensor, seed: int = 0, pool: int = 10
) -> Circuit:
    """A control with the circuit's per-layer counts whose neurons also match the circuit's in size.

    ``magnitude`` is every neuron's typical activation size, ``[n_layers, d_mlp]`` (e.g. the mean absolute
    value on the discovery prompts). For each circuit neuron, one neuron is drawn (seeded) from the
    ``pool`` other neurons of its layer whose magnitude is closest to its own, never a circuit neuron and
    never twice; so the control's neurons are as active as the circuit's, and any difference in effect is
    about which neurons, not how large they are.
    """
    n_layers, d_mlp = int(circuit.shape.get("n_layers", 0)), int(circuit.shape.get("d_mlp", 0))
    if tuple(magnitude.shape) != (n_layers, d_mlp):
        raise CircuitError(
            f"magnitudes are {list(magnitude.shape)}, the circuit's model is [{n_layers}, {d_mlp}]"
        )
    rng = random.Random(seed)
    taken = {(n.layer, n.index) for n in circuit.neurons}
    neurons: list[Neuron] = []
    for n in sorted(circuit.neurons, key=lambda x: (x.layer, x.index)):
        row = magnitude[n.layer].double()
        order = torch.argsort((row - row[n.index]).abs(), stable=True).tolist()
        candidates = [i for i in order if (n.layer, i) not in taken][:pool]
        if not candidates:
            raise CircuitError(f"layer {n.layer} has no neuron left for a magnitude-matched control")
        pick = rng.choice(candidates)
        taken.add((n.layer, pick))
        neurons.append(Neuron(n.layer, pick, 0.0, 0.0, 0.0, 0.0))
    method = {"score": "magnitude-matched random", "seed": seed, "pool": pool, "matched_to": len(circuit)}
    return Circuit(neurons=neurons, model=dict(circuit.model), method=method, prompts={})
