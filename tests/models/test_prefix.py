"""The shared-prefix prefill equals a plain left-padded pass, on every tiny family, and the passes that
use it (generation, teacher forcing) give the same results with it as without."""

from __future__ import annotations

import pytest
import torch

from neurogate.discovery.circuit import Circuit, Neuron
from neurogate.evaluation.metrics import kl_divergence, next_token_logprobs, reply_nll
from neurogate.models import prefix as prefix_mod
from neurogate.models.generation import generate
from neurogate.models.inputs import encode, shared_prefix, template_prefix
from neurogate.models.loading import LoadedModel
from neurogate.models.prefix import MIN_PREFIX, build_prefix, forward, prefill, reusable, rows_on
from neurogate.models.tiny import TINY_FAMILIES, tiny_lm
from neurogate.steering.registry import make

SYSTEM = "You are a careful assistant who answers briefly."
PROMPTS = ["Say hi.", "Describe a cloud in a few words please.", "Why?", "List three colours of paint."]


def _forward_calls(lm: LoadedModel) -> list[int]:
    calls: list[int] = []
    lm.model.register_forward_pre_hook(lambda module, args, kwargs: calls.append(1), with_kwargs=True)
    return calls


def test_shared_prefix_counts_common_tokens_and_leaves_one() -> None:
    assert shared_prefix([[1, 2, 3, 4], [1, 2, 5]], limit=10) == 2
    assert shared_prefix([[1, 2, 3], [1, 2, 3]], limit=10) == 2  # each row keeps one token of its own
    assert shared_prefix([[1, 2, 3, 4], [1, 2, 3, 4]], limit=1) == 1
    assert shared_prefix([[7, 2], [1, 2]], limit=10) == 0
    assert shared_prefix([], limit=10) == 0


def test_template_prefix_is_the_part_before_the_message() -> None:
    lm = tiny_lm("llama")
    n = template_prefix(lm, system_prompt=SYSTEM)
    seqs = encode(lm, PROMPTS, system_prompt=SYSTEM)
    assert n >= MIN_PREFIX and shared_prefix(seqs, limit=10_000) == n
    assert template_prefix(lm, system_prompt=SYSTEM, chat=False) == 0  # raw prompts: no template


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_prefill_equals_a_plain_pass(family: str) -> None:
    lm = tiny_lm(family)
    seqs = encode(lm, PROMPTS, system_prompt=SYSTEM)
    n = template_prefix(lm, system_prompt=SYSTEM)
    calls = _forward_calls(lm)
    with torch.no_grad():
        plain = prefill(lm, seqs, logits_to_keep=3).output.logits
        assert len(calls) == 1
        shared = prefill(lm, seqs, prefix=n, logits_to_keep=3).output.logits
    assert len(calls) == 3  # the prefix once, then the rows' own tokens
    torch.testing.assert_close(shared, plain, rtol=1e-4, atol=1e-4)


def test_prefill_takes_the_plain_path_under_a_short_sliding_window(monkeypatch: pytest.MonkeyPatch) -> None:
    lm = tiny_lm("mistral")
    monkeypatch.setattr(lm.model.config, "sliding_window", 8, raising=False)
    monkeypatch.setattr(lm.model.config, "use_sliding_window", True, raising=False)
    seqs = encode(lm, PROMPTS, system_prompt=SYSTEM)
    calls = _forward_calls(lm)
    with torch.no_grad():
        prefill(lm, seqs, prefix=template_prefix(lm, system_prompt=SYSTEM))
    assert len(calls) == 1


def test_a_kept_prefix_cache_serves_many_batches_like_a_fresh_one() -> None:
    lm = tiny_lm("llama")
    seqs = encode(lm, PROMPTS, system_prompt=SYSTEM)
    n = shared_prefix(seqs)
    head = build_prefix(lm, seqs[0][:n])
    assert head is not None and len(head) == n

    def last(rows_seqs: list[list[int]], prefix: object) -> torch.Tensor:
        return forward(lm, rows_on(lm, rows_seqs, prefix)).output.logits[:, -1]  # type: ignore[arg-type]

    first, second = last(seqs[:2], head), last(seqs[2:], head)
    assert head.cache.get_seq_length() == n and head.cache.layers[0].keys.shape[0] == 1  # batches use copies
    torch.testing.assert_close(last(seqs[:2], head), first, rtol=0, atol=0)
    torch.testing.assert_close(last(seqs[2:], build_prefix(lm, seqs[0][:n])), second, rtol=0, atol=0)
    torch.testing.assert_close(torch.cat([first, second]), last(seqs, None), rtol=1e-4, atol=1e-4)
    # the decoder's last hidden state (the local judge's probe readout) agrees with the plain pass too
    decoder = lm.model.base_model
    hidden = forward(lm, rows_on(lm, seqs, head), module=decoder).output.last_hidden_state[:, -1]
    plain = forward(lm, rows_on(lm, seqs), module=decoder).output.last_hidden_state[:, -1]
    torch.testing.assert_close(hidden, plain, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="start with the prefix"):
        rows_on(lm, [[*seqs[0][: n - 1], -1, *seqs[0][n:]]], head)


def test_reusable_needs_a_long_enough_prefix_inside_the_window(monkeypatch: pytest.MonkeyPatch) -> None:
    lm = tiny_lm("mistral")
    assert reusable(lm, MIN_PREFIX, 10) and not reusable(lm, MIN_PREFIX - 1, 10)
    # a cache built for one batch pays for its pass alone, so it needs twice the length
    assert not reusable(lm, MIN_PREFIX, 10, per_call=True) and reusable(lm, 2 * MIN_PREFIX, 10, per_call=True)
    monkeypatch.setattr(lm.model.config, "sliding_window", MIN_PREFIX + 4, raising=False)
    assert reusable(lm, MIN_PREFIX, 4) and not reusable(lm, MIN_PREFIX, 5)
    monkeypatch.setattr(lm.model.config, "use_sliding_window", False, raising=False)
    assert reusable(lm, MIN_PREFIX, 5)  # a window the model does not use does not count


def _no_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prefix_mod, "MIN_PREFIX", 10**9)


@pytest.mark.parametrize("family", ["llama", "gpt2", "gemma3"])
def test_generation_and_metrics_match_with_and_without_the_prefix(
    family: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    lm = tiny_lm(family)
    layer_neurons = [Neuron(layer, i, 1.0, 1.0, 1.0, 0.0) for layer in range(3) for i in range(20)]
    circuit = Circuit(neurons=layer_neurons, model={"spec": lm.spec, "shape": lm.shape})
    steer = make("cna", lm, circuit, 0.0)
    fmt = {"system_prompt": SYSTEM}

    def run() -> tuple[list[list[int]], torch.Tensor, list[tuple[float, int]], list[float]]:
        gens = generate(lm, PROMPTS, max_new_tokens=6, batch_size=3, intervention=steer, **fmt)
        ids = [g.token_ids or [5] for g in gens]
        lp = next_token_logprobs(lm, PROMPTS, steer, batch_size=3, **fmt)
        nll = reply_nll(lm, PROMPTS, ids, batch_size=3, **fmt)
        kl = kl_divergence(lm, PROMPTS, ids, steer, n_tokens=3, batch_size=3, **fmt)
        return [g.token_ids for g in gens], lp, nll, kl.mean

    with_prefix = run()
    _no_prefix(monkeypatch)
    without = run()
    assert with_prefix[0] == without[0]
    torch.testing.assert_close(with_prefix[1], without[1], rtol=1e-4, atol=1e-4)
    for (a, n_a), (b, n_b) in zip(with_prefix[2], without[2], strict=True):
        assert n_a == n_b and a == pytest.approx(b, rel=1e-4, abs=1e-4)
    assert with_prefix[3] == pytest.approx(without[3], rel=1e-3, abs=1e-6)
