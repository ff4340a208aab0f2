"""Weight folding: folded weights give the hooked model's logits, and undo restores the exact weights."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch

from neurogate.discovery.circuit import Circuit, Neuron
from neurogate.models.loading import LoadedModel, load_model
from neurogate.models.tiny import tiny_lm
from neurogate.steering import fold, steer

PICKS = [(0, 3), (0, 17), (1, 5), (1, 60), (2, 90)]
ZOO = "zoo:smollm2-135m-instruct"


def make_circuit(lm: LoadedModel, picks: Sequence[tuple[int, int]]) -> Circuit:
    neurons = [Neuron(layer, index, 1.0, 1.0, 1.0, 0.0) for layer, index in picks]
    model = {"spec": lm.spec, "shape": lm.shape}
    return Circuit(neurons=neurons, model=model, method={"score": "test"})


PROMPT = "<|im_start|>user\nfold me<|im_end|>\n<|im_start|>assistant\n"


def logits(lm: LoadedModel, text: str = PROMPT) -> torch.Tensor:
    x = torch.tensor([lm.tokenizer(text)["input_ids"]])
    with torch.no_grad():
        return lm.model(input_ids=x).logits.float()


def weights(lm: LoadedModel) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in lm.model.state_dict().items()}


@pytest.mark.parametrize("family", ["llama", "qwen2", "gemma3", "phi3", "gpt2", "gpt_neox"])
@pytest.mark.parametrize("multiplier", [0.0, 0.3, 2.5])
def test_folded_logits_match_hooked_logits(family: str, multiplier: float) -> None:
    lm = tiny_lm(family)
    c = make_circuit(lm, PICKS)
    plain = logits(lm)
    with steer(lm, c, multiplier):
        hooked = logits(lm)
    with fold(lm, c, multiplier):
        folded = logits(lm)
    assert (hooked - folded).abs().max() <= 1e-5
    assert (hooked - plain).abs().max() > 1e-4  # the intervention changed the output


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_fold_undo_restores_bit_exact_weights(family: str) -> None:
    lm = tiny_lm(family)
    c = make_circuit(lm, PICKS)
    before = weights(lm)
    factors = torch.tensor([0.0, 0.37, 1.9, -0.4, 0.123])
    handle = fold(lm, c, factors)
    changed = [k for k, v in lm.model.state_dict().items() if not torch.equal(v, before[k])]
    assert len(changed) == 3  # one down-projection weight per circuit layer
    handle.remove()
    handle.remove()
    assert all(torch.equal(v, before[k]) for k, v in lm.model.state_dict().items())


def test_nested_folds_compose_and_unwind(lm: LoadedModel) -> None:
    c = make_circuit(lm, PICKS)
    before = weights(lm)
    with fold(lm, c, 0.5), fold(lm, c, 0.5):
        twice = logits(lm)
    with steer(lm, c, 0.25):
        hooked = logits(lm)
    assert (twice - hooked).abs().max() <= 1e-5
    assert all(torch.equal(v, before[k]) for k, v in lm.model.state_dict().items())


#: bf16's unit roundoff (8 significant bits, round to nearest).
BF16_U = 2.0**-8
#: float32's unit roundoff.
F32_U = 2.0**-24


def test_fold_in_bf16_on_zoo_model_matches_hooks_within_rounding(zoo_lm: LoadedModel) -> None:
    """In bf16, hooks and folding round at different places, so they may differ, but only by rounding.

    The bound is derived from bf16's and float32's unit roundoff, not from one CPU's kernels. For output
    ``j`` of a down-projection with inputs ``a`` and weights ``W``, against the exact sum
    ``sum_i m_i a_i W_ji``: the hook rounds ``m`` to bf16 and then ``a_i m_i`` (relative error at most
    ``2u + u^2``); folding rounds ``m_i W_ji`` once (at most ``u``, plus float32's product); every CPU bf16
    matrix kernel accumulates in float32 (at most ``gamma_n`` of the sum of ``|terms|``), and rounds the
    output once (``u |y|``). Whole-model logits are compared in float32, where the two must agree.
    """
    lm = load_model(ZOO, dtype="bfloat16", device="cpu")
    picks = [(layer, (37 * layer + 11 * k) % lm.adapter.d_mlp) for layer in range(0, 30, 3) for k in range(5)]
    c = make_circuit(lm, picks)
    m = 0.3
    before = weights(lm)
    text = "<|im_start|>user\nHow do I bake bread?<|im_end|>\n<|im_start|>assistant\n"
    inputs: dict[int, torch.Tensor] = {}
    layers = sorted({layer for layer, _ in picks})
    handles = [
        lm.adapter.down_proj(layer).register_forward_pre_hook(
            lambda _m, args, layer=layer: inputs.__setitem__(layer, args[0].detach().clone())
        )
        for layer in layers
    ]
    try:
        logits(lm, text)
    finally:
        for h in handles:
            h.remove()
    for layer in layers:
        module = lm.adapter.down_proj(layer)
        a = inputs[layer]
        with torch.no_grad():  # the hook scales its input in place: each call gets its own copy
            plain = module(a.clone()).double()
        with torch.no_grad(), steer(lm, c, m):
            hooked = module(a.clone()).double()
        with torch.no_grad(), fold(lm, c, m):
            folded = module(a.clone()).double()
            index = torch.tensor([i for ell, i in picks if ell == layer])
            original = before[next(k for k in before if k.endswith(f"layers.{layer}.mlp.down_proj.weight"))]
            expected = (original[:, index].float() * m).to(torch.bfloat16)
            assert torch.equal(module.weight[:, index], expected)  # one rounding of m * W, nothing else
        w = module.weight.double()
        scale = torch.ones(w.shape[1], dtype=torch.float64)
        scale[index] = m
        terms = a.double().abs() * scale  # [..., d_mlp]
        total = terms @ w.abs().T  # sum_i |m_i a_i W_ji|
        in_circuit = terms[..., index] @ w[:, index].abs().T
        n = w.shape[1]
        gamma = n * F32_U / (1 - n * F32_U)
        bound = (
            (3 * BF16_U + BF16_U**2 + 4 * F32_U) * in_circuit
            + 2 * gamma * total
            + BF16_U * (hooked.abs() + folded.abs())
        )
        worst = ((hooked - folded).abs() - bound).max().item()
        assert worst <= 0, f"layer {layer}: hook and fold differ by more than bf16 rounding allows"
        assert ((hooked - plain).abs() > bound).any()  # the intervention is larger than the tolerance
    assert all(torch.equal(v, before[k]) for k, v in lm.model.state_dict().items())
    ref_circuit = make_circuit(zoo_lm, picks)
    with steer(zoo_lm, ref_circuit, m):
        reference = logits(zoo_lm, text)
    with fold(zoo_lm, ref_circuit, m):
        assert (logits(zoo_lm, text) - reference).abs().max() <= 2e-4
