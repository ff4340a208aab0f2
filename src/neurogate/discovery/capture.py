"""The capture engine: one site kind (or several) at one position per prompt, every layer, in batches.

A :class:`Recorder` hooks a site kind of every layer (canonical names in :mod:`neurogate.models.sites`:
``mlp.post`` for the MLP neurons, ``resid_post`` for the residual stream, ...) and copies one position per
row into a ``[batch, n_layers, width]`` float32 buffer. Once the last layer's last recorded site has been
read, the hook stops the forward pass, so nothing after it (final norm, LM head) runs.

:func:`iter_captures` feeds prompts through the model in length-sorted batches. When all prompts share a
token prefix (a chat template's system turn), the prefix runs once and its key/value cache is reused for
every batch. :func:`collect_stats_many` folds the batches into per-set running statistics (discovery);
:func:`capture_values` keeps every prompt's values (residual directions).
"""

from __future__ import annotations

import copy
import inspect
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from transformers import DynamicCache

from neurogate.discovery.stats import SiteStats
from neurogate.errors import PromptSetError
from neurogate.models.hooks import SiteFn, hook_site
from neurogate.models.inputs import BatchSize, encode, left_padded, left_positions, pad_id, plan_batches
from neurogate.models.loading import LoadedModel
from neurogate.models.sites import NEURONS, SiteKind, check_kind
from neurogate.progress import progress_bar

logger = logging.getLogger(__name__)

MIN_PREFIX = 4  # shorter shared prefixes are not worth a separate cached pass
# the order in which a decoder layer reaches each site, to know which one is read last
_SITE_ORDER = {"resid_pre": 0, "attn.out": 1, "mlp.post": 2, "resid_post": 3}


class _StopForward(Exception):
    """Raised by the last recorded site's hook once everything needed has been captured."""


class Recorder:
    """Hooks that record one position per row at every layer's sites of the given kinds.

    Set :attr:`positions` (``[batch]`` indices into the position axis) before each forward pass, or use
    :meth:`run`; read the values it returns, ``{kind: [batch, n_layers, width]}`` float32. With ``stop=True``
    the last site's hook raises a private exception that :meth:`run` catches. ``remove()`` takes the hooks
    off.
    """

    def __init__(self, lm: LoadedModel, kinds: Sequence[SiteKind] = (NEURONS,), *, stop: bool = True) -> None:
        self.lm = lm
        self.kinds = tuple(dict.fromkeys(check_kind(k) for k in kinds))
        if not self.kinds:
            raise ValueError("a Recorder needs at least one site kind")
        self.stop = stop
        self.record = True
        self.positions: torch.Tensor | None = None
        self.values: dict[str, torch.Tensor] = {}
        self._handles: list[Any] = []
        n = lm.adapter.n_layers
        last_kind = max(self.kinds, key=_SITE_ORDER.__getitem__)
        try:
            for layer in range(n):
                for kind in self.kinds:
                    is_stop = stop and layer == n - 1 and kind == last_kind
                    fn = self._reader(kind, layer, is_stop)
                    self._handles.append(hook_site(lm, f"blocks.{layer}.{kind}", fn))
        except BaseException:
            self.remove()
            raise

    def _reader(self, kind: str, layer: int, is_stop: bool) -> SiteFn:
        def read(site: torch.Tensor) -> None:
            if self.record:
                assert self.positions is not None
                rows = torch.arange(site.shape[0], device=site.device)
                picked = site[rows, self.positions.to(site.device)]
                self.values[kind][:, layer] = picked.to(self.values[kind].device, torch.float32)
            if is_stop:
                raise _StopForward

        return read

    def run(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        positions: torch.Tensor | None,
        *,
        position_ids: torch.Tensor | None = None,
        cache: Any = None,
    ) -> dict[str, torch.Tensor]:
        """One forward pass; returns the recorded values when ``positions`` is set (an empty dict when it
        is ``None``, which runs without recording, e.g. to fill a key/value cache)."""
        self.record = positions is not None
        self.positions = positions
        batch = int(input_ids.shape[0])
        adapter = self.lm.adapter
        self.values = {
            kind: torch.empty(
                (batch, adapter.n_layers, adapter.width(f"blocks.0.{kind}")),
                dtype=torch.float32,
                device=self.lm.device,
            )
            for kind in (self.kinds if self.record else ())
        }
        kwargs: dict[str, Any] = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "use_cache": cache is not None,
        }
        if position_ids is not None:
            kwargs["position_ids"] = position_ids
        if cache is not None:
            kwargs[_cache_kwarg(self.lm.model)] = cache
        try:
            self.lm.model(**kwargs)
        except _StopForward:
            pass
        else:
            if self.stop:
                raise RuntimeError("the forward pass finished without reaching the last recorded site")
        values, self.values, self.positions = self.values, {}, None
        return values

    def remove(self) -> None:
        """Take every hook off (idempotent)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


@contextmanager
def recording(
    lm: LoadedModel, kinds: Sequence[SiteKind] = (NEURONS,), *, stop: bool = True
) -> Iterator[Recorder]:
    """A :class:`Recorder` on ``lm`` whose hooks are removed however the block ends."""
    recorder = Recorder(lm, kinds, stop=stop)
    try:
        yield recorder
    finally:
        recorder.remove()


def _cache_kwarg(model: torch.nn.Module) -> str:
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def last_token_values(
    lm: LoadedModel, sequences: Sequence[Sequence[int]], kinds: Sequence[SiteKind] = (NEURONS,)
) -> dict[str, torch.Tensor]:
    """Values at the last token of each sequence in one left-padded batch, no prefix reuse: the reference
    path for small batches and tests."""
    with torch.inference_mode(), recording(lm, kinds) as rec:
        return _run_plain(lm, rec, sequences)


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


def _run_plain(lm: LoadedModel, rec: Recorder, seqs: Sequence[Sequence[int]]) -> dict[str, torch.Tensor]:
    batch = left_padded(lm, seqs)
    last = torch.full((len(seqs),), batch.input_ids.shape[1] - 1, device=lm.device)
    positions = left_positions(batch.attention_mask)
    return rec.run(batch.input_ids, batch.attention_mask, last, position_ids=positions)


def _run_suffix(
    lm: LoadedModel, rec: Recorder, prefix_cache: Any, n_prefix: int, suffixes: Sequence[Sequence[int]]
) -> dict[str, torch.Tensor]:
    """Right-padded suffixes after the cached prefix; the last real token of row r is at ``len(r) - 1``."""
    width = max(len(s) for s in suffixes)
    rows = len(suffixes)
    ids = torch.full((rows, width), pad_id(lm), dtype=torch.long)
    mask = torch.zeros((rows, n_prefix + width), dtype=torch.long)
    mask[:, :n_prefix] = 1
    for r, seq in enumerate(suffixes):
        ids[r, : len(seq)] = torch.tensor(list(seq), dtype=torch.long)
        mask[r, n_prefix : n_prefix + len(seq)] = 1
    last = torch.tensor([len(s) - 1 for s in suffixes], device=lm.device)
    positions = (torch.arange(width) + n_prefix).expand(rows, width)
    cache = copy.deepcopy(prefix_cache)
    cache.batch_repeat_interleave(rows)
    return rec.run(
        ids.to(lm.device), mask.to(lm.device), last, position_ids=positions.to(lm.device), cache=cache
    )


@dataclass(frozen=True)
class CaptureOptions:
    """How prompts are turned into captures (shared by every caller of :func:`iter_captures`)."""

    batch_size: BatchSize = "auto"
    system_prompt: str | None = None
    chat: bool = True
    progress: bool = True
    reuse_prefix: bool = True


def iter_captures(
    lm: LoadedModel,
    prompt_sets: Sequence[Sequence[str]],
    kinds: Sequence[SiteKind] = (NEURONS,),
    options: CaptureOptions | None = None,
) -> Iterator[tuple[list[tuple[int, int]], dict[str, torch.Tensor]]]:
    """Capture the last prompt token's values for every prompt of every set.

    Yields ``(rows, values)`` per batch: ``rows[i] = (set index, prompt index)`` of row ``i``, and
    ``values[kind]`` is ``[batch, n_layers, width]`` float32 on the model's device.
    """
    opts = options or CaptureOptions()
    if not prompt_sets:
        raise PromptSetError("no prompt sets given")
    seqs: list[list[int]] = []
    owner: list[tuple[int, int]] = []
    for set_index, prompts in enumerate(prompt_sets):
        seqs.extend(encode(lm, prompts, system_prompt=opts.system_prompt, chat=opts.chat))
        owner.extend((set_index, i) for i in range(len(prompts)))
    n_prefix = shared_prefix(seqs) if opts.reuse_prefix else 0
    if n_prefix < MIN_PREFIX or not _prefix_supported(lm, max(len(s) for s in seqs)):
        n_prefix = 0
    batches = plan_batches([len(s) - n_prefix for s in seqs], opts.batch_size, lm.device)
    with (
        torch.inference_mode(),
        recording(lm, kinds) as rec,
        progress_bar(opts.progress, len(seqs), "capturing activations") as advance,
    ):
        cache = _prefix_cache(lm, rec, seqs[0][:n_prefix]) if n_prefix else None
        for idx in batches:
            if cache is not None:
                values = _run_suffix(lm, rec, cache, n_prefix, [seqs[i][n_prefix:] for i in idx])
            else:
                values = _run_plain(lm, rec, [seqs[i] for i in idx])
            yield [owner[i] for i in idx], values
            advance(len(idx))
    logger.info(
        "captured %d prompts in %d batches (shared prefix: %d tokens)", len(seqs), len(batches), n_prefix
    )


def collect_stats_many(
    lm: LoadedModel,
    prompt_sets: Sequence[Sequence[str]],
    kinds: Sequence[SiteKind] = (NEURONS,),
    options: CaptureOptions | None = None,
) -> list[dict[str, SiteStats]]:
    """Per prompt set, running statistics of every site kind (``{kind: SiteStats}``) at the last prompt
    token. The sets share the prefix pass and the length-sorted batches (fewer, fuller forward passes)."""
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
    """Every prompt's value of ``kind`` at its last token, ``[n_prompts, n_layers, width]`` float32 on the
    CPU, in prompt order."""
    width = lm.adapter.width(f"blocks.0.{kind}")
    out = torch.empty(len(prompts), lm.adapter.n_layers, width, dtype=torch.float32)
    for rows, values in iter_captures(lm, [prompts], (kind,), options):
        out[torch.tensor([i for _, i in rows])] = values[kind].cpu()
    return out
