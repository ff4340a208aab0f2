"""Specificity controls: the magnitude-matched random circuit."""

from __future__ import annotations

import pytest
import torch

from neurogate.discovery.circuit import Circuit, Neuron
from neurogate.errors import CircuitError
from neurogate.steering.controls import magnitude_matched_circuit

SHAPE = {"family": "llama", "model_type": "llama", "n_layers": 3, "d_mlp": 40, "d_model": 8}


def test_matched_circuit_keeps_layer_counts_and_activation_size() -> None:
    magnitude = torch.arange(3 * 40, dtype=torch.float64).reshape(
        3, 40
    )  # neuron i of a layer: size i (+ offset)
    circuit = Circuit(
        neurons=[Neuron(0, 5, 1, 1, 0, 0), Neuron(0, 30, 1, 1, 0, 0), Neuron(2, 39, 1, 1, 0, 0)],
        model={"spec": "x", "shape": SHAPE},
    )
    control = magnitude_matched_circuit(circuit, magnitude, seed=0, pool=4)
    assert control.per_layer() == circuit.per_layer()
    own = {(n.layer, n.index) for n in circuit.neurons}
    picked = [(n.layer, n.index) for n in control.neurons]
    assert not own & set(picked) and len(set(picked)) == len(picked)
    # each pick is among the 4 neurons of its layer closest in size to the circuit neuron it matches
    assert any(p == (0, i) for p in picked for i in (3, 4, 6, 7))
    assert any(p == (0, i) for p in picked for i in (28, 29, 31, 32))
    assert any(p == (2, i) for p in picked for i in (35, 36, 37, 38))
    assert magnitude_matched_circuit(circuit, magnitude, seed=0, pool=4).neurons == control.neurons  # seeded
    other_seeds = {
        tuple(n.index for n in magnitude_matched_circuit(circuit, magnitude, seed=s).neurons)
        for s in range(6)
    }
    assert len(other_seeds) > 1
    with pytest.raises(CircuitError, match="magnitudes are"):
        magnitude_matched_circuit(circuit, torch.zeros(2, 40))
