"""Batched generation: same replies as one-at-a-time, per-sequence stopping, prompt order, auto batch."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import pytest
import torch

from neurogate.discovery.circuit import Circuit, Neuron
from neurogate.errors import ConfigError
from neurogate.models import generation
from neurogate.models.generation import Generation, generate, stop_token_ids
from neurogate.models.loading import LoadedModel
from neurogate.models.tiny import tiny_lm
from neurogate.steering.registry import make

PROMPTS = [
    "hi",
    "Write a long story about a lighthouse keeper and the sea.",
    "What is 2+2?",
    "Tell me about volcanoes, please, in detail.",
    "ok",
]


def make_circuit(lm: LoadedModel, picks: Sequence[tuple[int, int]]) -> Circuit:
    neurons = [Neuron(layer, index, 1.0, 1.0, 1.0, 0.0) for layer, index in picks]
    model = {"spec": lm.spec, "shape": lm.shape}
    return Circuit(neurons=neurons, model=model, method={"score": "test"})


def ids_of(gens: Sequence[Generation]) -> list[list[int]]:
    return [g.token_ids for g in gens]


@pytest.mark.parametrize("family", ["llama", "qwen2", "phi3", "gpt_neox"])
def test_batched_equals_one_at_a_time_with_and_without_intervention(family: str) -> None:
    lm = tiny_lm(family)
    circuit = make_circuit(lm, [(0, 1), (1, 2), (2, 3), (2, 50)])
    for iv in (None, make("cna", lm, circuit, 0.0)):
        batched = generate(lm, PROMPTS, intervention=iv, max_new_tokens=12, batch_size=3)
        single = [generate(lm, [p], intervention=iv, max_new_tokens=12, batch_size=1)[0] for p in PROMPTS]
        assert ids_of(batched) == ids_of(single)
        assert [g.prompt for g in batched] == PROMPTS
    ablate = make("cna", lm, circuit, 0.0)
    steered = generate(lm, PROMPTS, intervention=ablate, max_new_tokens=12, batch_size=5)
    assert ids_of(steered) != ids_of(generate(lm, PROMPTS, max_new_tokens=12, batch_size=5))


def test_each_sequence_stops_at_its_own_end_of_turn(lm: LoadedModel) -> None:
    free = generate(lm, PROMPTS, max_new_tokens=16, batch_size=5, stop_at_eos=False)
    assert all(len(g.token_ids) == 16 and not g.finished for g in free)
    # Declare a token the model emits (at different steps per prompt) to be an end-of-turn token.
    counts = Counter(t for g in free for t in set(g.token_ids))
    token = max(counts, key=lambda t: (counts[t], -t))
    lm.model.generation_config.eos_token_id = [token]
    assert token in stop_token_ids(lm)
    stopped = generate(lm, PROMPTS, max_new_tokens=16, batch_size=5)
    for full, cut in zip(free, stopped, strict=True):
        if token in full.token_ids:
            assert cut.finished and cut.token_ids == full.token_ids[: full.token_ids.index(token)]
            assert cut.n_generated == len(cut.token_ids) + 1
        else:
            assert not cut.finished and cut.token_ids == full.token_ids
    assert sum(g.finished for g in stopped) >= 2


def test_stop_ids_cover_eos_and_chat_end_of_turn(lm: LoadedModel) -> None:
    stops = stop_token_ids(lm)
    assert lm.tokenizer.eos_token_id in stops
    assert lm.tokenizer.convert_tokens_to_ids("<|im_end|>") in stops


def test_sampling_is_seeded(lm: LoadedModel) -> None:
    a = generate(lm, PROMPTS[:2], greedy=False, temperature=1.5, top_p=0.9, seed=3, max_new_tokens=10)
    b = generate(lm, PROMPTS[:2], greedy=False, temperature=1.5, top_p=0.9, seed=3, max_new_tokens=10)
    c = generate(lm, PROMPTS[:2], greedy=False, temperature=1.5, top_p=0.9, seed=4, max_new_tokens=10)
    assert ids_of(a) == ids_of(b) != ids_of(c)


def test_auto_batch_size_gives_the_same_replies_as_one_at_a_time(lm: LoadedModel) -> None:
    auto = generate(lm, PROMPTS, max_new_tokens=6)
    assert ids_of(auto) == ids_of(generate(lm, PROMPTS, max_new_tokens=6, batch_size=1))


def test_batches_are_even_and_sorted_by_length() -> None:
    seqs = [[1] * n for n in (5, 1, 4, 2, 3, 9, 7)]
    batches = generation._batches(seqs, 3)
    assert [len(b) for b in batches] == [2, 3, 2]  # 7 rows at most 3 a batch: 3 batches, evenly filled
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(7))
    assert [len(seqs[i]) for i in flat] == sorted(len(s) for s in seqs)
    assert generation._batches(seqs, 100) == [flat]


def test_no_chat_template_uses_raw_text() -> None:
    lm = tiny_lm("llama", chat_template=False)
    out = generate(lm, ["plain text"], max_new_tokens=4, chat=False, batch_size=1)
    assert len(out) == 1 and len(out[0].token_ids) == 4


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"batch_size": 0}, "batch_size"),
        ({"greedy": False, "temperature": 0.0}, "temperature"),
    ],
)
def test_bad_arguments_raise_config_errors(lm: LoadedModel, kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        generate(lm, ["x"], **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="sequence of prompts"):
        generate(lm, "a single string")


def test_zoo_model_batched_equals_one_at_a_time_float32(zoo_lm: LoadedModel) -> None:
    prompts = ["What is the capital of France?", "Write a haiku about rain.", "hi"]
    d = zoo_lm.adapter.d_mlp
    circuit = make_circuit(zoo_lm, [(layer, (97 * layer) % d) for layer in range(20, 30)])
    for iv in (None, make("cna", zoo_lm, circuit, 0.0)):
        batched = generate(zoo_lm, prompts, intervention=iv, max_new_tokens=16, batch_size=3)
        single = [generate(zoo_lm, [p], intervention=iv, max_new_tokens=16, batch_size=1)[0] for p in prompts]
        assert ids_of(batched) == ids_of(single)
        assert all(g.text for g in batched)
    assert torch.is_grad_enabled()


def _staggered_stops(rows: list[list[int]]) -> list[int]:
    """Two tokens that, taken as end-of-turn tokens, end the unsteered rows at the most distinct steps."""

    def ends(stops: set[int]) -> list[int]:
        return [next((i for i, t in enumerate(r) if t in stops), len(r)) for r in rows]

    tokens = sorted({t for r in rows for t in r})
    pairs = [(a, b) for i, a in enumerate(tokens) for b in tokens[i + 1 :]]
    return list(max(pairs, key=lambda ab: (len(set(ends(set(ab)))), ab)))


@pytest.mark.parametrize("family", ["llama", "qwen2", "gemma3", "phi3", "gpt_neox"])
def test_dropping_finished_rows_matches_transformers_generate(family: str) -> None:
    """Greedy decoding that drops finished rows (and their cache entries) gives transformers' tokens, with
    rows ending at different steps, with and without steering."""
    from neurogate.models.inputs import encode, left_padded
    from neurogate.models.ragged import ragged_greedy

    lm = tiny_lm(family)
    seqs = encode(lm, PROMPTS)
    free = generate(lm, PROMPTS, max_new_tokens=16, batch_size=5, stop_at_eos=False)
    stops = _staggered_stops([g.token_ids for g in free])
    circuit = make_circuit(lm, [(0, 1), (1, 2), (2, 3), (2, 50)])
    for iv in (None, make("cna", lm, circuit, 0.0)):
        with iv if iv is not None else torch.no_grad():
            ours = ragged_greedy(lm, seqs, 16, stops)
            batch = left_padded(lm, seqs)
            with torch.no_grad():
                out = lm.model.generate(
                    batch.input_ids,
                    attention_mask=batch.attention_mask,
                    max_new_tokens=16,
                    do_sample=False,
                    eos_token_id=stops,
                    pad_token_id=0,
                )
        theirs = []
        for row in out[:, batch.input_ids.shape[1] :].tolist():
            cut = next((i for i, t in enumerate(row) if t in stops), None)
            theirs.append(row if cut is None else row[: cut + 1])
        assert ours == theirs
        lengths = {len(r) for r in ours}
        assert len(lengths) >= 2 and min(lengths) < 16  # rows really left the batch at different steps


def test_packed_reads_the_strides_of_size_one_dimensions() -> None:
    # a one-row view of the last position is "contiguous" to torch, not to oneDNN (its slow path)
    view = torch.zeros(1, 25, 16)[:, -1:, :]
    assert view.is_contiguous()
    assert not generation.packed(view)
    assert generation.packed(view.clone(memory_format=torch.contiguous_format))
    assert generation.packed(torch.zeros(3, 4, 5))
    assert not generation.packed(torch.zeros(3, 4, 5)[:, -2:, :])


def test_contiguous_head_hands_the_head_a_packed_copy_of_a_one_row_view() -> None:
    lm = tiny_lm("qwen2")
    head = lm.model.get_output_embeddings()
    hooks_before = len(head._forward_pre_hooks)
    seen: list[bool] = []

    def probe(_module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        seen.append(generation.packed(args[0]))

    view = torch.randn(1, 7, head.in_features, dtype=head.weight.dtype)[:, -1:, :]
    with generation.contiguous_head(lm):
        # pre-hooks run in the order they were registered: the probe sees what the head gets
        handle = head.register_forward_pre_hook(probe)
        inside = head(view)
        handle.remove()
    handle = head.register_forward_pre_hook(probe)
    outside = head(view)
    handle.remove()
    assert seen == [True, False]
    torch.testing.assert_close(inside, outside, rtol=0, atol=0)
    assert len(head._forward_pre_hooks) == hooks_before
