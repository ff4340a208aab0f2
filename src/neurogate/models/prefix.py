"""The prefill port: a token prefix the rows share runs once, and the rows' own tokens run on top of a copy
of its key/value cache. Every pass over many chat-formatted prompts goes through it: the capture pass
(:mod:`neurogate.discovery.capture`), teacher forcing (:mod:`neurogate.evaluation.metrics`), greedy
generation (:mod:`neurogate.models.ragged`) and the local judge (:mod:`neurogate.evaluation.judges.local`).

Every chat-formatted prompt starts with the same tokens: the system turn and the user header (24 of the
~42 tokens of an AdvBench prompt on Qwen2.5). A batched forward pass would compute them once per row. The
steps, each one function:

- :func:`~neurogate.models.inputs.shared_prefix` counts the tokens every row starts with (at most a
  limit, always leaving each row a token of its own); :data:`MIN_PREFIX` is the shortest worth a pass
  (twice that for a prefix built for a single batch).
- :func:`reusable` says whether the model can take a prefix cache for rows of a given length (a long
  enough prefix, no sliding attention window shorter than prefix + rows, a forward that takes a cache).
- :func:`build_prefix` runs the prefix once (a single row) into a :class:`PrefixCache`. The capture pass
  and the local judge build one and keep it for all their batches.
- :func:`rows_on` makes one left-padded batch (:class:`Rows`) of full token sequences. With a prefix
  cache, only the tokens after the prefix go in, on a fresh copy of the cache repeated per row; the
  attention mask is the prefix's ones followed by the left-padded suffixes', and the position ids
  continue from the prefix, so each row sees exactly the tokens it would see in a plain pass. Without
  one, it is the plain left-padded batch. Either way every row's last token is the last column.
- :func:`forward` runs a batch through the model (or its decoder, for hidden states) and gives back the
  output with the mask and positions; the caller reads what it needs: logits (teacher forcing,
  generation, the judge's answer letters), the last hidden state (the judge's probe). The capture pass
  runs the same batches through its :class:`~neurogate.discovery.recorder.Recorder` instead.
- :func:`prefill` is the one-call form: the prefix built, used by one batch and dropped.

Interventions act per position, so they apply to the prefix pass as to any other. The prefix pass has one
row whatever the batch, so a row's numbers do not depend on which rows share its batch any more than with
plain left padding. Under per-row steering (:mod:`neurogate.models.row_gains`) the prefix's cache differs
between rows steered differently, so :func:`prefill` runs it once per distinct steering among the batch's
rows (one row each) and gives every row the copy of its own steering. Models whose cache cannot be
copied across rows, or whose sliding attention window is shorter than the rows, take the plain path.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from transformers import DynamicCache

from neurogate.models.inputs import left_padded, left_positions, shared_prefix
from neurogate.models.loading import LoadedModel

if TYPE_CHECKING:
    from neurogate.models.row_gains import RowGains

#: The shortest shared prefix worth a separate pass when its cache serves many batches (the capture pass,
#: the local judge). A prefix built for one batch (:func:`prefill`) pays for its pass alone, so it needs
#: twice this length (:func:`reusable`).
MIN_PREFIX = 4


@dataclass
class Prefilled:
    """A batch's forward output, with the full ``attention_mask`` (prefix included) and the suffix
    tokens' ``position_ids``, which later decoding steps extend."""

    output: Any
    attention_mask: torch.Tensor
    position_ids: torch.Tensor


@dataclass
class Rows:
    """One left-padded batch ready for a forward pass: ``input_ids`` (the tokens after the prefix when
    ``cache`` holds one), the full ``attention_mask`` (prefix included), ``position_ids``, and the
    key/value cache the rows run on (None: the plain path)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    cache: Any = None

    def kwargs(self, module: torch.nn.Module) -> dict[str, Any]:
        """Keyword arguments of ``module``'s forward over these rows (the cache under its keyword)."""
        out: dict[str, Any] = {
            "input_ids": self.input_ids,
            "attention_mask": self.attention_mask,
            "position_ids": self.position_ids,
        }
        if self.cache is not None:
            out["use_cache"] = True
            out[cache_kwarg(module)] = self.cache
        return out


@dataclass
class PrefixCache:
    """A prefix's token ``ids`` and the key/value cache of one row over them, built once
    (:func:`build_prefix`) and copied for every batch that runs on it (:func:`rows_on`)."""

    ids: list[int]
    cache: Any

    def __len__(self) -> int:
        return len(self.ids)

    def copy_for(self, rows: int, pick: torch.Tensor | None = None) -> Any:
        """A fresh copy of the cache with its row repeated ``rows`` times (the kept one stays intact); with
        ``pick`` (a cache of several variant rows), row ``r`` of the copy is variant ``pick[r]``."""
        cache = copy.deepcopy(self.cache)
        if pick is None:
            cache.batch_repeat_interleave(rows)
        else:
            cache.batch_select_indices(pick)
        return cache


#: Runs one batch's forward pass (:func:`build_prefix` takes one to run the prefix some other way).
Runner = Callable[[Rows], object]


def cache_of(output: Any) -> Any:
    """The key/value cache a forward pass returned (named ``cache`` or ``past_key_values``)."""
    for name in ("cache", "past_key_values"):
        found = getattr(output, name, None)
        if found is not None:
            return found
    return None


def cache_kwarg(model: torch.nn.Module) -> str:
    """The keyword the model's forward takes its key/value cache by (``cache`` in newer transformers)."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _window(lm: LoadedModel) -> int | None:
    """The model's sliding attention window, when it uses one."""
    cfg = lm.model.config
    text = cfg.get_text_config(decoder=True) if hasattr(cfg, "get_text_config") else cfg
    window = getattr(text, "sliding_window", None)
    if not isinstance(window, int) or window <= 0 or getattr(text, "use_sliding_window", True) is False:
        return None
    return window


def reusable(lm: LoadedModel, prefix: int, width: int, *, per_call: bool = False) -> bool:
    """Whether ``lm`` can run rows of up to ``width`` tokens of their own on the cache of a ``prefix``-token
    prefix: the prefix has at least :data:`MIN_PREFIX` tokens (twice that when ``per_call``: a cache built
    for one batch only), a sliding attention window (if any) covers ``prefix + width``, and the model's
    forward takes a cache. (Whether the cache can be copied across rows is known once it is built:
    :func:`build_prefix`.)"""
    if prefix < MIN_PREFIX * (2 if per_call else 1):
        return False
    window = _window(lm)
    if window is not None and prefix + width > window:
        return False
    params = inspect.signature(lm.model.forward).parameters
    return "cache" in params or "past_key_values" in params


@torch.no_grad()
def forward(
    lm: LoadedModel,
    rows: Rows,
    *,
    module: torch.nn.Module | None = None,
    use_cache: bool = False,
    logits_to_keep: int | None = None,
) -> Prefilled:
    """One forward pass of ``module`` over ``rows``: the model by default, its decoder
    (``lm.model.base_model``) to read hidden states without the output head. ``use_cache``: the plain path
    returns a cache too (rows on a prefix always do), for decoding steps; ``logits_to_keep``: only the last
    positions reach the output head, where the module supports it."""
    module = lm.model if module is None else module
    kwargs = {"use_cache": use_cache, **rows.kwargs(module)}
    if logits_to_keep is not None and "logits_to_keep" in inspect.signature(module.forward).parameters:
        kwargs["logits_to_keep"] = logits_to_keep
    return Prefilled(module(**kwargs), rows.attention_mask, rows.position_ids)


@torch.no_grad()
def build_prefix(
    lm: LoadedModel,
    ids: Sequence[int],
    *,
    module: torch.nn.Module | None = None,
    run: Runner | None = None,
    variants: int = 1,
) -> PrefixCache | None:
    """Run ``ids`` once (one row) and keep their key/value cache: through ``module`` (:func:`forward`,
    only the last position reaching an output head), or through ``run`` (e.g. a recorder's pass, which may
    stop once the last layer has filled its cache). None, noted once, when the model cannot fill a cache
    that copies across rows; its callers then run full sequences. ``variants``: the prefix runs as that many
    identical rows (one per distinct steering under per-row steering)."""
    ids = list(ids)
    try:
        cache = DynamicCache(config=lm.model.config)
        tokens = torch.tensor([ids] * variants, dtype=torch.long, device=lm.device)
        positions = torch.arange(len(ids), device=lm.device)[None].repeat(variants, 1)
        rows = Rows(tokens, torch.ones_like(tokens), positions, cache)
        if run is not None:
            run(rows)
        else:
            forward(lm, rows, module=module, logits_to_keep=1)
        if cache.get_seq_length() != len(ids):
            raise ValueError(f"cache holds {cache.get_seq_length()} positions, expected {len(ids)}")
        if not hasattr(cache, "batch_repeat_interleave"):
            raise NotImplementedError("the cache cannot be copied across rows")
    except (TypeError, ValueError, AttributeError, NotImplementedError, RuntimeError) as exc:
        lm.note_once(
            "no-prefix-cache", f"{lm.spec}: shared-prefix reuse is unavailable ({exc}); running full prompts"
        )
        return None
    return PrefixCache(ids, cache)


def rows_on(
    lm: LoadedModel,
    seqs: Sequence[Sequence[int]],
    prefix: PrefixCache | None = None,
    pick: torch.Tensor | None = None,
) -> Rows:
    """``seqs`` (full token id lists) as one left-padded batch on the model's device: with ``prefix``
    (which every sequence starts with, leaving a token after it), only the tokens after it, on a fresh
    copy of its cache (see the module docstring; ``pick``: each row's variant of a several-row prefix
    cache); without, the plain batch."""
    if prefix is None:
        batch = left_padded(lm, seqs)
        return Rows(batch.input_ids, batch.attention_mask, left_positions(batch.attention_mask))
    n = len(prefix)
    if any(len(s) <= n or list(s[:n]) != prefix.ids for s in seqs):
        raise ValueError("every sequence must start with the prefix and have a token after it")
    tails = left_padded(lm, [s[n:] for s in seqs])
    mask = torch.cat([tails.attention_mask.new_ones((len(seqs), n)), tails.attention_mask], dim=1)
    positions = left_positions(tails.attention_mask) + n
    return Rows(tails.input_ids, mask, positions, prefix.copy_for(len(seqs), pick))


def prefill(
    lm: LoadedModel,
    seqs: Sequence[Sequence[int]],
    *,
    prefix: int = 0,
    use_cache: bool = False,
    logits_to_keep: int | None = None,
    tables: RowGains | None = None,
) -> Prefilled:
    """One forward pass over ``seqs`` (token id lists), left-padded; with ``prefix`` (the length of a
    token prefix the rows may share, e.g. :func:`neurogate.models.inputs.template_prefix`), the part of it
    they do share is computed once (once per distinct steering of per-row ``tables``, bound to ``seqs``).
    ``logits_to_keep``: only the last positions reach the output head."""
    n = shared_prefix(seqs, prefix)
    head, pick = None, None
    if reusable(lm, n, max(len(s) for s in seqs) - n, per_call=True):
        if tables is None:
            head = build_prefix(lm, seqs[0][:n])
        else:
            bound = tables.bound
            variants, pick = tables.variants()
            tables.bind(variants)
            try:
                head = build_prefix(lm, seqs[0][:n], variants=len(variants))
            finally:
                tables.bind(bound)
            pick = pick.to(lm.device)
    rows = rows_on(lm, seqs, head, pick if head is not None else None)
    return forward(lm, rows, use_cache=use_cache, logits_to_keep=logits_to_keep)
