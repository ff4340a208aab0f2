"""Mixture-of-experts adapters: the flat neuron numbering, the block forward that exposes expert neurons,
and a clear refusal for models that mix dense and sparse layers."""

from __future__ import annotations

import pytest
import torch
import transformers as tf
from transformers import AutoModelForCausalLM

from neurogate.discovery.capture import CaptureOptions, capture_values
from neurogate.discovery.circuit import Circuit, Neuron
from neurogate.errors import UnsupportedArchitectureError
from neurogate.models.architectures import resolve_adapter
from neurogate.models.generation import generate
from neurogate.models.hooks import hook_site
from neurogate.models.moe import MoeLayout, neuron_label
from neurogate.models.tiny import D_EXPERT, D_SHARED, N_EXPERTS, TINY_MOE_FAMILIES, tiny_lm

PROMPT = "<|im_start|>user\nwhich expert?<|im_end|>\n"


@pytest.mark.parametrize("family", TINY_MOE_FAMILIES)
def test_adapter_reads_the_expert_layout(family: str) -> None:
    lm = tiny_lm(family)
    shared = D_SHARED if family == "qwen2_moe" else 0
    assert lm.adapter.moe == MoeLayout(N_EXPERTS, D_EXPERT, 2, shared)
    assert lm.adapter.d_mlp == N_EXPERTS * D_EXPERT + shared
    assert lm.shape["moe"] == {"n_experts": 4, "d_expert": 24, "top_k": 2, "d_shared": shared}
    assert lm.adapter.family == family


@pytest.mark.parametrize("family", TINY_MOE_FAMILIES)
def test_reading_the_site_leaves_the_output_exact_and_the_forward_restored(family: str) -> None:
    lm = tiny_lm(family)
    x = torch.tensor([lm.tokenizer(PROMPT)["input_ids"]])
    with torch.no_grad():
        plain = lm.model(input_ids=x).logits
        seen: list[torch.Tensor] = []
        handle = hook_site(lm, "blocks.1.mlp.post", lambda site: seen.append(site.clone()))
        read = lm.model(input_ids=x).logits
        handle.remove()
        after = lm.model(input_ids=x).logits
    assert torch.allclose(read, plain, rtol=1e-5, atol=1e-6)
    assert torch.equal(after, plain)
    assert "forward" not in lm.adapter.down_proj(1).__dict__
    site = seen[0]
    assert site.shape == (1, x.shape[1], lm.adapter.d_mlp)
    # routed experts hold values, the others NaN; the shared expert (if any) sees every token
    experts = site[0, :, : N_EXPERTS * D_EXPERT].view(-1, N_EXPERTS, D_EXPERT)
    assert bool((experts.isnan().all(-1) | ~experts.isnan().any(-1)).all())
    assert bool(((~experts.isnan()[..., 0]).sum(-1) == 2).all())
    assert not bool(site[0, :, N_EXPERTS * D_EXPERT :].isnan().any())


def test_flat_numbering_round_trips_and_labels_name_the_expert() -> None:
    layout = MoeLayout(4, 24, 2, 32)
    assert layout.split(0) == (0, 0)
    assert layout.split(24 * 3 + 5) == (3, 5)
    assert layout.split(96 + 31) == (None, 31)
    assert all(layout.flat(*layout.split(i)) == i for i in range(layout.width))
    with pytest.raises(IndexError):
        layout.split(layout.width)
    assert neuron_label(2, 29, layout.to_dict()) == "L2 E1 #5"
    assert neuron_label(2, 100, layout.to_dict()) == "L2 shared #4"
    assert neuron_label(2, 29, None) == "L2 #29"


def test_mixed_dense_and_sparse_layers_are_refused() -> None:
    config = tf.Qwen2MoeConfig(
        hidden_size=32,
        intermediate_size=48,
        moe_intermediate_size=16,
        num_experts=4,
        num_experts_per_tok=2,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        vocab_size=64,
        mlp_only_layers=[0],
    )
    model = AutoModelForCausalLM.from_config(config)
    with pytest.raises(UnsupportedArchitectureError, match="mixes dense and sparse"):
        resolve_adapter(model)


@pytest.mark.parametrize("family", TINY_MOE_FAMILIES)
def test_captures_with_a_shared_prefix_equal_plain_ones(family: str) -> None:
    lm = tiny_lm(family)
    prompts = ["Say hi.", "Describe a cloud in a few words please.", "Why?", "List three colours."]
    system = "You are a careful assistant who answers briefly."
    plain, shared = (
        capture_values(
            lm, prompts, "mlp.post", CaptureOptions(system_prompt=system, reuse_prefix=reuse, progress=False)
        )
        for reuse in (False, True)
    )
    assert torch.equal(plain.isnan(), shared.isnan())  # the same routing
    torch.testing.assert_close(shared.nan_to_num(), plain.nan_to_num(), rtol=1e-4, atol=1e-5)


def test_steered_generation_runs_and_leaves_the_model_as_it_was() -> None:
    lm = tiny_lm("olmoe")
    neurons = [Neuron(layer, 5, 1.0, 1.0, 1.0, 0.0) for layer in range(lm.adapter.n_layers)]
    circuit = Circuit(neurons=neurons, model={"spec": lm.spec, "shape": lm.shape})
    before = generate(lm, ["Hello there"], max_new_tokens=4)
    with circuit.apply(lm, 8.0):
        generate(lm, ["Hello there"], max_new_tokens=4)
    assert generate(lm, ["Hello there"], max_new_tokens=4) == before
    assert all("forward" not in block.__dict__ for block in lm.adapter.down_projs)
