"""The capture pass: prompts -> chosen positions of a site kind at every layer, in batches.

:func:`iter_captures` formats and tokenizes the prompts (:func:`neurogate.models.inputs.encode`), feeds them
through the model in length-sorted batches with a :class:`~neurogate.discovery.recorder.Recorder`, and
yields each batch's values. When all prompts share a token prefix (a chat template's system turn), the
prefix runs once and its key/value cache is reused for every batch: the prefill port
(:mod:`neurogate.models.prefix`) builds the prefix cache and the batches, the recorder runs them.
:func:`collect_stats_many` folds the batches into per-set running statistics (discovery);
:func:`capture_values` keeps every prompt's values (residual directions).

Positions (:data:`POSITIONS`): ``last`` reads the last prompt token (the paper); the ``post-*`` modes read
the template's post-instruction tokens (after the user's message: the end-of-turn marker, the assistant
header, ...) and reduce them by their mean (``post-mean``) or max (``post-max``), or keep each
(``post-each``: values gain a position axis, ``[batch, P, n_layers, width]``). Every mode is one forward
pass per prompt.

Thinking (:data:`THINKING`, for reasoning templates, :mod:`neurogate.models.thinking`): ``before`` reads
the prompt as the template ends it, before any thinking (the default, and the only choice for other
models); ``after`` ends each prompt with a closed, empty thinking block (``<think>\n\n</think>\n\n``),
so the positions read are where the answer would start once thinking is over.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from neurogate.discovery.recorder import Recorder, Reduce, recording
from neurogate.discovery.stats import SiteStats
from neurogate.errors import ConfigError, PromptSetError
from neurogate.models.inputs import BatchSize, encode, plan_batches, post_instruction_tokens, shared_prefix
from neurogate.models.loading import LoadedModel
from neurogate.models.prefix import Rows, build_prefix, reusable, rows_on
from neurogate.models.sites import NEURONS, SiteKind
from neurogate.progress import progress_bar

logger = logging.getLogger(__name__)

Positions = Literal["last", "post-mean", "post-max", "post-each"]
POSITIONS: tuple[str, ...] = ("last", "post-mean", "post-max", "post-each")
_REDUCE: dict[str, Reduce] = {"last": "first", "post-mean": "mean", "post-max": "max", "post-each": "none"}
ThinkingPosition = Literal["before", "after"]
THINKING: tuple[str, ...] = ("before", "after")


@dataclass(frozen=True)
class CaptureOptions:
    """How prompts are turned into captures (shared by every caller of :func:`iter_captures`)."""

    batch_size: BatchSize = "auto"
    system_prompt: str | None = None
    chat: bool = True
    progress: bool = True
    reuse_prefix: bool = True
    positions: Positions = "last"
    thinking: ThinkingPosition = "before"

    def __post_init__(self) -> None:
        if self.positions not in POSITIONS:
            raise ConfigError(f"positions must be one of {', '.join(POSITIONS)}, got {self.positions!r}")
        if self.thinking not in THINKING:
            raise ConfigError(f"thinking must be one of {', '.join(THINKING)}, got {self.thinking!r}")

    @property
    def close_thinking(self) -> bool:
        """Whether prompts end with a closed, empty thinking block (``thinking = "after"``)."""
        return self.thinking == "after"

    def encode(self, lm: LoadedModel, prompts: Sequence[str]) -> list[list[int]]:
        """The prompts' token ids as these options read them."""
        return encode(
            lm, prompts, system_prompt=self.system_prompt, chat=self.chat, close_thinking=self.close_thinking
        )

    def n_positions(self, lm: LoadedModel) -> int:
        """How many positions per prompt are read (before any reduction)."""
        if self.positions == "last":
            return 1
        return post_instruction_tokens(
            lm, system_prompt=self.system_prompt, chat=self.chat, close_thinking=self.close_thinking
        )


def last_token_values(
    lm: LoadedModel, sequences: Sequence[Sequence[int]], kinds: Sequence[SiteKind] = (NEURONS,)
) -> dict[str, torch.Tensor]:
    """Values at the last token of each sequence in one left-padded batch, no prefix reuse: the reference
    path for small batches and tests."""
    with torch.inference_mode(), recording(lm, kinds) as rec:
        return _record(rec, rows_on(lm, sequences), 1)


def _record(rec: Recorder, rows: Rows, n_pos: int | None = None) -> dict[str, torch.Tensor]:
    """Run ``rows`` through the recorder, reading each row's last ``n_pos`` tokens (the last columns of
    the left-padded batch); None reads nothing (the prefix pass, which only fills the cache)."""
    read = None
    if n_pos is not None:
        rows_n, width = rows.input_ids.shape
        read = torch.arange(width - n_pos, width, device=rows.input_ids.device).expand(rows_n, n_pos)
    return rec.run(
        rows.input_ids, rows.attention_mask, read, position_ids=rows.position_ids, cache=rows.cache
    )


def iter_captures(
    lm: LoadedModel,
    prompt_sets: Sequence[Sequence[str]],
    kinds: Sequence[SiteKind] = (NEURONS,),
    options: CaptureOptions | None = None,
) -> Iterator[tuple[list[tuple[int, int]], dict[str, torch.Tensor]]]:
    """Capture the chosen positions' values (``options.positions``) for every prompt of every set.

    Yields ``(rows, values)`` per batch: ``rows[i] = (set index, prompt index)`` of row ``i``, and
    ``values[kind]`` is ``[batch, n_layers, width]`` (``[batch, P, n_layers, width]`` for ``post-each``)
    float32 on the model's device.
    """
    opts = options or CaptureOptions()
    if not prompt_sets:
        raise PromptSetError("no prompt sets given")
    seqs: list[list[int]] = []
    owner: list[tuple[int, int]] = []
    for set_index, prompts in enumerate(prompt_sets):
        seqs.extend(opts.encode(lm, prompts))
        owner.extend((set_index, i) for i in range(len(prompts)))
    n_pos = opts.n_positions(lm)
    short = [i for i, s in enumerate(seqs) if len(s) < n_pos]
    if short:
        raise PromptSetError(f"prompt {owner[short[0]]} has fewer than the {n_pos} tokens to read")
    # every row keeps the n_pos tokens it is read at after the prefix
    n_prefix = shared_prefix(seqs, min(len(s) for s in seqs) - n_pos) if opts.reuse_prefix else 0
    if not reusable(lm, n_prefix, max(len(s) for s in seqs) - n_prefix):
        n_prefix = 0
    batches = plan_batches([len(s) - n_prefix for s in seqs], opts.batch_size, lm.device)
    with (
        torch.inference_mode(),
        recording(lm, kinds, reduce=_REDUCE[opts.positions]) as rec,
        progress_bar(opts.progress, len(seqs), "capturing activations") as advance,
    ):
        head = None
        if n_prefix:  # built once, copied for every batch; the recorder stops it after the last layer
            head = build_prefix(lm, seqs[0][:n_prefix], run=lambda rows: _record(rec, rows))
        for idx in batches:
            yield [owner[i] for i in idx], _record(rec, rows_on(lm, [seqs[i] for i in idx], head), n_pos)
            advance(len(idx))
    logger.info(
        "captured %d prompts in %d batches (shared prefix: %d tokens)", len(seqs), len(batches), n_prefix
    )


BatchFn = Callable[[list[tuple[int, int]], dict[str, torch.Tensor]], None]
"""Called with each batch's ``(rows, values)`` as :func:`iter_captures` yields them."""


def collect_stats_many(
    lm: LoadedModel,
    prompt_sets: Sequence[Sequence[str]],
    kinds: Sequence[SiteKind] = (NEURONS,),
    options: CaptureOptions | None = None,
    on_batch: BatchFn | None = None,
) -> list[dict[str, SiteStats]]:
    """Per prompt set, running statistics of every site kind (``{kind: SiteStats}``) at the chosen
    positions (reduced to one value per prompt: ``post-each`` is refused here). The sets share the prefix
    pass and the length-sorted batches (fewer, fuller forward passes). ``on_batch`` also sees every
    batch, for per-prompt summaries the statistics cannot hold."""
    if options is not None and options.positions == "post-each":
        raise ConfigError("statistics need one value per prompt: use positions last, post-mean or post-max")
    adapter = lm.adapter
    out: list[dict[str, SiteStats]] = [
        # on the model's device: copying every batch's values to the CPU and updating there in float64
        # took 4.3 s for 200 prompts at the 1.5B shape on a 2-core CPU, ~18x a whole GPU forward pass
        {
            k: SiteStats.zeros(adapter.n_layers, adapter.width(f"blocks.0.{k}"), lm.dtype, lm.device)
            for k in kinds
        }
        for _ in prompt_sets
    ]
    for rows, values in iter_captures(lm, prompt_sets, kinds, options):
        groups = torch.tensor([s for s, _ in rows], device=lm.device)
        for set_index in sorted({s for s, _ in rows}):
            for kind, tensor in values.items():
                out[set_index][kind].update(tensor[groups == set_index])
        if on_batch is not None:
            on_batch(rows, values)
    return out


def collect_stats(
    lm: LoadedModel,
    prompts: Sequence[str],
    kind: SiteKind = NEURONS,
    options: CaptureOptions | None = None,
) -> SiteStats:
    """Running statistics of ``kind`` at the last token of each prompt (see :func:`collect_stats_many`)."""
    return collect_stats_many(lm, [prompts], (kind,), options)[0][kind]


def capture_values(
    lm: LoadedModel, prompts: Sequence[str], kind: SiteKind, options: CaptureOptions | None = None
) -> torch.Tensor:
    """Every prompt's value of ``kind`` at the chosen positions, ``[n_prompts, n_layers, width]`` (with a
    position axis after the prompt axis for ``post-each``) float32 on the CPU, in prompt order."""
    chunks: list[tuple[list[int], torch.Tensor]] = []
    for rows, values in iter_captures(lm, [prompts], (kind,), options):
        chunks.append(([i for _, i in rows], values[kind].cpu()))
    out = torch.empty((len(prompts), *chunks[0][1].shape[1:]), dtype=torch.float32)
    for index, value in chunks:
        out[torch.tensor(index)] = value
    return out
