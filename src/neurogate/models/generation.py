"""Batched generation with left padding, per-sequence stopping at end of turn, and an optional intervention.

Prompts are sorted by token length and cut into even batches (so little padding is wasted; the size comes
from memory arithmetic, :mod:`neurogate.models.batching`), generated with the model's KV cache by the
engine :mod:`neurogate.models.decoding` picks (compiled with a static cache on CUDA, eager elsewhere), and
returned in the original order. Under greedy decoding a prompt's reply does not depend on the batch it
lands in (position ids follow the attention mask).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Literal

import torch

from neurogate.errors import ConfigError
from neurogate.models.batching import auto_batch_size, round_up
from neurogate.models.decoding import CACHE_STEP, Engine, choose_engine, prepare, settle
from neurogate.models.hooks import Attachable
from neurogate.models.inputs import check_batch_size, encode, left_padded, pad_id, template_prefix
from neurogate.models.loading import LoadedModel
from neurogate.models.ragged import ragged_greedy
from neurogate.models.row_gains import RowGains, RowMaps
from neurogate.progress import progress_bar
from neurogate.threads import REFRESH_SECONDS
from neurogate.threads import refresh as refresh_threads

logger = logging.getLogger(__name__)

END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "<|endoftext|>", "<|eot|>")


@dataclass
class Generation:
    """One prompt's reply. ``token_ids`` are the generated ids without the end-of-turn token;
    ``finished`` says whether the model ended its turn (else it ran out of ``max_new_tokens``)."""

    prompt: str
    text: str
    token_ids: list[int]
    finished: bool

    @property
    def n_generated(self) -> int:
        """Tokens the model produced, the end-of-turn token included."""
        return len(self.token_ids) + int(self.finished)


def stop_token_ids(lm: LoadedModel) -> list[int]:
    """Ids that end a reply: the generation config's and tokenizer's eos, and known end-of-turn tokens."""
    ids: list[int] = []
    eos = getattr(lm.model.generation_config, "eos_token_id", None)
    ids += eos if isinstance(eos, list) else [eos] if isinstance(eos, int) else []
    if lm.tokenizer.eos_token_id is not None:
        ids.append(int(lm.tokenizer.eos_token_id))
    vocab = lm.tokenizer.get_vocab()
    ids += [vocab[tok] for tok in END_OF_TURN_TOKENS if tok in vocab]
    return sorted(set(ids))


def packed(x: torch.Tensor) -> bool:
    """Whether ``x`` has the row-major strides of its shape in every dimension, size-1 ones included
    (``is_contiguous`` ignores those; oneDNN does not)."""
    expected, step = [], 1
    for size in reversed(x.shape):
        expected.append(step)
        step *= size
    return tuple(reversed(expected)) == tuple(x.stride())


@contextmanager
def contiguous_head(lm: LoadedModel) -> Iterator[None]:
    """Make the output head's input contiguous while inside the block.

    transformers feeds the head ``hidden[:, -k:, :]`` (``logits_to_keep``), a strided view. On CPU in
    bf16, oneDNN's matmul then fails on that view and torch switches *every later bf16 matmul of the
    process* to a fallback about 7x slower (measured: a [64, 1536] x [1536, 8960] linear went from 5 ms to
    39 ms). A contiguous copy of the few kept rows avoids both costs. A one-row batch's view counts as
    contiguous to torch (a size-1 dimension's stride is never used) and still takes the slow path (1.4 s
    against 25 ms for a 151936-token head on 2 cores), so the check reads the strides (:func:`packed`).
    """
    head = lm.model.get_output_embeddings()
    if not isinstance(head, torch.nn.Module):
        yield
        return

    def hook(module: torch.nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        if args and isinstance(args[0], torch.Tensor) and not packed(args[0]):
            return (args[0].clone(memory_format=torch.contiguous_format), *args[1:])
        return None

    handle = head.register_forward_pre_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def generate(
    lm: LoadedModel,
    prompts: Sequence[str],
    *,
    intervention: Attachable | None = None,
    max_new_tokens: int = 128,
    batch_size: int | Literal["auto"] = "auto",
    greedy: bool = True,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int = 0,
    system_prompt: str | None = None,
    chat: bool = True,
    progress: bool = False,
    stop_at_eos: bool = True,
    preformatted: bool = False,
    row_steering: Sequence[RowMaps] | None = None,
) -> list[Generation]:
    """Generate a reply to each prompt, in prompt order, optionally under ``intervention``.

    ``greedy=False`` samples with ``temperature`` and ``top_p`` (seeded with ``seed``). ``stop_at_eos=False``
    suppresses end-of-turn tokens so every reply runs to ``max_new_tokens`` (for timing).
    ``preformatted=True``: the prompts are already model-ready text (e.g. a multi-turn conversation run
    through the chat template); they are tokenized as they are.
    ``row_steering``: one neuron steering per prompt (:mod:`neurogate.models.row_gains`; ``None`` entries
    are unsteered), applied after ``intervention``; each prompt keeps its own through sorting,
    sub-batches and dropped rows, and the shared template prefix runs once per distinct steering of a
    batch.
    """
    if isinstance(prompts, str):
        raise ConfigError("generate takes a sequence of prompts; wrap a single prompt in a list")
    _options(lm, max_new_tokens, greedy, temperature, top_p, stop_at_eos)  # bad settings fail first
    check_batch_size(batch_size)
    prompts = list(prompts)
    if row_steering is not None and len(row_steering) != len(prompts):
        raise ConfigError(f"row_steering has {len(row_steering)} entries for {len(prompts)} prompts")
    if not prompts:
        return []
    seqs = encode(lm, prompts, system_prompt=system_prompt, chat=chat, preformatted=preformatted)
    prefix = 0 if preformatted else template_prefix(lm, system_prompt=system_prompt, chat=chat)
    return generate_tokens(
        lm,
        prompts,
        seqs,
        prefix=prefix,
        intervention=intervention,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        greedy=greedy,
        temperature=temperature,
        top_p=top_p,
        seed=seed,
        progress=progress,
        stop_at_eos=stop_at_eos,
        row_steering=row_steering,
    )


def generate_tokens(
    lm: LoadedModel,
    prompts: Sequence[str],
    seqs: Sequence[Sequence[int]],
    *,
    prefix: int = 0,
    intervention: Attachable | None = None,
    max_new_tokens: int = 128,
    batch_size: int | Literal["auto"] = "auto",
    greedy: bool = True,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int = 0,
    progress: bool = False,
    stop_at_eos: bool = True,
    row_steering: Sequence[RowMaps] | None = None,
) -> list[Generation]:
    """:func:`generate` from token ids: ``seqs[i]`` is prompt ``i`` as the model sees it (its text
    ``prompts[i]`` only names the reply), and ``prefix`` how many leading tokens every sequence shares
    from the chat template (0: none assumed). A continuation (a prompt and part of a reply, e.g. a
    reasoning model's thinking) is generated this way, with no round trip through text."""
    options = _options(lm, max_new_tokens, greedy, temperature, top_p, stop_at_eos)
    check_batch_size(batch_size)
    if len(seqs) != len(prompts):
        raise ConfigError(f"{len(seqs)} token sequences for {len(prompts)} prompts")
    if row_steering is not None and len(row_steering) != len(prompts):
        raise ConfigError(f"row_steering has {len(row_steering)} entries for {len(prompts)} prompts")
    if not seqs:
        return []
    stops = options["eos_token_id"] if stop_at_eos else []
    engine = choose_engine(lm, len(seqs) * max_new_tokens)
    prepare(lm, engine)  # before attaching, so neuron steering lands in the gains of a compiled model
    torch.manual_seed(seed)
    attached = intervention.attach() if intervention is not None else nullcontext()
    with (
        attached,
        _per_row(lm, row_steering) as tables,  # after attaching, so a bad table detaches the intervention
        progress_bar(progress, len(seqs), "generating") as tick,
    ):
        engine = settle(lm, engine)
        longest = max(len(s) for s in seqs)
        auto = not isinstance(batch_size, int)
        size = auto_batch_size(lm, longest, max_new_tokens, len(seqs)) if auto else int(batch_size)
        options.update(engine.options(lm.device, round_up(longest, CACHE_STEP) + max_new_tokens))
        # The CPU fix below is a hook of its own, so it applies to eager decoding only.
        head = contiguous_head(lm) if lm.device.type == "cpu" and not engine.compiled else nullcontext()
        results: dict[int, Generation] = {}
        with head:
            for rows in _batches(seqs, size):
                if lm.device.type == "cpu":  # under auto, count the idle cores again now and then
                    refresh_threads(REFRESH_SECONDS)
                bind = None if tables is None else _binder(tables, rows)
                new = _decode(lm, [seqs[i] for i in rows], options, engine, prefix, bind)
                for row, ids in zip(rows, new, strict=True):
                    results[row] = _finish(lm, prompts[row], ids, stops)
                tick(len(rows))
    return [results[i] for i in range(len(seqs))]


def _per_row(lm: LoadedModel, steerings: Sequence[RowMaps] | None) -> AbstractContextManager[RowGains | None]:
    """The per-row steering tables of a call (none without ``row_steering``)."""
    return nullcontext() if steerings is None else RowGains(lm, steerings)


Bind = Callable[[int, int, int], RowGains]
"""Binds per-row tables to the batch's rows ``[start, stop)`` padded to ``total``, and returns them."""


def _binder(tables: RowGains, rows: Sequence[int]) -> Bind:
    """A :data:`Bind` over the batch of given rows ``rows`` (padding repeats the first, as the batch does)."""

    def bind(start: int, stop: int, total: int) -> RowGains:
        part = list(rows[start:stop])
        tables.bind(part + [part[0]] * (total - len(part)))
        return tables

    return bind


def _batches(seqs: Sequence[Sequence[int]], size: int) -> list[list[int]]:
    """Indices sorted by length, cut into batches of at most ``size`` spread evenly (no small remainder)."""
    order = sorted(range(len(seqs)), key=lambda i: (len(seqs[i]), i))
    count = -(-len(order) // size)
    bounds = [round(k * len(order) / count) for k in range(count + 1)]
    return [order[a:b] for a, b in itertools.pairwise(bounds) if b > a]


def _decode(
    lm: LoadedModel,
    seqs: Sequence[Sequence[int]],
    options: dict[str, Any],
    engine: Engine,
    prefix: int = 0,
    bind: Bind | None = None,
    start: int = 0,
) -> list[list[int]]:
    """New token ids of each sequence, generated as one batch (padded with repeats of the first row to
    the engine's shape; greedy eager decoding prefills the shared template ``prefix`` once). A CUDA
    out-of-memory error splits the batch in two and tries each half. ``bind``: per-row steering, bound
    to rows ``start`` onwards of the batch given to the first call (halves keep their rows' steering)."""
    rows = list(seqs) + [seqs[0]] * (engine.batch_rows(len(seqs)) - len(seqs))
    batch = left_padded(lm, rows)
    tables = None if bind is None else bind(start, start + len(seqs), len(rows))
    try:
        if _ragged(options, engine):
            stops = options["eos_token_id"]
            return ragged_greedy(lm, seqs, options["max_new_tokens"], stops, prefix, tables=tables)
        with torch.no_grad():
            out = _generate_fn(lm)(batch.input_ids, attention_mask=batch.attention_mask, **options)
    except torch.cuda.OutOfMemoryError:
        if len(seqs) == 1:
            raise
        del batch
        torch.cuda.empty_cache()
        half = len(seqs) // 2
        logger.warning("out of GPU memory at %d rows; retrying as %d + %d", len(seqs), half, len(seqs) - half)
        return _decode(lm, seqs[:half], options, engine, prefix, bind, start) + _decode(
            lm, seqs[half:], options, engine, prefix, bind, start + half
        )
    return out[: len(seqs), batch.input_ids.shape[1] :].tolist()


def _ragged(options: dict[str, Any], engine: Engine) -> bool:
    """Greedy eager decoding that stops at end of turn drops finished rows (:mod:`neurogate.models.ragged`);
    sampling, forced lengths and the compiled engine go through ``model.generate``."""
    return not engine.compiled and not options["do_sample"] and "min_new_tokens" not in options


def check_sampling(max_new_tokens: int, greedy: bool, temperature: float, top_p: float) -> None:
    """Raise :class:`ConfigError` for a token budget or sampling settings no generator accepts."""
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ConfigError(f"max_new_tokens must be a whole number >= 1, got {max_new_tokens!r}")
    if not greedy and (temperature <= 0 or not 0 < top_p <= 1):
        raise ConfigError(f"sampling needs temperature > 0 and 0 < top_p <= 1, got {temperature}, {top_p}")


def _options(
    lm: LoadedModel, max_new_tokens: int, greedy: bool, temperature: float, top_p: float, stop_at_eos: bool
) -> dict[str, Any]:
    """Validated keyword options for ``model.generate``."""
    check_sampling(max_new_tokens, greedy, temperature, top_p)
    options: dict[str, Any] = {
        "max_new_tokens": max_new_tokens,
        "do_sample": not greedy,
        "pad_token_id": pad_id(lm),
        "eos_token_id": stop_token_ids(lm),
        "repetition_penalty": 1.0,
    }
    if not greedy:
        options.update(temperature=temperature, top_p=top_p, top_k=0)
    if not stop_at_eos:
        options.update(min_new_tokens=max_new_tokens)
    return options


def _generate_fn(lm: LoadedModel) -> Any:
    return lm.model.generate


def _finish(lm: LoadedModel, prompt: str, ids: list[int], stops: Sequence[int]) -> Generation:
    stop_set = set(stops)
    cut = next((i for i, t in enumerate(ids) if t in stop_set), None)
    kept = ids if cut is None else ids[:cut]
    text = lm.tokenizer.decode(kept, skip_special_tokens=True)
    return Generation(prompt=prompt, text=str(text).strip(), token_ids=kept, finished=cut is not None)
