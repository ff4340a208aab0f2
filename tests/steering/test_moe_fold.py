"""Mixture-of-experts steering: hooks on expert neurons equal the fold into the experts' down-projections,
which equals the exported model directory reloaded by plain transformers, on every tiny MoE family."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from neurogate.discovery.circuit import Circuit, Neuron
from neurogate.errors import ConfigError
from neurogate.export.lora import export_lora
from neurogate.export.model import export_model
from neurogate.models.loading import LoadedModel
from neurogate.models.moe import hook_block
from neurogate.models.tiny import D_EXPERT, N_EXPERTS, TINY_MOE_FAMILIES, tiny_lm
from neurogate.steering import fold, steer

PROMPT = "<|im_start|>user\nroute me through the experts<|im_end|>\n<|im_start|>assistant\n"


def picks(lm: LoadedModel) -> list[tuple[int, int]]:
    """Neurons in several experts of every layer, and the shared expert's last neuron where there is one."""
    last = lm.adapter.d_mlp - 1
    return [(0, 3), (0, D_EXPERT + 5), (1, 2 * D_EXPERT + 1), (1, last), (2, 0), (2, 3 * D_EXPERT + 7)]


def make_circuit(lm: LoadedModel, chosen: Sequence[tuple[int, int]]) -> Circuit:
    neurons = [Neuron(layer, index, 1.0, 1.0, 1.0, 0.0) for layer, index in chosen]
    return Circuit(neurons=neurons, model={"spec": lm.spec, "shape": lm.shape}, method={"score": "test"})


def logits_of(model: torch.nn.Module, lm: LoadedModel) -> torch.Tensor:
    x = torch.tensor([lm.tokenizer(PROMPT)["input_ids"]])
    with torch.no_grad():
        return model(input_ids=x).logits.float()


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("family", TINY_MOE_FAMILIES)
def test_hook_equals_fold_equals_export(family: str, tmp_path: Path) -> None:
    lm = tiny_lm(family)
    circuit = make_circuit(lm, picks(lm))
    before = {k: v.clone() for k, v in lm.model.state_dict().items()}
    plain = logits_of(lm.model, lm)
    factors = torch.tensor([0.0, 2.5, -1.0, 3.0, 0.5, 4.0])
    with steer(lm, circuit, factors):
        hooked = logits_of(lm.model, lm)
    assert all("forward" not in block.__dict__ for block in lm.adapter.down_projs)  # hooks removed
    with fold(lm, circuit, factors):
        folded = logits_of(lm.model, lm)
    assert all(torch.equal(v, before[k]) for k, v in lm.model.state_dict().items())  # undo is exact
    out = export_model(lm, circuit, factors, tmp_path / "steered")
    reloaded = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    exported = logits_of(reloaded, lm)
    assert relative(hooked, plain) > 1e-4  # the intervention changed the output
    assert relative(hooked, folded) <= 1e-5
    assert relative(exported, folded) <= 1e-5
    assert torch.equal(logits_of(lm.model, lm), plain)  # nothing left behind


@pytest.mark.parametrize("family", ["mixtral", "qwen2_moe"])
def test_a_scaled_neuron_changes_only_tokens_routed_to_its_expert(family: str) -> None:
    lm = tiny_lm(family)
    last = lm.adapter.n_layers - 1  # the last layer's MLP writes only into its own position's logits
    x = torch.tensor([lm.tokenizer(PROMPT)["input_ids"]])
    seen: list[torch.Tensor] = []
    with torch.no_grad(), hook_block(lm.adapter.down_proj(last), lambda site: seen.append(site.clone())):
        plain = lm.model(input_ids=x).logits
    flat = seen[0][0]  # [pos, width]
    routed = ~flat[:, : N_EXPERTS * D_EXPERT].view(-1, N_EXPERTS, D_EXPERT)[..., 0].isnan()
    assert bool((routed.sum(-1) == 2).all())  # top-2: exactly two experts per token hold values
    expert = int(routed[-1].nonzero()[0])
    assert not bool(routed[:, expert].all())  # some tokens went elsewhere
    circuit = make_circuit(lm, [(last, expert * D_EXPERT + 1)])
    with torch.no_grad(), steer(lm, circuit, 0.0):
        steered = lm.model(input_ids=x).logits
    changed = (steered - plain).abs().amax(-1)[0] > 0
    assert torch.equal(changed, routed[:, expert])


def test_mean_ablation_and_lora_are_refused_with_what_to_do(tmp_path: Path) -> None:
    lm = tiny_lm("qwen3_moe")
    circuit = make_circuit(lm, [(0, 1), (1, 30)])
    with pytest.raises(ConfigError, match="mean-ablation"):
        fold(lm, circuit, 0.0, toward="mean")
    with pytest.raises(ConfigError, match=r"fused 3-D.*--format dir"):
        export_lora(lm, circuit, 0.0, tmp_path / "adapter")
