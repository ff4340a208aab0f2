"""The compiled decoding engine and the neuron gains that keep steering inside a compiled graph.

These run ``torch.compile`` on CPU with the ``eager`` backend: it traces with Dynamo exactly as on CUDA
(same guards, same baked-in hooks) without generating kernels, so a tiny model compiles in seconds.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest
import torch
from torch._dynamo.utils import counters

from neurogate.discovery.circuit import Circuit, Neuron
from neurogate.errors import ConfigError
from neurogate.models import decoding
from neurogate.models.batching import round_up
from neurogate.models.gains import gains_of, install_gains
from neurogate.models.generation import Generation, generate
from neurogate.models.hooks import scale_neurons
from neurogate.models.inputs import encode
from neurogate.models.loading import LoadedModel
from neurogate.models.tiny import tiny_lm
from neurogate.steering.registry import make

PROMPTS = ["hi", "Write a long story about a lighthouse keeper and the sea.", "What is 2+2?", "ok"]


def circuit_of(lm: LoadedModel) -> Circuit:
    """Half of every layer's neurons: strong enough that steering them changes greedy replies."""
    neurons = [Neuron(layer, i, 1.0, 1.0, 1.0, 2.0) for layer in range(3) for i in range(0, 96, 2)]
    return Circuit(neurons=neurons, model={"spec": lm.spec, "shape": lm.shape}, method={"score": "test"})


def ids(gens: Sequence[Generation]) -> list[list[int]]:
    return [g.token_ids for g in gens]


def graphs() -> int:
    return int(counters["stats"]["unique_graphs"])


@pytest.fixture
def compiled(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Compile on CPU (Dynamo tracing, eager backend) and forget the graphs afterwards."""
    monkeypatch.setenv(decoding.COMPILE_ENV, "on")
    monkeypatch.setattr(decoding, "COMPILE_BACKEND", "eager")
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def run(lm: LoadedModel, iv: object = None) -> list[list[int]]:
    return ids(generate(lm, PROMPTS, intervention=iv, max_new_tokens=8, batch_size=3))  # type: ignore[arg-type]


def test_compiled_decoding_follows_neuron_steering_without_retracing(
    compiled: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    lm = tiny_lm("qwen2")
    monkeypatch.setenv(decoding.COMPILE_ENV, "off")
    plain, steered = run(lm), run(lm, make("cna", lm, circuit_of(lm), 30.0))
    to_mean = run(lm, make("mean", lm, circuit_of(lm), -4.0))  # factor and offset per neuron
    assert plain != steered and plain != to_mean and gains_of(lm) is None  # eager, ordinary hooks
    monkeypatch.setenv(decoding.COMPILE_ENV, "on")
    assert decoding.choose_engine(lm, 10).compiled
    assert run(lm) == plain
    traced = graphs()
    assert traced >= 1 and gains_of(lm) is not None
    iv = make("cna", lm, circuit_of(lm), 30.0)
    assert run(lm, iv) == steered
    assert run(lm) == plain and run(lm, iv) == steered
    assert run(lm, make("mean", lm, circuit_of(lm), -4.0)) == to_mean
    assert graphs() == traced  # switching the steering on and off changed values, not the graph
    assert all(bool((g == 1).all()) for g in gains_of(lm).gains)  # type: ignore[union-attr]


def test_other_hooks_decode_eagerly(compiled: None, monkeypatch: pytest.MonkeyPatch) -> None:
    lm = tiny_lm("llama")
    vector = torch.randn(lm.adapter.d_model) * 5
    monkeypatch.setenv(decoding.COMPILE_ENV, "off")
    with torch.no_grad():
        reference = run(lm, _AddAt(lm, vector))
    monkeypatch.setenv(decoding.COMPILE_ENV, "on")
    plain = run(lm)  # compiles, installs the gains
    assert decoding.foreign_hooks(lm) == []
    assert run(lm, _AddAt(lm, vector)) == reference != plain
    with _AddAt(lm, vector).attach():
        assert decoding.foreign_hooks(lm) == ["model.layers.1"]
        assert not decoding.settle(lm, decoding.Engine(True, "test")).compiled


class _AddAt:
    """A residual-stream hook (what CAA attaches): something the compiled graph would not see."""

    def __init__(self, lm: LoadedModel, vector: torch.Tensor) -> None:
        self.lm, self.vector = lm, vector

    def attach(self):  # type: ignore[no-untyped-def]
        from neurogate.steering.residual import add_vector

        return add_vector(self.lm, 1, self.vector)


@pytest.mark.slow
def test_graphs_compiled_before_the_gains_are_dropped(
    compiled: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    lm = tiny_lm("qwen2")
    monkeypatch.setenv(decoding.COMPILE_ENV, "off")
    steered = run(lm, make("cna", lm, circuit_of(lm), 30.0))
    longest = max(len(s) for s in encode(lm, PROMPTS))
    options = decoding.Engine(True, "test").options(lm.device, round_up(longest, decoding.CACHE_STEP) + 8)
    batch = lm.tokenizer(["hello there"] * 16, return_tensors="pt")
    with torch.no_grad():  # a user's own compiled generation, traced without hooks, of the shapes run() uses
        lm.model.generate(**batch, max_new_tokens=4, **options)
    assert getattr(lm.model, "_compiled_call", None) is not None
    monkeypatch.setenv(decoding.COMPILE_ENV, "on")
    assert run(lm, make("cna", lm, circuit_of(lm), 30.0)) == steered


def test_compiled_batches_are_padded_to_fixed_shapes(compiled: None) -> None:
    engine = decoding.Engine(True, "test")
    assert [engine.batch_rows(n) for n in (1, 16, 17, 100)] == [16, 16, 32, 112]
    assert decoding.Engine(False, "test").batch_rows(17) == 17
    assert engine.options(torch.device("cpu"), 96)["max_cache_len"] == 96
    assert decoding.Engine(False, "test").options(torch.device("cpu"), 96) == {}


def test_gains_compose_like_hooks_and_undo_in_any_order() -> None:
    hooked, gained = tiny_lm("llama"), tiny_lm("llama")
    table = install_gains(gained)
    batch = hooked.tokenizer(["The quick brown fox"], return_tensors="pt")
    a = {
        0: (torch.tensor([1, 5]), torch.tensor([2.0, 0.0]), None),
        2: (torch.tensor([7, 8]), torch.tensor([-1.5, 0.5]), torch.tensor([0.25, -3.0])),
    }
    b = {0: (torch.tensor([1]), torch.tensor([3.0]), torch.tensor([1.0]))}
    with torch.no_grad():
        logits = {}
        for name, lm in (("hooked", hooked), ("gained", gained)):
            with scale_neurons(lm, a, "a"):
                logits[name] = lm.model(**batch).logits
        assert torch.equal(logits["hooked"], logits["gained"])  # factor * a + offset, as the hook does it
        first, second = scale_neurons(gained, a, "a"), scale_neurons(gained, b, "b")
        assert table.gains[0][1].item() == 6.0 and table.biases[0][1].item() == 1.0  # 3 * (2a) + 1
        assert table.gains[0][5].item() == 0.0 and table.biases[2][8].item() == -3.0
        first.remove()  # out of order: b stays
        assert table.gains[0][1].item() == 3.0 and table.gains[2][7].item() == 1.0
        assert table.biases[2][8].item() == 0.0
        second.remove()
        assert not table.active
        assert all(bool((g == 1).all()) for g in table.gains) and all(
            bool((b == 0).all()) for b in table.biases
        )
        assert torch.equal(gained.model(**batch).logits, hooked.model(**batch).logits)


def test_engine_choice_and_setting(monkeypatch: pytest.MonkeyPatch, lm: LoadedModel) -> None:
    monkeypatch.setenv(decoding.COMPILE_ENV, "auto")
    assert not decoding.choose_engine(lm, 10**6).compiled  # CPU: eager unless asked
    monkeypatch.setenv(decoding.COMPILE_ENV, "off")
    assert not decoding.choose_engine(lm, 10**6).compiled
    monkeypatch.setenv(decoding.COMPILE_ENV, "maybe")
    with pytest.raises(ConfigError, match="NEUROGATE_COMPILE"):
        generate(lm, ["x"], max_new_tokens=2)


@pytest.mark.slow
def test_inductor_compiled_steering_matches_eager(monkeypatch: pytest.MonkeyPatch) -> None:
    """The real compiler (inductor kernels on CPU): steered and plain replies equal the eager ones."""
    lm = tiny_lm("qwen2")
    monkeypatch.setenv(decoding.COMPILE_ENV, "off")
    plain, steered = run(lm), run(lm, make("cna", lm, circuit_of(lm), 30.0))
    monkeypatch.setenv(decoding.COMPILE_ENV, "on")
    torch._dynamo.reset()
    try:
        assert run(lm) == plain
        assert run(lm, make("cna", lm, circuit_of(lm), 30.0)) == steered
        assert run(lm) == plain
    finally:
        torch._dynamo.reset()
