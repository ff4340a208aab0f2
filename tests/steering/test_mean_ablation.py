"""Mean-ablation: neurons moved toward their negative-prompt mean, by hooks and folded exactly (the constant
goes into the down-projection bias), on every family."""

from __future__ import annotations

import pytest
import torch

from neurogate.discovery.circuit import Circuit, Neuron
from neurogate.models.loading import LoadedModel
from neurogate.models.tiny import TINY_FAMILIES, tiny_lm
from neurogate.steering import fold, make


def _circuit(lm: LoadedModel) -> Circuit:
    neurons = [
        Neuron(layer, i * 7 + layer, 1.0, 1.0, 2.0, 0.25 * (i + 1)) for layer in range(3) for i in range(5)
    ]
    return Circuit(neurons=neurons, model={"spec": lm.spec, "shape": lm.shape})


def _logits(lm: LoadedModel) -> torch.Tensor:
    ids = torch.tensor([[5, 17, 42, 99, 3, 250, 7]])
    with torch.no_grad():
        return lm.model(input_ids=ids).logits.float()


@pytest.mark.parametrize("family", TINY_FAMILIES)
@pytest.mark.parametrize("m", [0.0, 0.5, -1.0])
def test_mean_ablation_hooks_equal_fold_and_fold_restores(family: str, m: float) -> None:
    lm = tiny_lm(family)
    circuit = _circuit(lm)
    base = _logits(lm)
    biases = [getattr(lm.adapter.down_proj(i), "bias", None) for i in range(3)]
    with circuit.apply(lm, m, toward="mean"):
        hooked = _logits(lm)
    with fold(lm, circuit, m, toward="mean"):
        folded = _logits(lm)
    torch.testing.assert_close(folded, hooked, atol=1e-4, rtol=1e-4)
    assert (hooked - base).abs().max() > 1e-3  # it did change the model
    torch.testing.assert_close(_logits(lm), base, atol=0, rtol=0)  # restored bit-exactly
    for i, before in enumerate(biases):
        after = getattr(lm.adapter.down_proj(i), "bias", None)
        assert (before is None) == (after is None)


def test_mean_sets_each_neuron_to_its_mean_at_m0(lm: LoadedModel) -> None:
    circuit = _circuit(lm)
    seen: dict[int, torch.Tensor] = {}
    with make(
        "mean", lm, circuit, 0.0
    ):  # its hook runs first, the recording hook (added after) sees its output
        hook = lm.adapter.down_proj(1).register_forward_pre_hook(
            lambda _m, a: seen.__setitem__(1, a[0].clone())
        )
        try:
            _logits(lm)
        finally:
            hook.remove()
    for n in circuit.neurons:
        if n.layer == 1:
            assert torch.allclose(seen[1][0, :, n.index], torch.full((7,), n.mean_neg))
    assert make("mean", lm, circuit, 0.0).label == "mean m=0"
    base = _logits(lm)
    with make("mean", lm, circuit, 1.0):
        torch.testing.assert_close(_logits(lm), base)


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_weighted_circuit_folds_exactly(family: str) -> None:
    """Per-neuron shares of the intervention (proportional weights) fold exactly, toward zero and mean."""
    lm = tiny_lm(family)
    raw = _circuit(lm)
    scored = Circuit(
        neurons=[
            Neuron(n.layer, n.index, float(k + 1), 1.0, 2.0, n.mean_neg) for k, n in enumerate(raw.neurons)
        ],
        model=raw.model,
    )
    circuit = scored.weighted("proportional")
    assert len({n.weight for n in circuit.neurons}) == len(circuit)
    for toward in ("zero", "mean"):
        with circuit.apply(lm, 0.0, toward=toward):  # type: ignore[arg-type]
            hooked = _logits(lm)
        with fold(lm, circuit, 0.0, toward=toward):  # type: ignore[arg-type]
            folded = _logits(lm)
        torch.testing.assert_close(folded, hooked, atol=1e-4, rtol=1e-4)
        with scored.apply(lm, 0.0, toward=toward):  # type: ignore[arg-type]
            uniform = _logits(lm)
        assert (uniform - hooked).abs().max() > 1e-4  # the weights changed what was applied
