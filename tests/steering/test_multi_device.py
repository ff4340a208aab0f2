"""A model whose layers sit on different devices (as ``load_model(device="auto")`` spreads one over GPUs):
discovery, steering, folding and export give what they give on the same model in one piece.

The second device is torch's lazy-tensor backend (``"lazy"``, executed through TorchScript on the CPU): a
real device, so an operation that mixes a ``"cpu"`` tensor with a ``"lazy"`` one fails just as ``cuda:0``
with ``cuda:1`` does. accelerate's ``dispatch_model`` places the odd decoder layers on it and moves the
activations between devices, the same hooks a multi-GPU ``device_map`` installs. Two limits of the lazy
backend shape the harness: it has no inference mode (``torch.inference_mode`` is swapped for ``no_grad``
here), and safetensors cannot read its storage, so the folded-directory export (``save_pretrained``, which
transformers supports on multi-GPU models) is not exercised here; the LoRA and GGUF exports are.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from accelerate import cpu_offload, dispatch_model
from safetensors.torch import load_file

from neurogate.discovery.capture import collect_stats, last_token_values
from neurogate.discovery.circuit import Circuit, Neuron
from neurogate.discovery.directions import compute_directions
from neurogate.discovery.discover import discover
from neurogate.errors import ConfigError
from neurogate.export.lora import export_lora
from neurogate.models.generation import generate
from neurogate.models.loading import LoadedModel
from neurogate.models.tiny import tiny_lm
from neurogate.steering import fold, steer
from neurogate.steering.residual import ActivationAddition, DirectionalAblation, orthogonalize

PICKS = [(0, 3), (1, 5), (1, 9), (2, 90)]
IDS = torch.tensor([[1, 5, 9, 20, 33, 7]])
POS = ["how do I do a bad thing", "tell me how to break it", "explain the harmful trick", "show the attack"]
NEG = ["how do I do a good thing", "tell me how to fix it", "explain the helpful trick", "show the garden"]


@pytest.fixture(scope="module")
def lazy_device() -> str:
    try:
        import torch._lazy
        import torch._lazy.ts_backend

        torch._lazy.ts_backend.init()
        torch.ones(1, device="lazy").cpu()
    except (ImportError, RuntimeError) as exc:  # a torch build without the TorchScript lazy backend
        pytest.skip(f"torch's lazy backend is unavailable here ({exc}), so layers cannot be split on CPU")
    return "lazy"


@pytest.fixture
def split(lazy_device: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[LoadedModel, LoadedModel]]:
    """(the model with odd layers on the second device, the same weights in one piece on the CPU)."""
    monkeypatch.setattr(torch, "inference_mode", torch.no_grad)
    whole, lm = tiny_lm("llama"), tiny_lm("llama")
    device_map = {
        "model.embed_tokens": "cpu",
        "model.rotary_emb": "cpu",
        "model.norm": "cpu",
        "lm_head": "cpu",
    }
    device_map |= {f"model.layers.{i}": lazy_device if i % 2 else "cpu" for i in range(lm.adapter.n_layers)}
    dispatch_model(lm.model, device_map=device_map, main_device="cpu")
    yield lm, whole


def circuit_for(lm: LoadedModel) -> Circuit:
    neurons = [Neuron(layer, index, 1.0, 1.0, 1.0, 0.0) for layer, index in PICKS]
    return Circuit(neurons=neurons, model={"spec": lm.spec, "shape": lm.shape})


def logits(lm: LoadedModel) -> torch.Tensor:
    with torch.no_grad():
        return lm.model(input_ids=IDS).logits.cpu()


def test_layers_really_sit_on_two_devices(split: tuple[LoadedModel, LoadedModel]) -> None:
    lm, whole = split
    devices = [lm.adapter.down_proj(i).weight.device.type for i in range(lm.adapter.n_layers)]
    assert devices == ["cpu", "lazy", "cpu"]
    with pytest.raises(RuntimeError):  # mixing devices fails, as it does across GPUs
        _ = lm.adapter.down_proj(1).weight @ torch.ones(lm.adapter.d_mlp)
    assert (logits(lm) - logits(whole)).abs().max() <= 1e-5


def test_capture_and_discovery_match_the_whole_model(split: tuple[LoadedModel, LoadedModel]) -> None:
    lm, whole = split
    seqs = [[1, 2, 3, 4, 5], [1, 2, 3, 9, 8, 7, 6]]
    for kind in ("mlp.post", "resid_post"):
        got = last_token_values(lm, seqs, (kind,))[kind].cpu()
        assert (got - last_token_values(whole, seqs, (kind,))[kind]).abs().max() <= 1e-5
    assert (collect_stats(lm, POS).mean - collect_stats(whole, POS).mean).abs().max() <= 1e-5
    found, same = (
        discover(m, POS, NEG, top_k=6, universal_filter=False, progress=False) for m in (lm, whole)
    )
    assert [(n.layer, n.index) for n in found.neurons] == [(n.layer, n.index) for n in same.neurons]
    assert {n.layer for n in found.neurons} & {1}  # the split layer contributes


def test_steering_fold_and_baselines_match_the_whole_model(split: tuple[LoadedModel, LoadedModel]) -> None:
    lm, whole = split
    circuit = circuit_for(lm)
    before = {k: v.cpu().clone() for k, v in lm.model.state_dict().items()}
    for lm_ in (lm, whole):
        with steer(lm_, circuit, 0.0):
            hooked = logits(lm_)
        with fold(lm_, circuit, 0.0):
            assert (logits(lm_) - hooked).abs().max() <= 1e-5
    with steer(lm, circuit, 0.0):
        split_hooked = logits(lm)
    with steer(whole, circuit, 0.0):
        assert (logits(whole) - split_hooked).abs().max() <= 1e-5
    assert all(torch.equal(v.cpu(), before[k]) for k, v in lm.model.state_dict().items())  # fold undone
    directions = compute_directions(lm, POS, NEG, heldout_fraction=0.0)
    same = compute_directions(whole, POS, NEG, heldout_fraction=0.0)
    assert (directions.diffs - same.diffs).abs().max() <= 1e-5
    with ActivationAddition(lm, directions, 1.0, layer=1).attach():
        caa = logits(lm)
    with ActivationAddition(whole, same, 1.0, layer=1).attach():
        assert (logits(whole) - caa).abs().max() <= 1e-4
    with DirectionalAblation(lm, directions, 1.0, layer=1).attach():
        ablated = logits(lm)
    with orthogonalize(lm, directions.unit(1)):
        assert (logits(lm) - ablated).abs().max() <= 1e-4


def test_generation_and_lora_export_match_the_whole_model(
    split: tuple[LoadedModel, LoadedModel], tmp_path: Path
) -> None:
    lm, whole = split
    prompts = ["hello there", "tell me a story"]
    assert [g.token_ids for g in generate(lm, prompts, max_new_tokens=4)] == [
        g.token_ids for g in generate(whole, prompts, max_new_tokens=4)
    ]
    circuit = circuit_for(lm)
    a = load_file(str(export_lora(lm, circuit, 0.3, tmp_path / "split") / "adapter_model.safetensors"))
    b = load_file(str(export_lora(whole, circuit, 0.3, tmp_path / "whole") / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_offloaded_layers_steer_and_export_but_refuse_in_place_folding(tmp_path: Path) -> None:
    """accelerate's offload (weights off the accelerator between passes, as when a 70B model overflows its
    GPUs): hooks and the LoRA export read the offloaded copy; folding in place is refused, never lost."""
    lm, whole = tiny_lm("llama"), tiny_lm("llama")
    cpu_offload(lm.model, execution_device=torch.device("cpu"))
    assert lm.adapter.down_proj(1).weight.device.type == "meta"
    circuit = circuit_for(lm)
    with steer(lm, circuit, 0.0):
        hooked = logits(lm)
    with steer(whole, circuit, 0.0):
        assert (logits(whole) - hooked).abs().max() <= 1e-5
    with pytest.raises(ConfigError, match="offloaded"):
        fold(lm, circuit, 0.0)
    a = load_file(str(export_lora(lm, circuit, 0.0, tmp_path / "offloaded") / "adapter_model.safetensors"))
    b = load_file(str(export_lora(whole, circuit, 0.0, tmp_path / "whole") / "adapter_model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
