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


def test_fold_in_bf16_on_zoo_model_matches_hooks_within_rounding(zoo_lm: LoadedModel) -> None:
    """bf16 folding error is judged against bf16's own error: the float32 model is the reference."""
    lm = load_model(ZOO, dtype="bfloat16", device="cpu")
    picks = [(layer, (37 * layer + 11 * k) % lm.adapter.d_mlp) for layer in range(0, 30, 3) for k in range(5)]
    c = make_circuit(lm, picks)
    before = weights(lm)
    text = "<|im_start|>user\nHow do I bake bread?<|im_end|>\n<|im_start|>assistant\n"
    with steer(lm, c, 0.3):
        hooked = logits(lm, text)
    with fold(lm, c, 0.3):
        folded = logits(lm, text)
    with steer(zoo_lm, make_circuit(zoo_lm, picks), 0.3):
        reference = logits(zoo_lm, text)
    with fold(zoo_lm, make_circuit(zoo_lm, picks), 0.3):
        assert (logits(zoo_lm, text) - reference).abs().max() <= 2e-4
    bf16_error = (hooked - reference).abs().max()
    assert (folded - reference).abs().max() <= 1.25 * bf16_error
    assert (hooked - folded).abs().max() <= bf16_error
    assert all(torch.equal(v, before[k]) for k, v in lm.model.state_dict().items())
