"""Activation capture: the neuron values at the last prompt token, for every layer, in batches.

The site is the input of each layer's MLP down-projection, ``[batch, pos, d_mlp]``. Forward pre-hooks copy
one position per row into a ``[batch, n_layers, d_mlp]`` fp32 buffer; the last layer's hook then stops the
forward pass, so the final norm and the LM head never run.

:func:`collect_stats` feeds prompts through the model in length-sorted batches and folds each batch into
running sums (:class:`~neurogate.stats.SiteStats`). When all prompts share a token prefix (a chat template's
system turn), the prefix runs once and its key/value cache is reused for every batch.
"""

from __future__ import annotations

import copy
import inspect
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from neurogate import chat
from neurogate.errors import ConfigError, PromptSetError
from neurogate.loading import LoadedModel
from neurogate.stats import SiteStats

logger = logging.getLogger(__name__)

BatchSize = int | Literal["auto"]
MIN_PREFIX = 4  # shorter shared prefixes are not worth a separate cached pass


class _StopForward(Exception):
    """Raised by the last layer's hook once everything needed has been captured."""


class LastTokenRecorder:
    """Forward pre-hooks on every down-projection that record one position per row.

    Set :attr:`positions` (``[batch]`` indices into the position axis) before each forward pass; read
    :attr:`values` (``[batch, n_layers, d_mlp]`` fp32) after it. With ``stop=True`` the last layer's hook
    raises a private exception that :meth:`run` catches, so nothing after that layer's MLP is computed.
    ``remove()`` takes the hooks off.
    """

    def __init__(self, lm: LoadedModel, *, stop: bool = True) -> None:
        self.adapter = lm.adapter
        self.stop = stop
        self.record = True
        self.positions: torch.Tensor | None = None
        self.values: torch.Tensor | None = None
        self._device = lm.device
        self._model = lm.model
        self._handles: list[RemovableHandle] = []
        last = self.adapter.n_layers - 1
        try:
            for layer in range(self.adapter.n_layers):
                hook = self._make_hook(layer, stop and layer == last)
                self._handles.append(self.adapter.down_proj(layer).register_forward_pre_hook(hook))
        except BaseException:
            self.remove()
            raise

    def _make_hook(self, layer: int, is_stop: bool) -> Callable[[nn.Module, tuple[Any, ...]], None]:
        def hook(_module: nn.Module, args: tuple[Any, ...]) -> None:
            if self.record:
                site = args[0]  # [batch, pos, d_mlp]
                assert self.values is not None and self.positions is not None
                rows = torch.arange(site.shape[0], device=site.device)
                picked = site[rows, self.positions.to(site.device)]
                self.values[:, layer] = picked.to(self.values.device, torch.float32)
            if is_stop:
                raise _StopForward

        return hook

    def run(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        positions: torch.Tensor | None,
        *,
        position_ids: torch.Tensor | None = None,
        cache: Any = None,
    ) -> torch.Tensor | None:
        """One forward pass; returns the recorded ``[batch, n_layers, d_mlp]`` values when ``positions`` is
        set (``None`` runs without recording, e.g. to fill a key/value cache)."""
        self.record = positions is not None
        self.positions = positions
        batch = int(input_ids.shape[0])
        self.values = (
            torch.empty(
                (batch, self.adapter.n_layers, self.adapter.d_mlp), dtype=torch.float32, device=self._device
            )
            if self.record
            else None
        )
        model = self._model
        kwargs: dict[str, Any] = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "use_cache": cache is not None,
        }
        if position_ids is not None:
            kwargs["position_ids"] = position_ids
        if cache is not None:
            kwargs[_cache_kwarg(model)] = cache
        try:
            model(**kwargs)
        except _StopForward:
            pass
        else:
            if self.stop:
                raise RuntimeError("the forward pass finished without reaching the last down-projection")
        values, self.values, self.positions = self.values, None, None
        return values

    def remove(self) -> None:
        """Take every hook off (idempotent)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


@contextmanager
def recording(lm: LoadedModel, *, stop: bool = True) -> Iterator[LastTokenRecorder]:
    """A :class:`LastTokenRecorder` on ``lm`` whose hooks are removed however the block ends."""
    recorder = LastTokenRecorder(lm, stop=stop)
    try:
        yield recorder
    finally:
        recorder.remove()


def _cache_kwarg(model: nn.Module) -> str:
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def left_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids for a left-padded batch: each row counts from 0 at its first real token."""
    return (attention_mask.long().cumsum(-1) - 1).clamp_min(0)


def last_token_values(lm: LoadedModel, sequences: Sequence[Sequence[int]]) -> torch.Tensor:
    """Neuron values at the last token of each sequence, ``[batch, n_layers, d_mlp]`` fp32 (one left-padded
    batch, no prefix reuse): the reference path for small batches and tests."""
    batch = chat.pad_left(sequences, chat.pad_id(lm)).to(lm.device)
    last = torch.full((batch.input_ids.shape[0],), batch.input_ids.shape[1] - 1, device=lm.device)
    with torch.inference_mode(), recording(lm) as rec:
        out = rec.run(
            batch.input_ids, batch.attention_mask, last, position_ids=left_positions(batch.attention_mask)
        )
    assert out is not None
    return out


# ---------------------------------------------------------------------------------------------------------
# batching


def token_budget(device: torch.device) -> tuple[int, int]:
    """(tokens per batch, most rows per batch) for ``batch_size="auto"``: small on CPU, large on GPUs."""
    if device.type == "cuda":
        return 32_768, 256
    return 4_096, 128


def plan_batches(lengths: Sequence[int], batch_size: BatchSize, device: torch.device) -> list[list[int]]:
    """Group prompt indices into batches of similar length (sorted by length, so padding stays small)."""
    if batch_size != "auto" and (
        isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
    ):
        raise ConfigError(f"batch_size must be 'auto' or a whole number >= 1, got {batch_size!r}")
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    if batch_size != "auto":
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    budget, max_rows = token_budget(device)
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        if current and ((len(current) + 1) * lengths[i] > budget or len(current) >= max_rows):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


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
    config = (
        lm.model.config.get_text_config(decoder=True) if hasattr(lm.model.config, "get_text_config") else None
    )
    config = config or lm.model.config
    window = getattr(config, "sliding_window", None)
    if isinstance(window, int) and 0 < window < longest:
        return False
    params = inspect.signature(lm.model.forward).parameters
    return "cache" in params or "past_key_values" in params


def _prefix_cache(lm: LoadedModel, rec: LastTokenRecorder, prefix: Sequence[int]) -> Any | None:
    """Run the shared prefix once and return its filled key/value cache (None when the model cannot)."""
    from transformers import DynamicCache

    ids = torch.tensor([list(prefix)], dtype=torch.long, device=lm.device)
    try:
        cache = DynamicCache(config=lm.model.config)
        rec.run(
            ids,
            torch.ones_like(ids),
            None,
            position_ids=torch.arange(len(prefix), device=lm.device)[None],
            cache=cache,
        )
        if cache.get_seq_length() != len(prefix):
            raise ValueError(f"cache holds {cache.get_seq_length()} positions, expected {len(prefix)}")
    except (TypeError, ValueError, AttributeError, NotImplementedError, RuntimeError) as exc:
        lm.note_once(
            "no-prefix-cache", f"{lm.spec}: shared-prefix reuse is unavailable ({exc}); running full prompts"
        )
        return None
    return cache


def _run_plain(lm: LoadedModel, rec: LastTokenRecorder, seqs: Sequence[Sequence[int]]) -> torch.Tensor:
    batch = chat.pad_left(seqs, chat.pad_id(lm)).to(lm.device)
    last = torch.full((len(seqs),), batch.input_ids.shape[1] - 1, device=lm.device)
    out = rec.run(
        batch.input_ids, batch.attention_mask, last, position_ids=left_positions(batch.attention_mask)
    )
    assert out is not None
    return out


def _run_suffix(
    lm: LoadedModel,
    rec: LastTokenRecorder,
    prefix_cache: Any,
    n_prefix: int,
    suffixes: Sequence[Sequence[int]],
) -> torch.Tensor:
    """Right-padded suffixes after the cached prefix; the last real token of row r is at ``len(r) - 1``."""
    width = max(len(s) for s in suffixes)
    rows = len(suffixes)
    ids = torch.full((rows, width), chat.pad_id(lm), dtype=torch.long)
    mask = torch.zeros((rows, n_prefix + width), dtype=torch.long)
    mask[:, :n_prefix] = 1
    for r, seq in enumerate(suffixes):
        ids[r, : len(seq)] = torch.tensor(list(seq), dtype=torch.long)
        mask[r, n_prefix : n_prefix + len(seq)] = 1
    last = torch.tensor([len(s) - 1 for s in suffixes], device=lm.device)
    positions = (torch.arange(width) + n_prefix).expand(rows, width)
    cache = copy.deepcopy(prefix_cache)
    cache.batch_repeat_interleave(rows)
    out = rec.run(
        ids.to(lm.device), mask.to(lm.device), last, position_ids=positions.to(lm.device), cache=cache
    )
    assert out is not None
    return out


def tokenize_prompts(
    lm: LoadedModel, prompts: Sequence[str], *, system_prompt: str | None = None, chat_format: bool = True
) -> list[list[int]]:
    """Chat-format (or not) and tokenize each prompt, truncating from the left beyond the context."""
    if not prompts:
        raise PromptSetError("the prompt set is empty: give at least one prompt")
    templated = chat.uses_template(lm, chat_format)
    texts = chat.format_prompts(lm, prompts, system_prompt=system_prompt, chat=chat_format)
    seqs = [chat.tokenize(lm, text, templated=templated) for text in texts]
    for i, seq in enumerate(seqs):
        if not seq:
            raise PromptSetError(f"prompt {i} tokenizes to nothing: remove empty prompts from the set")
    return seqs


def collect_stats(
    lm: LoadedModel,
    prompts: Sequence[str],
    *,
    batch_size: BatchSize = "auto",
    system_prompt: str | None = None,
    chat: bool = True,
    progress: bool = True,
    reuse_prefix: bool = True,
) -> SiteStats:
    """Running sums of every neuron's value at the last token of each prompt (see module docstring).

    ``reuse_prefix=False`` forces the plain left-padded path (the prefix path gives the same numbers).
    """
    return collect_stats_many(
        lm,
        [prompts],
        batch_size=batch_size,
        system_prompt=system_prompt,
        chat=chat,
        progress=progress,
        reuse_prefix=reuse_prefix,
    )[0]


def collect_stats_many(
    lm: LoadedModel,
    prompt_sets: Sequence[Sequence[str]],
    *,
    batch_size: BatchSize = "auto",
    system_prompt: str | None = None,
    chat: bool = True,
    progress: bool = True,
    reuse_prefix: bool = True,
) -> list[SiteStats]:
    """:func:`collect_stats` for several prompt sets in one pass: the sets share the prefix pass and the
    length-sorted batches (fewer, fuller forward passes), and each set gets its own sums."""
    if not prompt_sets:
        raise PromptSetError("no prompt sets given")
    seqs: list[list[int]] = []
    owner: list[int] = []
    for set_index, prompts in enumerate(prompt_sets):
        seqs.extend(tokenize_prompts(lm, prompts, system_prompt=system_prompt, chat_format=chat))
        owner.extend([set_index] * len(prompts))
    stats = [SiteStats.zeros(lm.adapter.n_layers, lm.adapter.d_mlp, lm.device) for _ in prompt_sets]
    n_prefix = shared_prefix(seqs) if reuse_prefix else 0
    if n_prefix < MIN_PREFIX or not _prefix_supported(lm, max(len(s) for s in seqs)):
        n_prefix = 0
    lengths = [len(s) - n_prefix for s in seqs]
    batches = plan_batches(lengths, batch_size, lm.device)
    with (
        torch.inference_mode(),
        recording(lm) as rec,
        progress_bar(progress, len(seqs), "capturing activations") as advance,
    ):
        cache = _prefix_cache(lm, rec, seqs[0][:n_prefix]) if n_prefix else None
        for idx in batches:
            if cache is not None:
                acts = _run_suffix(lm, rec, cache, n_prefix, [seqs[i][n_prefix:] for i in idx])
            else:
                acts = _run_plain(lm, rec, [seqs[i] for i in idx])
            groups = torch.tensor([owner[i] for i in idx], device=acts.device)
            for set_index in sorted({owner[i] for i in idx}):
                stats[set_index].update(acts[groups == set_index])
            advance(len(idx))
    logger.info(
        "captured %d prompts in %d batches (shared prefix: %d tokens)", len(seqs), len(batches), n_prefix
    )
    return stats


@contextmanager
def progress_bar(enabled: bool, total: int, label: str) -> Iterator[Callable[[int], None]]:
    """A transient rich progress bar on stderr; yields ``advance(n)`` (a no-op when disabled)."""
    if not enabled:
        yield lambda _n: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn(f"[bold]{label}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task("capture", total=total)
        yield lambda n: bar.update(task, advance=n)
