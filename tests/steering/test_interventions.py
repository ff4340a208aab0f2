"""Neuron multiplier hooks, residual baselines and the intervention protocol, on tiny random models."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
import torch

from neurogate.discovery.circuit import Circuit, Neuron
from neurogate.discovery.directions import ResidualDirections
from neurogate.errors import CircuitError, ConfigError
from neurogate.models.loading import LoadedModel
from neurogate.models.tiny import tiny_lm
from neurogate.steering import (
    INTERVENTIONS,
    KINDS,
    MULTIPLIER,
    STRENGTH,
    Handle,
    ablate_direction,
    get_kind,
    make,
    orthogonalize,
    random_circuit,
    steer,
)
from neurogate.steering.neurons import MeanAblation, NeuronScaling, RandomControl
from neurogate.steering.residual import ActivationAddition, DirectionalAblation

PICKS = [(0, 3), (0, 17), (0, 40), (1, 5), (2, 90)]


def make_circuit(lm: LoadedModel, picks: Sequence[tuple[int, int]]) -> Circuit:
    neurons = [Neuron(layer, index, 1.0, 1.0, 1.0, 0.0) for layer, index in picks]
    model = {"spec": lm.spec, "shape": lm.shape}
    return Circuit(neurons=neurons, model=model, method={"score": "test"})


def ids(lm: LoadedModel, text: str = "<|im_start|>user\nhello there<|im_end|>") -> torch.Tensor:
    return torch.tensor([lm.tokenizer(text)["input_ids"]])


def logits(lm: LoadedModel, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return lm.model(input_ids=x).logits


def site_inputs(lm: LoadedModel, layer: int, run: Any) -> list[torch.Tensor]:
    """Every input the layer's down-projection saw while ``run()`` ran (after other hooks)."""
    seen: list[torch.Tensor] = []
    down = lm.adapter.down_proj(layer)
    hook = down.register_forward_pre_hook(lambda m, a: seen.append(a[0].detach().clone()))
    try:
        run()
    finally:
        hook.remove()
    return seen


def hook_count(lm: LoadedModel) -> int:
    return sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in lm.model.modules())


def test_steer_scales_only_circuit_neurons_at_every_position(lm: LoadedModel) -> None:
    c = make_circuit(lm, PICKS)
    x = ids(lm)
    (plain,) = site_inputs(lm, 0, lambda: logits(lm, x))
    with steer(lm, c, 0.25):
        (steered,) = site_inputs(lm, 0, lambda: logits(lm, x))
    idx = torch.tensor([3, 17, 40])
    other = torch.ones(plain.shape[-1], dtype=torch.bool)
    other[idx] = False
    assert torch.allclose(steered[..., idx], 0.25 * plain[..., idx])
    assert torch.equal(steered[..., other], plain[..., other])
    assert plain.shape[1] == x.shape[1] > 1


def test_steer_reaches_generated_tokens(lm: LoadedModel) -> None:
    c = make_circuit(lm, PICKS)
    x = ids(lm)

    def run() -> None:
        lm.model.generate(input_ids=x, max_new_tokens=5, do_sample=False, pad_token_id=0)

    with steer(lm, c, 0.0):
        seen = site_inputs(lm, 0, run)
    assert len(seen) == 5 and seen[-1].shape[1] == 1  # one prefill call, then one call per new token
    for acts in seen:
        assert acts[..., [3, 17, 40]].abs().max() == 0
        assert acts.abs().max() > 0


def test_per_neuron_multipliers_mapping_and_tensor_agree(lm: LoadedModel) -> None:
    c = make_circuit(lm, PICKS)
    x = ids(lm)
    factors = torch.tensor([0.0, 0.5, 2.0, -1.0, 3.0])
    mapping = {(n.layer, n.index): float(f) for n, f in zip(c.neurons, factors, strict=True)}
    with steer(lm, c, factors):
        a = logits(lm, x)
        (acts,) = site_inputs(lm, 0, lambda: logits(lm, x))
    with steer(lm, c, mapping):
        b = logits(lm, x)
    (plain,) = site_inputs(lm, 0, lambda: logits(lm, x))
    assert torch.equal(a, b)
    assert torch.allclose(acts[..., [3, 17, 40]], plain[..., [3, 17, 40]] * factors[:3])
    partial = {(0, 3): 0.0}  # unnamed neurons keep m = 1
    with steer(lm, c, partial):
        (acts,) = site_inputs(lm, 0, lambda: logits(lm, x))
    assert acts[..., 3].abs().max() == 0 and torch.equal(acts[..., 17], plain[..., 17])


def test_steers_compose_by_multiplying(lm: LoadedModel) -> None:
    c = make_circuit(lm, PICKS)
    x = ids(lm)
    with steer(lm, c, 0.5), steer(lm, c, 0.4):
        both = logits(lm, x)
    with steer(lm, c, 0.2):
        once = logits(lm, x)
    assert torch.allclose(both, once, atol=1e-5)


def test_hooks_are_removed_on_exit_and_on_exception(lm: LoadedModel) -> None:
    c = make_circuit(lm, PICKS)
    x = ids(lm)
    before = logits(lm, x)
    base = hook_count(lm)
    with pytest.raises(RuntimeError, match="boom"), steer(lm, c, 0.0):
        assert hook_count(lm) == base + 3
        raise RuntimeError("boom")
    assert hook_count(lm) == base
    handle = steer(lm, c, 0.0)
    assert not torch.equal(logits(lm, x), before)
    handle.remove()
    handle.remove()  # idempotent
    assert handle.removed and hook_count(lm) == base
    assert torch.equal(logits(lm, x), before)


def test_steer_refuses_a_circuit_from_another_model(lm: LoadedModel) -> None:
    other = tiny_lm("gpt2")
    c = make_circuit(other, [(0, 1)])
    with pytest.raises(CircuitError, match="does not fit"):
        steer(lm, c, 0.0)


@pytest.mark.parametrize("bad", [torch.ones(3), {(5, 5): 0.0}, "zero", float("nan")])
def test_bad_multipliers_raise_config_errors(lm: LoadedModel, bad: Any) -> None:
    with pytest.raises(ConfigError):
        steer(lm, make_circuit(lm, PICKS), bad)


def test_make_cna_multiplier_scale_and_context_manager(lm: LoadedModel) -> None:
    c = make_circuit(lm, PICKS)
    x = ids(lm)
    iv = make("cna", lm, c, 0.25)  # cna's value is the multiplier m itself
    assert isinstance(iv, NeuronScaling) and iv.kind == "cna" and iv.value == 0.25
    assert iv.scale is MULTIPLIER and iv.source == "circuit"
    assert iv.label == "cna m=0.25"
    assert iv.describe() == {"kind": "cna", "scale": "multiplier", "multiplier": 0.25, "neurons": len(c)}
    with steer(lm, c, 0.25):
        expected = logits(lm, x)
    with iv:
        with iv:  # re-entrant: two attachments compose, inner one is removed first
            twice = logits(lm, x)
        got = logits(lm, x)
    assert torch.equal(got, expected)
    with steer(lm, c, 0.0625):
        assert torch.allclose(twice, logits(lm, x), atol=1e-5)
    assert hook_count(lm) == 0


def test_residual_kinds_use_the_strength_scale(lm: LoadedModel) -> None:
    dirs = ResidualDirections(torch.randn(3, 64), 1, [0.5, 0.6, 0.5])
    caa = make("caa", lm, dirs, 0.5)
    assert isinstance(caa, ActivationAddition) and caa.scale is STRENGTH and caa.source == "directions"
    assert caa.label == "caa s=0.5"
    assert caa.describe() == {"kind": "caa", "scale": "strength", "strength": 0.5, "layer": 1}
    abl = make("ablation", lm, dirs, 1.0, layer=0)
    assert isinstance(abl, DirectionalAblation) and abl.value == 1.0
    assert abl.describe() == {"kind": "ablation", "scale": "strength", "strength": 1.0, "layer": 0}
    assert abl.label == "ablation s=1"


def test_registry_maps_each_kind_to_its_class_and_scale() -> None:
    expected = {
        "cna": (NeuronScaling, MULTIPLIER),
        "mean": (MeanAblation, MULTIPLIER),
        "random": (RandomControl, MULTIPLIER),
        "caa": (ActivationAddition, STRENGTH),
        "ablation": (DirectionalAblation, STRENGTH),
    }
    assert set(KINDS) == set(INTERVENTIONS) == set(expected)
    for kind, (cls, scale) in expected.items():
        assert get_kind(kind) is cls and cls.kind == kind and cls.scale is scale
    assert (MULTIPLIER.neutral, STRENGTH.neutral) == (1.0, 0.0)
    assert MULTIPLIER.label(0.5) == "m=0.5" and STRENGTH.label(1.0) == "s=1"


def _source(lm: LoadedModel, kind: str) -> Circuit | ResidualDirections:
    if get_kind(kind).source == "circuit":
        return make_circuit(lm, PICKS)
    return ResidualDirections(torch.randn(3, 64) * 4, 1, [0.5, 0.9, 0.6])


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_at_its_neutral_value_changes_nothing(lm: LoadedModel, kind: str) -> None:
    x = ids(lm)
    plain = logits(lm, x)
    scale = get_kind(kind).scale
    source = _source(lm, kind)
    neutral = make(kind, lm, source, scale.neutral)
    assert neutral.value == scale.neutral
    with neutral:
        assert hook_count(lm) > 0  # attached, and still bit-identical to no intervention
        assert torch.equal(logits(lm, x), plain)
    full = 0.0 if scale is MULTIPLIER else 1.0  # while the full effect on the same scale does change it
    with make(kind, lm, source, full):
        assert not torch.allclose(logits(lm, x), plain, atol=1e-4)
    assert hook_count(lm) == 0
    assert torch.equal(logits(lm, x), plain)


def test_circuit_apply_is_steer_and_its_handle_removes_the_hooks(lm: LoadedModel) -> None:
    c = make_circuit(lm, PICKS)
    x = ids(lm)
    plain = logits(lm, x)
    with steer(lm, c, 0.25):
        via_steer = logits(lm, x)
    handle = c.apply(lm, 0.25)
    assert isinstance(handle, Handle) and not handle.removed
    assert hook_count(lm) == len(c.per_layer())  # one hook per circuit layer
    assert torch.equal(logits(lm, x), via_steer)
    assert not torch.allclose(via_steer, plain, atol=1e-4)
    handle.remove()
    assert handle.removed and hook_count(lm) == 0
    assert torch.equal(logits(lm, x), plain)
    with c.apply(lm, 0.25):  # also a context manager
        assert torch.equal(logits(lm, x), via_steer)
    assert hook_count(lm) == 0


def test_circuit_scales_and_factors_resolve_the_multiplier(lm: LoadedModel) -> None:
    c = make_circuit(lm, PICKS)
    assert c.factors(0.5) == [0.5] * len(PICKS)
    assert c.factors({(0, 17): 2.0}) == [1.0, 2.0, 1.0, 1.0, 1.0]
    scales = c.scales({(0, 17): 2.0, (2, 90): 0.0})
    assert sorted(scales) == [0, 1, 2]
    assert scales[0].index.tolist() == [3, 17, 40] and scales[0].factor.tolist() == [1.0, 2.0, 1.0]
    assert scales[1].index.tolist() == [5] and scales[1].factor.tolist() == [1.0]
    assert scales[2].index.tolist() == [90] and scales[2].factor.tolist() == [0.0]


def test_make_rejects_wrong_sources_and_options(lm: LoadedModel) -> None:
    c = make_circuit(lm, PICKS)
    dirs = ResidualDirections(torch.randn(3, 64), 1, [0.5, 0.6, 0.5])
    with pytest.raises(ConfigError, match="unknown intervention kind"):
        make("bogus", lm, c, 1.0)
    with pytest.raises(ConfigError, match="Did you mean 'cna'"):
        make("cnaa", lm, c, 1.0)
    for kind in ("cna", "random"):
        with pytest.raises(ConfigError, match=f"kind '{kind}' needs a Circuit"):
            make(kind, lm, dirs, 1.0)
    for kind in ("caa", "ablation"):
        with pytest.raises(ConfigError, match=f"kind '{kind}' needs a ResidualDirections"):
            make(kind, lm, c, 1.0)
    with pytest.raises(ConfigError, match="takes no option"):
        make("cna", lm, c, 1.0, layer=2)
    with pytest.raises(ConfigError, match=r"takes no option\(s\) \['seed'\]"):
        make("caa", lm, dirs, 1.0, seed=0)
    with pytest.raises(ConfigError, match=r"takes no option\(s\) \['layer'\]; it takes \['seed'\]"):
        make("random", lm, c, 1.0, layer=1)
    assert hook_count(lm) == 0


def test_random_control_matches_per_layer_counts_and_avoids_circuit(lm: LoadedModel) -> None:
    c = make_circuit(lm, PICKS)
    r1, r2, r3 = random_circuit(c, seed=1), random_circuit(c, seed=1), random_circuit(c, seed=2)
    assert r1.per_layer() == c.per_layer()
    assert not {(n.layer, n.index) for n in r1.neurons} & {(n.layer, n.index) for n in c.neurons}
    assert r1.neurons == r2.neurons and r1.neurons != r3.neurons
    iv = make("random", lm, c, 0.0, seed=1)
    assert iv.kind == "random" and iv.describe()["neurons"] == len(c) and iv.describe()["seed"] == 1
    assert iv.label == "random m=0"
    x = ids(lm)
    with steer(lm, r1, 0.0):
        expected = logits(lm, x)
    with iv:  # the control steers exactly the seeded random circuit
        assert torch.equal(logits(lm, x), expected)


def residual_after(lm: LoadedModel, layer: int, x: torch.Tensor) -> torch.Tensor:
    seen: list[torch.Tensor] = []
    hook = lm.adapter.layer(layer).register_forward_hook(
        lambda m, a, o: seen.append((o[0] if isinstance(o, tuple) else o).detach().clone())
    )
    try:
        logits(lm, x)
    finally:
        hook.remove()
    return seen[0]


def test_caa_subtracts_strength_times_diff_after_the_layer(lm: LoadedModel) -> None:
    diffs = torch.randn(3, 64)
    dirs = ResidualDirections(diffs, best_layer=1, separation=[0.5, 0.9, 0.7])
    x = ids(lm)
    plain = residual_after(lm, 1, x)
    with make("caa", lm, dirs, 0.5):
        steered = residual_after(lm, 1, x)
    assert torch.allclose(steered - plain, (-0.5 * diffs[1]).expand_as(plain), atol=1e-5)
    plain0 = residual_after(lm, 0, x)
    with make("caa", lm, dirs, -1.0, layer=0) as iv:
        assert iv.describe()["layer"] == 0
        assert torch.allclose(residual_after(lm, 0, x) - plain0, diffs[0].expand_as(plain0), atol=1e-5)
    assert hook_count(lm) == 0


@pytest.mark.parametrize("family", ["llama", "gpt2", "gemma2"])
def test_directional_ablation_removes_the_direction_everywhere(family: str) -> None:
    lm = tiny_lm(family)
    r = torch.randn(64)
    x = ids(lm)
    with ablate_direction(lm, r):
        for layer in range(3):
            h = residual_after(lm, layer, x)
            assert (h @ (r / r.norm())).abs().max() < 1e-4 * h.abs().max()
    assert hook_count(lm) == 0


@pytest.mark.parametrize("family", ["llama", "qwen2", "phi3", "gpt2", "gpt_neox", "gemma"])
def test_orthogonalised_weights_match_ablation_hooks(family: str) -> None:
    lm = tiny_lm(family)
    r = torch.randn(64)
    x = ids(lm)
    before = {k: v.clone() for k, v in lm.model.state_dict().items()}
    with ablate_direction(lm, r):
        hooked = logits(lm, x)
    with orthogonalize(lm, r):
        folded = logits(lm, x)
    assert (hooked - folded).abs().max() < 1e-4
    assert not torch.allclose(hooked, logits(lm, x), atol=1e-3)  # the ablation did change something
    after = lm.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    out, emb = lm.model.get_output_embeddings(), lm.model.get_input_embeddings()
    assert (out.weight is emb.weight) == bool(lm.model.config.tie_word_embeddings)


def test_orthogonalize_refuses_sandwich_norm_models() -> None:
    lm = tiny_lm("gemma2")
    with pytest.raises(ConfigError, match="hook form"):
        orthogonalize(lm, torch.randn(64))


def test_handle_runs_every_undo_and_reports_the_first_failure() -> None:
    done: list[int] = []

    def fail() -> None:
        raise ValueError("undo failed")

    h = Handle([lambda: done.append(1), fail, lambda: done.append(3)])
    with pytest.raises(ValueError, match="undo failed"):
        h.remove()
    assert done == [3, 1] and h.removed
    h.remove()
