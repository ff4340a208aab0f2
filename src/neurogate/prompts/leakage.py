"""Leakage checks: evaluation prompts must not also be discovery prompts."""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import Sequence

from neurogate.errors import PromptSetError
from neurogate.prompts.sets import PromptSet

logger = logging.getLogger(__name__)


def normalize(prompt: str) -> str:
    """A comparison key for leakage checks: Unicode NFKC, casefolded, whitespace collapsed and stripped."""
    return " ".join(unicodedata.normalize("NFKC", prompt).casefold().split())


def check_leakage(
    discovery: PromptSet | Sequence[PromptSet], evaluation: PromptSet, *, strict: bool = False
) -> list[str]:
    """Evaluation prompts that also occur (after :func:`normalize`) in the discovery set(s).

    Returns them in evaluation order, each once; logs a warning when there are any, and raises
    :class:`PromptSetError` instead when ``strict``.
    """
    sets = [discovery] if isinstance(discovery, PromptSet) else list(discovery)
    seen = {normalize(p) for s in sets for p in s.prompts}
    shared: list[str] = []
    reported: set[str] = set()
    for prompt in evaluation.prompts:
        key = normalize(prompt)
        if key in seen and key not in reported:
            reported.add(key)
            shared.append(prompt)
    if shared:
        names = ", ".join(s.name for s in sets)
        examples = "; ".join(repr(p) for p in shared[:3])
        message = (
            f"{len(shared)} of {len(evaluation)} evaluation prompts in {evaluation.name} also appear in the "
            f"discovery set(s) {names} (e.g. {examples}); results on them overstate generalisation"
        )
        if strict:
            raise PromptSetError(message + ". Remove them from one side or use disjoint prompt sets")
        logger.warning(message)
    return shared
