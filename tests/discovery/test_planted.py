"""End to end on a model whose weights plant known neurons: discovery must find exactly them, and ablating
them must change the output while ablating as many other neurons does not."""

from __future__ import annotations

import torch

from neurogate.discovery import Circuit, Neuron, discover
from neurogate.models.inputs import encode, left_padded
from neurogate.models.loading import LoadedModel
from neurogate.models.tiny import D_MLP, N_LAYERS, tiny_lm

PLANTED = {(1, 5), (2, 40), (2, 77)}
POSITIVE = [
    f"{w} {n}!" for w, n in zip(("tell", "show", "give", "make", "find", "read"), range(6), strict=True)
]
NEGATIVE = [p[:-1] + "?" for p in POSITIVE]  # the same prompts; only the last token differs


def planted_lm() -> LoadedModel:
    """A tiny Llama where only the planted neurons see the difference between a final "!" and "?".

    Attention writes nothing (zero output projections). The two marker tokens' embeddings are equal except
    along dimension 0, where they are +3 and -3, so every normalised input has the same scale on both sides.
    Only the planted neurons' gate and up projections read dimension 0; no other neuron reads dimensions
    0 or 1. Planted neurons write to dimension 1 (which the LM head reads strongly); the others write
    little, so ablating them barely moves the output.
    """
    lm = tiny_lm("llama", chat_template=False)
    bang, question = lm.tokenizer.convert_tokens_to_ids(["!", "?"])
    with torch.no_grad():
        emb = lm.model.get_input_embeddings().weight
        emb[:, :2] = 0.0
        emb[question] = emb[bang]
        emb[bang, 0], emb[question, 0] = 3.0, -3.0
        for layer in range(N_LAYERS):
            block = lm.model.model.layers[layer]
            block.self_attn.o_proj.weight.zero_()
            mlp = block.mlp
            mlp.gate_proj.weight[:, :2] = 0.0
            mlp.up_proj.weight[:, :2] = 0.0
            mlp.down_proj.weight.mul_(0.01)
            mlp.down_proj.weight[:2, :] = 0.0
        for layer, index in PLANTED:
            mlp = lm.model.model.layers[layer].mlp
            mlp.gate_proj.weight[index] = 0.0
            mlp.up_proj.weight[index] = 0.0
            mlp.gate_proj.weight[index, 0] = 0.5
            mlp.up_proj.weight[index, 0] = 0.5
            mlp.down_proj.weight[:, index] = 0.0
            mlp.down_proj.weight[1, index] = 0.05
        lm.model.lm_head.weight[:, 1] = torch.linspace(-4.0, 4.0, lm.model.lm_head.weight.shape[0])
    return lm


def _last_logits(lm: LoadedModel, prompts: list[str]) -> torch.Tensor:
    batch = left_padded(lm, encode(lm, prompts, chat=False))
    with torch.no_grad():
        return lm.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, -1].float()


def test_discovery_finds_exactly_the_planted_neurons() -> None:
    lm = planted_lm()
    circuit = discover(lm, POSITIVE, NEGATIVE, top_k=3, universal_filter=False, chat=False, progress=False)
    assert {(n.layer, n.index) for n in circuit.neurons} == PLANTED
    # the planted neurons fire on "!" and stay near zero on "?": every signed difference is positive
    assert all(n.diff > 1.0 for n in circuit.neurons)
    # and the next-ranked neuron is far behind the weakest planted one
    wider = discover(lm, POSITIVE, NEGATIVE, top_k=4, universal_filter=False, chat=False, progress=False)
    fourth = next(n for n in wider.neurons if (n.layer, n.index) not in PLANTED)
    assert fourth.score < 0.01 * min(n.score for n in circuit.neurons)


def test_ablating_planted_neurons_changes_output_and_others_do_not() -> None:
    lm = planted_lm()
    circuit = discover(lm, POSITIVE, NEGATIVE, top_k=3, universal_filter=False, chat=False, progress=False)
    others = Circuit(
        neurons=[Neuron(layer, (index + 11) % D_MLP, 0.0, 0.0, 0.0, 0.0) for layer, index in sorted(PLANTED)],
        model=circuit.model,
    )
    assert not {(n.layer, n.index) for n in others.neurons} & PLANTED
    base = _last_logits(lm, POSITIVE)
    with circuit.apply(lm, 0.0):
        ablated = _last_logits(lm, POSITIVE)
    with others.apply(lm, 0.0):
        control = _last_logits(lm, POSITIVE)
    moved = (ablated - base).abs().max().item()
    assert moved > 1.0
    assert (control - base).abs().max().item() < 0.01 * moved
    # greedy next tokens change for the planted ablation, not for the control
    assert not torch.equal(ablated.argmax(-1), base.argmax(-1))
    assert torch.equal(control.argmax(-1), base.argmax(-1))
    # on the negative prompts the planted neurons are nearly silent, so ablating them barely matters there
    neg_base = _last_logits(lm, NEGATIVE)
    with circuit.apply(lm, 0.0):
        neg_ablated = _last_logits(lm, NEGATIVE)
    assert (neg_ablated - neg_base).abs().max().item() < 0.1 * moved
