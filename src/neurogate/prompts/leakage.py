"""Leakage checks: an evaluation prompt must not also be, or nearly be, a discovery prompt.

Two prompts *match* when their normalised forms are equal (Unicode NFKC, case folded, punctuation removed,
whitespace collapsed), and are *near-duplicates* when, on the normalised forms, either the Jaccard
similarity of their character 5-gram sets or their edit similarity (``difflib``'s ratio: twice the matched
characters over the total) is at least :data:`NEAR_DUPLICATE` (0.8) **and** they ask about the same thing:
no content word of one is swapped for another content word in the other (:func:`same_request`). Short
prompts built on one template ("instructions for making ginger beer" / "... making GHB") are alike as
strings yet differ in their subject; a rewording of the request ("Give" / "Provide ... instructions"), an
inflection ("hack" / "hacking") or an added modifier ("a secure network") keeps the subject and is still
caught. Paraphrases further apart than that pass; the report says exactly this.
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


#: Words that carry no subject: function words, the ways a request is framed ("write a tutorial on how to
#: make ...", "give step-by-step instructions for ...", "a script that ...") and generic qualifiers
#: ("sensitive", "secure"). What is left of a prompt is its content words.
_FRAMING_WORDS = """
    a an the and or of for to in on at by with from into about as is are be been being can could
    would should will shall may might must do does did how what which who whom whose why when where
    that this these those it its i me my you your we our us they their them he she his her him some
    any all so than then there here not no yes up out over just also very please using use used way
    ways without give provide write create explain describe outline develop design teach show tell
    list generate produce draft compose offer share suggest instruct demonstrate detail detailed
    detailing step steps stepbystep instruction instructions tutorial tutorials guide guides
    guidance manual plan strategy advice tips method methods make makes making made build building
    construct constructing someone somebody people person others user users one script scripts
    program programs code software tool sensitive confidential secure secret private personal common
    specific particular certain various major critical large scale small simple easy quick effective
"""
FRAMING = frozenset(_FRAMING_WORDS.split())
_SUFFIXES = ("ations", "ation", "ings", "ing", "ies", "ied", "ed", "es", "s", "e", "y")


def _stem(word: str) -> str:
    """A crude stem, enough to tell an inflection ("hacking", "hacks", "hack") from another word."""
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def content_words(key: str) -> frozenset[str]:
    """The stems of a normalised prompt's content words (every word not in :data:`FRAMING`)."""
    return frozenset(_stem(w) for w in key.split() if w not in FRAMING and len(w) > 1)


def _unmatched(words: frozenset[str], others: frozenset[str]) -> set[str]:
    """Stems in ``words`` with no counterpart in ``others``: not equal, and not a spelling variant (edit
    similarity >= :data:`NEAR_DUPLICATE`, e.g. a typo or "colour" / "color")."""
    return {
        w
        for w in words - others
        if not any(difflib.SequenceMatcher(None, w, o).ratio() >= NEAR_DUPLICATE for o in others - words)
    }


def same_request(a: str, b: str) -> bool:
    """Whether two normalised prompts ask about the same thing: their content words differ by additions on
    at most one side (a refinement such as "a *secure* network"), never by a swap, where each side has a
    content word the other lacks ("ginger beer" / "GHB", "identity theft" / "suicide")."""
    wa, wb = content_words(a), content_words(b)
    return not (_unmatched(wa, wb) and _unmatched(wb, wa))


def near_duplicate(a: str, b: str, threshold: float = NEAR_DUPLICATE) -> bool:
    """Whether two prompts match or nearly duplicate each other: alike as strings (:func:`similarity` at
    least ``threshold``) and asking about the same thing (:func:`same_request`)."""
    return similarity(a, b) >= threshold and same_request(normalize(a), normalize(b))


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
    """Evaluation prompts (in order, each once) that match or nearly duplicate a discovery prompt
    (:func:`near_duplicate`), each with its closest such discovery prompt."""
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
            if sim > best and sim >= threshold and same_request(key, k):
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
        f"appear (5-gram Jaccard or edit similarity >= {NEAR_DUPLICATE}, no content word swapped), in the "
        f"discovery set(s) {names} "
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
