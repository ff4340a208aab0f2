"""The universal-neuron filter: neurons that top the ranking for almost any contrast steer nothing specific.

For each contrast of a battery of unrelated, harmless prompt pairs, the top ``fraction`` of neurons by
mean difference is computed; a neuron in that top set for at least ``threshold`` of the contrasts is
*universal*, and :func:`neurogate.discovery.discover` leaves it out of every circuit.

The set depends only on the model, the battery and the two parameters, so it is computed once and cached
on disk under ``neurogate.paths.cache_dir("universal")`` (and in memory for the life of the process).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from neurogate import prompts as prompt_sets
from neurogate.atomic import write_json_atomic
from neurogate.discovery.capture import CaptureOptions, collect_stats_many
from neurogate.discovery.scoring import score_neurons
from neurogate.discovery.selection import DEFAULT_FRACTION, select_top, top_count
from neurogate.errors import ConfigError
from neurogate.models.loading import LoadedModel, shape_digest, weights_digest
from neurogate.paths import cache_dir
from neurogate.prompts import PromptSet

logger = logging.getLogger(__name__)

KIND = "neurogate.universal"
VERSION = 1
MIN_CONTRASTS = 10
BatteryContrast = tuple[str, PromptSet | Sequence[str], PromptSet | Sequence[str]]
"""A battery contrast as a user may give it: a name and two prompt sets (or lists of prompts)."""

_MEMO: dict[str, frozenset[tuple[int, int]]] = {}


def clear_memo() -> None:
    """Forget the in-process results (the disk cache stays)."""
    _MEMO.clear()


def _battery_digest(
    contrasts: Sequence[tuple[str, PromptSet, PromptSet]], chat: bool, system: str | None
) -> str:
    blob = json.dumps(
        [[name, pos.sha256, neg.sha256] for name, pos, neg in contrasts] + [chat, system], sort_keys=True
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def cache_path(
    lm: LoadedModel,
    contrasts: Sequence[tuple[str, PromptSet, PromptSet]],
    fraction: float,
    threshold: float,
    options: CaptureOptions,
) -> Path:
    """Where the universal set of this model, battery and parameters is cached."""
    spec = hashlib.sha256(lm.spec.encode()).hexdigest()[:8]
    name = (
        f"{shape_digest(lm.shape)}-{spec}-{weights_digest(lm)}-"
        f"{_battery_digest(contrasts, options.chat, options.system_prompt)}-f{fraction:g}-t{threshold:g}"
        f"{'-after-thinking' if options.close_thinking else ''}.json"
    )
    return cache_dir("universal") / name


def _resolve_battery(battery: Sequence[BatteryContrast] | None) -> list[tuple[str, PromptSet, PromptSet]]:
    raw = prompt_sets.battery() if battery is None else list(battery)
    out = []
    for name, pos, neg in raw:
        out.append(
            (
                str(name),
                prompt_sets.load(pos, name=f"{name}:positive"),
                prompt_sets.load(neg, name=f"{name}:negative"),
            )
        )
    if len(out) < 2:
        raise ConfigError(f"the universal-neuron battery needs at least 2 contrasts (got {len(out)})")
    if len(out) < MIN_CONTRASTS:
        logger.warning(
            "the universal-neuron battery has only %d contrasts (%d or more recommended)",
            len(out),
            MIN_CONTRASTS,
        )
    return out


def _read(path: Path) -> frozenset[tuple[int, int]] | None:
    try:
        data = json.loads(path.read_text())
        if data.get("kind") != KIND or data.get("version") != VERSION:
            raise ValueError("unknown kind or version")
        return frozenset((int(layer), int(index)) for layer, index in data["neurons"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        logger.warning("ignoring the unreadable universal-neuron cache %s (%s); recomputing", path, exc)
        return None


def _write(path: Path, payload: dict[str, Any]) -> None:
    write_json_atomic(path, payload, allow_nan=True)


def universal_neurons(
    lm: LoadedModel,
    *,
    fraction: float = DEFAULT_FRACTION,
    threshold: float = 0.8,
    battery: Sequence[BatteryContrast] | None = None,
    options: CaptureOptions | None = None,
    use_cache: bool = True,
) -> set[tuple[int, int]]:
    """The ``(layer, index)`` of the neurons in the top ``fraction`` for at least ``threshold`` of the
    battery's contrasts (default battery: :func:`neurogate.prompts.battery`). Cached per model, battery,
    parameters and prompt formatting (``options.chat``, ``options.system_prompt``)."""
    if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not 0.0 < threshold <= 1.0:
        raise ConfigError(
            f"the universal threshold must be in (0, 1] (0.8 = 80% of contrasts), got {threshold!r}"
        )
    top_count(lm.adapter.n_neurons, fraction=fraction)
    opts = options or CaptureOptions()
    contrasts = _resolve_battery(battery)
    path = cache_path(lm, contrasts, fraction, threshold, opts)
    key = str(path)
    if use_cache:
        if key in _MEMO:
            return set(_MEMO[key])
        cached = _read(path)
        if cached is not None:
            logger.info("universal neurons read from %s", path)
            _MEMO[key] = cached
            return set(cached)
    counts = _count_tops(lm, contrasts, fraction, opts)
    need = threshold * len(contrasts)
    found = frozenset(n for n, c in counts.items() if c >= need - 1e-9)
    _MEMO[key] = found
    _write(
        path,
        {
            "kind": KIND,
            "version": VERSION,
            "model": {"spec": lm.spec, "shape": lm.shape},
            "fraction": fraction,
            "threshold": threshold,
            "contrasts": [name for name, _, _ in contrasts],
            "neurons": sorted([list(n) for n in found]),
            "counts": sorted([[layer, index, c] for (layer, index), c in counts.items()]),
        },
    )
    logger.info(
        "found %d universal neurons over %d contrasts; cached at %s", len(found), len(contrasts), path
    )
    return set(found)


def _count_tops(
    lm: LoadedModel,
    contrasts: Sequence[tuple[str, PromptSet, PromptSet]],
    fraction: float,
    options: CaptureOptions,
) -> Counter[tuple[int, int]]:
    """How many contrasts put each neuron in their top ``fraction`` (by mean difference).

    Every distinct prompt set of the battery goes through the model once, all in one batched pass.
    """
    unique: dict[str, PromptSet] = {}
    for _name, pos, neg in contrasts:
        unique.setdefault(pos.sha256, pos)
        unique.setdefault(neg.sha256, neg)
    all_stats = collect_stats_many(lm, [ps.prompts for ps in unique.values()], options=options)
    by_hash = {key: stats["mlp.post"] for key, stats in zip(unique, all_stats, strict=True)}
    counts: Counter[tuple[int, int]] = Counter()
    for _name, pos, neg in contrasts:
        scores, _diff = score_neurons(by_hash[pos.sha256], by_hash[neg.sha256], "mean-diff")
        counts.update(select_top(scores, fraction=fraction))
    return counts
