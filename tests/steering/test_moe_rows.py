"""Mixture-of-experts steering through the batched paths: per-row steering (one batch, several settings)
and the gain table both equal the plain hook on expert neurons."""

from __future__ import annotations

import pytest
import torch

from neurogate.discovery.circuit import Circuit, Neuron
from neurogate.errors import ConfigError
from neurogate.models.gains import install_gains
from neurogate.models.loading import LoadedModel
from neurogate.models.row_gains import steer_rows
from neurogate.models.tiny import D_EXPERT, tiny_lm
from neurogate.steering.residual import ablate_direction, orthogonalize

PROMPT = "<|im_start|>user\nsteer each row<|im_end|>\n<|im_start|>assistant\n"


def circuit_of(lm: LoadedModel) -> Circuit:
    chosen = [(0, 1), (1, D_EXPERT + 2), (2, lm.adapter.d_mlp - 1), (2, 3 * D_EXPERT)]
    neurons = [Neuron(layer, index, 1.0, 1.0, 1.0, 0.0) for layer, index in chosen]
    return Circuit(neurons=neurons, model={"spec": lm.spec, "shape": lm.shape})


def logits(lm: LoadedModel, rows: int = 1) -> torch.Tensor:
    x = torch.tensor([lm.tokenizer(PROMPT)["input_ids"]] * rows)
    with torch.no_grad():
        return lm.model(input_ids=x).logits


@pytest.mark.parametrize("family", ["qwen2_moe", "mixtral"])
def test_row_steering_equals_the_hook_row_by_row(family: str) -> None:
    lm = tiny_lm(family)
    circuit = circuit_of(lm)
    plain = logits(lm)
    with circuit.apply(lm, 3.0):
        hooked = logits(lm)
    maps = {layer: (s.index, s.factor, s.offset) for layer, s in circuit.scales(3.0).items()}
    with steer_rows(lm, [maps, None]):
        both = logits(lm, rows=2)
    torch.testing.assert_close(both[0], hooked[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(both[1], plain[0], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(hooked, plain, atol=1e-4)


def test_the_gain_table_equals_the_hook() -> None:
    lm = tiny_lm("qwen3_moe")
    circuit = circuit_of(lm)
    with circuit.apply(lm, -2.0):
        hooked = logits(lm)
    install_gains(lm)
    with circuit.apply(lm, -2.0):
        gained = logits(lm)
    torch.testing.assert_close(gained, hooked, rtol=1e-5, atol=1e-6)


def test_directional_ablation_hooks_work_and_weight_orthogonalisation_is_refused() -> None:
    lm = tiny_lm("olmoe")
    direction = torch.randn(lm.adapter.d_model)
    plain = logits(lm)
    with ablate_direction(lm, direction):
        ablated = logits(lm)
    assert not torch.allclose(ablated, plain, atol=1e-5)
    with pytest.raises(ConfigError, match="fused 3-D"):
        orthogonalize(lm, direction)
    assert torch.equal(logits(lm), plain)
