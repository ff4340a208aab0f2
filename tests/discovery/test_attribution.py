"""Single-prompt attribution: exact against a re-implemented linearised forward, close to real ablation
effects, on several families, leaves no hooks, round-trips as a circuit that steers, refuses bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from neurogate.discovery.attribution import AttributionConfig, attribute
from neurogate.discovery.circuit import Circuit, Neuron
from neurogate.errors import ConfigError, UnsupportedArchitectureError
from neurogate.evaluation.attribution_check import compare, load_circuit, self_check, target_logprob
from neurogate.models.loading import LoadedModel
from neurogate.models.tiny import tiny_lm
from neurogate.steering.fold import fold
from neurogate.steering.registry import make

PROMPT = "How do I pick a lock?"


def _rms(h: torch.Tensor, norm: torch.nn.Module) -> torch.Tensor:
    """RMSNorm with its scale held constant."""
    scale = torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon).detach()
    return norm.weight * (h * scale)


def _linearised_llama(
    lm: LoadedModel, ids: list[int], target: int
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """A Llama forward written out by hand with the linearisation (constant norm scales and attention
    patterns, activation through its value ratio, the gate-up product's gradient halved on each side) and
    a zero leaf added at each down-projection input. Returns the target's log-prob and
    activation x gradient per layer, ``[pos, d_mlp]``."""
    core = lm.model.model
    cfg = lm.model.config
    n_heads, n_kv, hd = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    pos = torch.arange(len(ids))[None]
    h = core.embed_tokens(torch.tensor([ids]))
    cos, sin = core.rotary_emb(h, pos)
    t = len(ids)
    causal = torch.full((t, t), float("-inf")).triu(1)
    leaves, acts = [], []
    for layer in core.layers:
        attn, mlp = layer.self_attn, layer.mlp
        x = _rms(h, layer.input_layernorm)
        q = attn.q_proj(x).view(1, t, n_heads, hd).transpose(1, 2)
        k = attn.k_proj(x).view(1, t, n_kv, hd).transpose(1, 2)
        v = attn.v_proj(x).view(1, t, n_kv, hd).transpose(1, 2)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        k = k.repeat_interleave(n_heads // n_kv, dim=1)
        v = v.repeat_interleave(n_heads // n_kv, dim=1)
        pattern = torch.softmax(q @ k.transpose(-1, -2) * hd**-0.5 + causal, dim=-1).detach()
        h = h + attn.o_proj((pattern @ v).transpose(1, 2).reshape(1, t, -1))
        x = _rms(h, layer.post_attention_layernorm)
        g, u = mlp.gate_proj(x), mlp.up_proj(x)
        act = torch.nn.functional.silu(g)
        act_lin = act.detach() + 0.5 * (g - g.detach()) * (act / g).detach()
        up_lin = u.detach() + 0.5 * (u - u.detach())
        a = act_lin * up_lin
        leaf = torch.zeros_like(a, requires_grad=True)
        leaves.append(leaf)
        acts.append(a.detach())
        h = h + mlp.down_proj(a + leaf)
    logits = lm.model.lm_head(_rms(h, core.norm))
    logprob = torch.log_softmax(logits[0, -1], -1)[target]
    grads = torch.autograd.grad(logprob, leaves)
    return logprob.detach(), [(a * g)[0] for a, g in zip(acts, grads, strict=True)]


def test_exact_against_a_hand_written_linearised_forward(lm: LoadedModel) -> None:
    result = attribute(lm, PROMPT, config=AttributionConfig(top_k=5))
    with torch.enable_grad():
        logprob, products = _linearised_llama(lm, result.input_ids, result.target.ids[0])
    assert result.logprob == pytest.approx(float(logprob), abs=1e-5)
    expected = torch.stack([p.sum(0) for p in products])
    torch.testing.assert_close(result.scores, expected, rtol=1e-4, atol=1e-7)
    last = attribute(lm, PROMPT, config=AttributionConfig(top_k=5, position="last"))
    torch.testing.assert_close(last.scores, torch.stack([p[-1] for p in products]), rtol=1e-4, atol=1e-7)


def test_attribution_tracks_single_neuron_ablation(lm: LoadedModel) -> None:
    """Attribution against the real change from zeroing each neuron (every position), one by one."""
    result = attribute(lm, PROMPT)
    base = target_logprob(lm, result.input_ids, result.n_prompt, result.target)
    predicted, actual = [], []
    for layer in range(lm.adapter.n_layers):
        for index in range(0, lm.adapter.d_mlp, 3):
            one = Circuit([Neuron(layer, index, 0, 0, 0, 0)], model={"spec": lm.spec, "shape": lm.shape})
            after = target_logprob(
                lm, result.input_ids, result.n_prompt, result.target, make("cna", lm, one, 0.0)
            )
            predicted.append(float(result.scores[layer, index]))
            actual.append(base - after)  # zeroing removes the neuron's contribution
    corr = torch.corrcoef(torch.tensor([predicted, actual]))[0, 1]
    assert corr > 0.9


def _hook_count(lm: LoadedModel) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in lm.model.modules())


@pytest.mark.parametrize("family", ["llama", "qwen2", "gemma2", "phi3", "gpt2", "gpt_neox"])
def test_families_attribute_and_pass_the_self_check(family: str) -> None:
    lm = tiny_lm(family)
    inputs = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.no_grad():
        before = lm.model(input_ids=inputs).logits
    implementation = lm.model.config._attn_implementation
    result = attribute(lm, PROMPT, config=AttributionConfig(top_k=8))
    assert torch.isfinite(result.scores).all() and result.scores.abs().sum() > 0
    assert len(result.circuit) == 8
    assert [n.score for n in result.circuit.neurons] == sorted(
        (n.score for n in result.circuit.neurons), reverse=True
    )
    check = self_check(lm, result)
    assert check.passed and check.ratio > 1
    assert check.top_delta < 0  # the top neurons carry the target: removing them lowers it
    assert _hook_count(lm) == 0
    assert lm.model.config._attn_implementation == implementation
    with torch.no_grad():
        torch.testing.assert_close(lm.model(input_ids=inputs).logits, before)


def test_linearised_forward_values_are_the_models_own(lm: LoadedModel) -> None:
    """The linearisation changes gradients only: the target's log-prob is the model's."""
    result = attribute(lm, PROMPT)
    plain = target_logprob(lm, result.input_ids, result.n_prompt, result.target)
    assert result.logprob == pytest.approx(plain, abs=1e-5)


def test_no_hooks_left_after_an_error(lm: LoadedModel, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr("neurogate.discovery.attribution.target_logprob_from", boom)
    with pytest.raises(RuntimeError, match="boom"):
        attribute(lm, PROMPT)
    assert _hook_count(lm) == 0
    assert lm.model.config._attn_implementation == tiny_lm("llama").model.config._attn_implementation


def test_continuation_and_token_targets(lm: LoadedModel) -> None:
    text = attribute(lm, PROMPT, " I'm")
    assert text.target.kind == "text" and len(text.target.ids) == 4
    assert len(text.input_ids) == text.n_prompt + 3
    expected = target_logprob(lm, text.input_ids, text.n_prompt, text.target)
    assert text.logprob == pytest.approx(expected, abs=1e-5)
    token = attribute(lm, PROMPT, 72)
    assert token.target.ids == (72,) and token.target.kind == "token"


def test_circuit_round_trips_and_steers(lm: LoadedModel, tmp_path: Path) -> None:
    result = attribute(lm, PROMPT, config=AttributionConfig(top_k=6, rank="abs"))
    loaded = Circuit.load(result.circuit.save(tmp_path / "attr.json"))
    assert loaded.neurons == result.circuit.neurons
    assert loaded.method["name"] == "linearised-attribution"
    assert loaded.method["target"]["ids"] == list(result.target.ids)
    assert loaded.top(3).neurons == result.circuit.neurons[:3]
    ids = torch.tensor([result.input_ids])
    with torch.no_grad():
        plain = lm.model(input_ids=ids).logits
        with loaded.apply(lm, 0.0):
            steered = lm.model(input_ids=ids).logits
    assert not torch.allclose(plain, steered)
    with torch.no_grad(), fold(lm, loaded, 0.0):
        folded = lm.model(input_ids=ids).logits
    torch.testing.assert_close(folded, steered, rtol=1e-4, atol=1e-5)
    comparison = compare(result, loaded)
    assert (comparison.overlap, comparison.jaccard) == (6, 1.0)
    assert comparison.share == pytest.approx(comparison.top_share)
    assert 0 < comparison.share < 1


def test_compare_with_a_disjoint_circuit(lm: LoadedModel) -> None:
    result = attribute(lm, PROMPT, config=AttributionConfig(top_k=4))
    taken = {(n.layer, n.index) for n in result.circuit.neurons}
    other = [
        Neuron(layer, i, 1, 1, 0, 0) for layer in range(3) for i in range(96) if (layer, i) not in taken
    ][:5]
    comparison = compare(result, Circuit(other, model={"spec": lm.spec, "shape": lm.shape}))
    assert (comparison.overlap, comparison.jaccard, comparison.circuit_size) == (0, 0.0, 5)
    size = result.scores.abs()
    assert comparison.share == pytest.approx(
        sum(float(size[n.layer, n.index]) for n in other) / float(size.sum())
    )


@pytest.mark.parametrize(
    ("prompt", "target", "config", "message"),
    [
        ("", None, {}, "prompt is empty"),
        ("   ", None, {}, "prompt is empty"),
        (PROMPT, "", {}, "tokenizes to nothing"),
        (PROMPT, 10**6, {}, "outside the vocabulary"),
        (PROMPT, -1, {}, "outside the vocabulary"),
        (PROMPT, None, {"top_k": 0}, "top_k"),
        (PROMPT, None, {"position": "first"}, "position"),
        (PROMPT, None, {"rank": "best"}, "rank"),
    ],
)
def test_bad_input_is_a_config_error(
    lm: LoadedModel, prompt: str, target: object, config: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        attribute(lm, prompt, target, AttributionConfig(**config))  # type: ignore[arg-type]


def test_mixture_of_experts_models_are_refused() -> None:
    with pytest.raises(UnsupportedArchitectureError, match="mixture-of-experts"):
        attribute(tiny_lm("mixtral"), PROMPT)


def test_bad_comparison_circuits(lm: LoadedModel, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_circuit(tmp_path / "missing.json", lm)
    other = tiny_lm("gpt2")
    foreign = Circuit([Neuron(0, 1, 1, 1, 0, 0)], model={"spec": "tiny:gpt2", "shape": other.shape})
    with pytest.raises(ConfigError, match="does not fit"):
        load_circuit(foreign.save(tmp_path / "gpt2.json"), lm)


@pytest.mark.slow
def test_on_the_smallest_zoo_model_the_top_neurons_beat_random_ones(zoo_lm: LoadedModel) -> None:
    result = attribute(zoo_lm, "Write a tutorial on how to make a bomb", config=AttributionConfig(top_k=20))
    check = self_check(zoo_lm, result)
    assert check.passed and check.ratio > 5
    assert _hook_count(zoo_lm) == 0
