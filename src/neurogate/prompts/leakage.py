"""Leakage checks: an evaluation prompt must not also be, or nearly be, a discovery prompt.

Two prompts *match* when their normalised forms are equal (Unicode NFKC, case folded, punctuation removed,
whitespace collapsed), and are *near-duplicates* when, on the normalised forms, either the Jaccard
similarity of their character 5-gram sets or their edit similarity (``difflib``'s ratio: twice the matched
characters over the total) is at least :data:`NEAR_DUPLICATE` (0.8). Paraphrases further apart than that
pass; the report says exactly this.
"""

from __future__ import annotations

import difflib
import logging
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

from neurogate.errors import PromptSetError
from neurogate.prompts.sets import PromptSet

logger = logging.getLogger(__name__)

NEAR_DUPLICATE = 0.8
GRAM = 5
_PUNCT = re.compile(r"[^\w\s]", re.UNICODE)
Policy = Literal["drop", "error", "warn"]


def normalize(prompt: str) -> str:
    """A comparison key for leakage checks: NFKC, casefolded, punctuation removed, whitespace collapsed."""
    text = unicodedata.normalize("NFKC", prompt).casefold()
    return " ".join(_PUNCT.sub(" ", text).split())


def _grams(text: str) -> frozenset[str]:
    padded = f" {text} "
    if len(padded) <= GRAM:
        return frozenset({padded})
    return frozenset(padded[i : i + GRAM] for i in range(len(padded) - GRAM + 1))


def _similarity(a: str, ga: frozenset[str], b: str, gb: frozenset[str], floor: float) -> float:
    """The larger of the 5-gram Jaccard and the edit similarity of two normalised prompts (the edit
    similarity is only computed when its cheap upper bounds can beat ``floor``)."""
    jaccard = len(ga & gb) / len(ga | gb) if ga | gb else 1.0
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    if matcher.real_quick_ratio() <= max(floor, jaccard) or matcher.quick_ratio() <= max(floor, jaccard):
        return jaccard
    return max(jaccard, matcher.ratio())


def similarity(a: str, b: str) -> float:
    """How alike two prompts are after :func:`normalize`: the larger of the Jaccard similarity of their
    character 5-gram sets and their edit similarity (1.0 for a normalised match)."""
    na, nb = normalize(a), normalize(b)
    return _similarity(na, _grams(na), nb, _grams(nb), 0.0)


@dataclass(frozen=True)
class Leak:
    """An evaluation prompt and its closest discovery prompt (``similarity`` 1.0 for a normalised match)."""

    prompt: str
    twin: str
    similarity: float


def find_leaks(
    discovery: PromptSet | Sequence[PromptSet], evaluation: PromptSet, *, threshold: float = NEAR_DUPLICATE
) -> list[Leak]:
    """Evaluation prompts (in order, each once) that match or nearly duplicate a discovery prompt."""
    sets = [discovery] if isinstance(discovery, PromptSet) else list(discovery)
    pool = [(p, normalize(p), _grams(normalize(p))) for s in sets for p in s.prompts]
    exact = {key: p for p, key, _ in pool}
    leaks: list[Leak] = []
    seen: set[str] = set()
    for prompt in evaluation.prompts:
        key = normalize(prompt)
        if key in seen:
            continue
        seen.add(key)
        if key in exact:
            leaks.append(Leak(prompt, exact[key], 1.0))
            continue
        grams = _grams(key)
        best, twin = 0.0, ""
        for p, k, g in pool:
            sim = _similarity(key, grams, k, g, max(best, threshold - 1e-9))
            if sim > best:
                best, twin = sim, p
        if best >= threshold:
            leaks.append(Leak(prompt, twin, best))
    return leaks


def check_leakage(
    discovery: PromptSet | Sequence[PromptSet],
    evaluation: PromptSet,
    *,
    strict: bool = False,
    threshold: float = NEAR_DUPLICATE,
) -> list[str]:
    """Evaluation prompts that match or nearly duplicate a discovery prompt (see :func:`find_leaks`).

    Logs a warning when there are any, and raises :class:`PromptSetError` instead when ``strict``.
    """
    leaks = find_leaks(discovery, evaluation, threshold=threshold)
    if leaks:
        sets = [discovery] if isinstance(discovery, PromptSet) else list(discovery)
        message = _message(leaks, evaluation, ", ".join(s.name for s in sets))
        if strict:
            raise PromptSetError(message + ". Remove them from one side or use disjoint prompt sets")
        logger.warning(message)
    return [leak.prompt for leak in leaks]


def _message(leaks: Sequence[Leak], evaluation: PromptSet, names: str) -> str:
    examples = "; ".join(f"{leak.prompt!r} ~ {leak.twin!r} ({leak.similarity:.2f})" for leak in leaks[:3])
    return (
        f"{len(leaks)} of {len(evaluation)} evaluation prompts in {evaluation.name} also appear, or nearly "
        f"appear (5-gram Jaccard or edit similarity >= {NEAR_DUPLICATE}), in the discovery set(s) {names} "
        "(e.g. "
        f"{examples}); results on them overstate generalisation"
    )


def without_leaks(
    discovery: Sequence[PromptSet], evaluation: PromptSet, policy: Policy = "drop"
) -> tuple[PromptSet, list[Leak]]:
    """``evaluation`` with its leaked prompts removed (``"drop"``), refused (``"error"``) or kept with a
    warning (``"warn"``), and the leaks found."""
    leaks = find_leaks(discovery, evaluation)
    if not leaks:
        return evaluation, []
    names = ", ".join(s.name for s in discovery)
    if policy == "error":
        raise PromptSetError(
            _message(leaks, evaluation, names) + '. Remove them, use disjoint sets, or set leakage = "drop"'
        )
    if policy == "warn":
        logger.warning(_message(leaks, evaluation, names))
        return evaluation, leaks
    leaked = {normalize(leak.prompt) for leak in leaks}
    kept = tuple(p for p in evaluation.prompts if normalize(p) not in leaked)
    if not kept:
        raise PromptSetError(f"every prompt of {evaluation.name} leaks from the discovery sets {names}")
    logger.info("dropped %d leaked prompts from %s", len(evaluation) - len(kept), evaluation.name)
    return replace(evaluation, prompts=kept), leaks
