"""Prefill with a shared prompt prefix computed once.

Every chat-formatted prompt starts with the same tokens: the system turn and the user header (24 of the
~42 tokens of an AdvBench prompt on Qwen2.5). A batched forward pass would compute them once per row.
:func:`prefill` runs them once (a single row), copies their key/value cache to every row, and runs only
the rows' own tokens on top: their attention mask is the prefix's ones followed by the left-padded
suffixes, and their position ids continue from the prefix, so each row sees exactly the tokens it would
see in a plain pass. Interventions act per position, so they apply to the prefix pass as to any other.

The prefix pass has one row whatever the batch, so a row's numbers do not depend on which rows share its
batch any more than with plain left padding. Models whose cache cannot be copied across rows, or whose
sliding attention window is shorter than the batch, take the plain path.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from neurogate.models.inputs import left_padded, left_positions, shared_prefix
from neurogate.models.loading import LoadedModel

#: Shorter shared prefixes are not worth a separate pass.
MIN_PREFIX = 8


@dataclass
class Prefilled:
    """A batch's forward output, with the full ``attention_mask`` (prefix included) and the suffix
    tokens' ``position_ids``, which later decoding steps extend."""

    output: Any
    attention_mask: torch.Tensor
    position_ids: torch.Tensor


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
    if not isinstance(window, int) or getattr(text, "use_sliding_window", True) is False:
        return None
    return window


def _usable(lm: LoadedModel, prefix: int, width: int) -> bool:
    window = _window(lm)
    return prefix >= MIN_PREFIX and (window is None or prefix + width <= window)


@torch.no_grad()
def prefill(
    lm: LoadedModel,
    seqs: Sequence[Sequence[int]],
    *,
    prefix: int = 0,
    use_cache: bool = False,
    logits_to_keep: int | None = None,
) -> Prefilled:
    """One forward pass over ``seqs`` (token id lists), left-padded; with ``prefix`` (the length of a
    token prefix the rows may share, e.g. :func:`neurogate.models.inputs.template_prefix`), the part of it
    they do share is computed once. ``logits_to_keep``: only the last positions reach the output head."""
    extra: dict[str, Any] = {}
    if logits_to_keep is not None and "logits_to_keep" in inspect.signature(lm.model.forward).parameters:
        extra["logits_to_keep"] = logits_to_keep
    n = shared_prefix(seqs, prefix)
    if n and _usable(lm, n, max(len(s) for s in seqs) - n):
        head = lm.model(input_ids=torch.tensor([list(seqs[0][:n])], device=lm.device), use_cache=True)
        cache = cache_of(head)
        if cache is not None and hasattr(cache, "batch_repeat_interleave"):
            cache.batch_repeat_interleave(len(seqs))
            tails = left_padded(lm, [s[n:] for s in seqs])
            ones = tails.attention_mask.new_ones((len(seqs), n))
            mask = torch.cat([ones, tails.attention_mask], dim=1)
            positions = left_positions(tails.attention_mask) + n
            out = lm.model(
                input_ids=tails.input_ids,
                attention_mask=mask,
                position_ids=positions,
                use_cache=True,
                **{cache_kwarg(lm.model): cache},
                **extra,
            )
            return Prefilled(out, mask, positions)
    batch = left_padded(lm, seqs)
    positions = left_positions(batch.attention_mask)
    out = lm.model(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        position_ids=positions,
        use_cache=use_cache,
        **extra,
    )
    return Prefilled(out, batch.attention_mask, positions)
