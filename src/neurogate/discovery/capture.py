"""The capture pass: prompts -> chosen positions of a site kind at every layer, in batches.

:func:`iter_captures` formats and tokenizes the prompts (:func:`neurogate.models.inputs.encode`), feeds them
through the model in length-sorted batches with a :class:`~neurogate.discovery.recorder.Recorder`, and
yields each batch's values. When all prompts share a token prefix (a chat template's system turn), the
prefix runs once and its key/value cache is reused for every batch. :func:`collect_stats_many` folds the
batches into per-set running statistics (discovery); :func:`capture_values` keeps every prompt's values
(residual directions).

Positions (:data:`POSITIONS`): ``last`` reads the last prompt token (the paper); the ``post-*`` modes read
the template's post-instruction tokens (after the user's message: the end-of-turn marker, the assistant
header, ...) and reduce them by their mean (``post-mean``) or max (``post-max``), or keep each
(``post-each``: values gain a position axis, ``[batch, P, n_layers, width]``). Every mode is one forward
pass per prompt.
"""

from __future__ import annotations

import copy
import inspect
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from transformers import DynamicCache

from neurogate.discovery.recorder import Recorder, Reduce, recording
from neurogate.discovery.stats import SiteStats
from neurogate.errors import ConfigError, PromptSetError
from neurogate.models.inputs import (
    BatchSize,
    encode,
    left_padded,
    left_positions,
    pad_id,
    plan_batches,
    post_instruction_tokens,
)
from neurogate.models.loading import LoadedModel
from neurogate.models.sites import NEURONS, SiteKind
from neurogate.progress import progress_bar

logger = logging.getLogger(__name__)

MIN_PREFIX = 4  # shorter shared prefixes are not worth a separate cached pass
Positions = Literal["last", "post-mean", "post-max", "post-each"]
POSITIONS: tuple[str, ...] = ("last", "post-mean", "post-max", "post-each")
_REDUCE: dict[str, Reduce] = {"last": "first", "post-mean": "mean", "post-max": "max", "post-each": "none"}


@dataclass(frozen=True)
class CaptureOptions:
    """How prompts are turned into captures (shared by every caller of :func:`iter_captures`)."""

    batch_size: BatchSize = "auto"
    system_prompt: str | None = None
    chat: bool = True
    progress: bool = True
    reuse_prefix: bool = True
    positions: Positions = "last"

    def __post_init__(self) -> None:
        if self.positions not in POSITIONS:
            raise ConfigError(f"positions must be one of {', '.join(POSITIONS)}, got {self.positions!r}")

    def n_positions(self, lm: LoadedModel) -> int:
        """How many positions per prompt are read (before any reduction)."""
        if self.positions == "last":
            return 1
        return post_instruction_tokens(lm, system_prompt=self.system_prompt, chat=self.chat)


def last_token_values(
    lm: LoadedModel, sequences: Sequence[Sequence[int]], kinds: Sequence[SiteKind] = (NEURONS,)
) -> dict[str, torch.Tensor]:
    """Values at the last token of each sequence in one left-padded batch, no prefix reuse: the reference
    path for small batches and tests."""
    with torch.inference_mode(), recording(lm, kinds) as rec:
        return _run_plain(lm, rec, sequences, 1)


def shared_prefix(sequences: Sequence[Sequence[int]]) -> int:
    """Length of the longest common token prefix, kept at least one token short of the shortest sequence."""
    if not sequences:
        return 0
    first = sequences[0]
    limit = min(len(s) for s in sequences) - 1
    n = 0
    while n < limit and all(s[n] == first[n] for s in sequences):
        n += 1
    return max(n, 0)


def _prefix_supported(lm: LoadedModel, longest: int) -> bool:
    config = lm.model.config
    text = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else None
    window = getattr(text or config, "sliding_window", None)
    if isinstance(window, int) and 0 < window < longest:
        return False
    params = inspect.signature(lm.model.forward).parameters
    return "cache" in params or "past_key_values" in params


def _prefix_cache(lm: LoadedModel, rec: Recorder, prefix: Sequence[int]) -> Any | None:
    """Run the shared prefix once and return its filled key/value cache (None when the model cannot)."""
    ids = torch.tensor([list(prefix)], dtype=torch.long, device=lm.device)
    try:
        cache = DynamicCache(config=lm.model.config)
        positions = torch.arange(len(prefix), device=lm.device)[None]
        rec.run(ids, torch.ones_like(ids), None, position_ids=positions, cache=cache)
        if cache.get_seq_length() != len(prefix):
            raise ValueError(f"cache holds {cache.get_seq_length()} positions, expected {len(prefix)}")
    except (TypeError, ValueError, AttributeError, NotImplementedError, RuntimeError) as exc:
        lm.note_once(
            "no-prefix-cache", f"{lm.spec}: shared-prefix reuse is unavailable ({exc}); running full prompts"
        )
        return None
    return cache


def _run_plain(
    lm: LoadedModel, rec: Recorder, seqs: Sequence[Sequence[int]], n_pos: int
) -> dict[str, torch.Tensor]:
    """One left-padded batch; every row's last ``n_pos`` tokens sit in the same last columns."""
    batch = left_padded(lm, seqs)
    width = batch.input_ids.shape[1]
    read = torch.arange(width - n_pos, width, device=lm.device).expand(len(seqs), n_pos)
    positions = left_positions(batch.attention_mask)
    return rec.run(batch.input_ids, batch.attention_mask, read, position_ids=positions)


def _run_suffix(
    lm: LoadedModel,
    rec: Recorder,
    prefix_cache: Any,
    n_prefix: int,
    suffixes: Sequence[Sequence[int]],
    n_pos: int,
) -> dict[str, torch.Tensor]:
    """Right-padded suffixes after the cached prefix; row r's last ``n_pos`` real tokens end at
    ``len(r) - 1``."""
    width = max(len(s) for s in suffixes)
    rows = len(suffixes)
    ids = torch.full((rows, width), pad_id(lm), dtype=torch.long)
    mask = torch.zeros((rows, n_prefix + width), dtype=torch.long)
    mask[:, :n_prefix] = 1
    for r, seq in enumerate(suffixes):
        ids[r, : len(seq)] = torch.tensor(list(seq), dtype=torch.long)
        mask[r, n_prefix : n_prefix + len(seq)] = 1
    read = torch.stack([torch.arange(len(s) - n_pos, len(s)) for s in suffixes]).to(lm.device)
    positions = (torch.arange(width) + n_prefix).expand(rows, width)
    cache = copy.deepcopy(prefix_cache)
    cache.batch_repeat_interleave(rows)
    return rec.run(
        ids.to(lm.device), mask.to(lm.device), read, position_ids=positions.to(lm.device), cache=cache
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
        seqs.extend(encode(lm, prompts, system_prompt=opts.system_prompt, chat=opts.chat))
        owner.extend((set_index, i) for i in range(len(prompts)))
    n_pos = opts.n_positions(lm)
    short = [i for i, s in enumerate(seqs) if len(s) < n_pos]
    if short:
        raise PromptSetError(f"prompt {owner[short[0]]} has fewer than the {n_pos} tokens to read")
    n_prefix = shared_prefix(seqs) if opts.reuse_prefix else 0
    if n_prefix < MIN_PREFIX or min(len(s) for s in seqs) - n_prefix < n_pos:
        n_prefix = 0
    if n_prefix and not _prefix_supported(lm, max(len(s) for s in seqs)):
        n_prefix = 0
    batches = plan_batches([len(s) - n_prefix for s in seqs], opts.batch_size, lm.device)
    with (
        torch.inference_mode(),
        recording(lm, kinds, reduce=_REDUCE[opts.positions]) as rec,
        progress_bar(opts.progress, len(seqs), "capturing activations") as advance,
    ):
        cache = _prefix_cache(lm, rec, seqs[0][:n_prefix]) if n_prefix else None
        for idx in batches:
            if cache is not None:
                values = _run_suffix(lm, rec, cache, n_prefix, [seqs[i][n_prefix:] for i in idx], n_pos)
            else:
                values = _run_plain(lm, rec, [seqs[i] for i in idx], n_pos)
            yield [owner[i] for i in idx], values
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
