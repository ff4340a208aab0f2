"""The prompt set: an immutable, named tuple of prompts with a content hash, so a circuit or a run can
record exactly which prompts it used."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

from neurogate.errors import PromptSetError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PromptSet:
    """A named, ordered, immutable set of prompts and where they came from."""

    name: str
    prompts: tuple[str, ...]
    source: str

    def __post_init__(self) -> None:
        if isinstance(self.prompts, str) or not isinstance(self.prompts, Sequence):
            raise PromptSetError(
                f"prompt set {self.name!r}: prompts must be a sequence of strings, got "
                f"{type(self.prompts).__name__}; pass e.g. ('first prompt', 'second prompt')"
            )
        prompts = tuple(self.prompts)
        check_strings(prompts, self.name)
        object.__setattr__(self, "prompts", prompts)

    def __len__(self) -> int:
        return len(self.prompts)

    def __iter__(self) -> Iterator[str]:
        return iter(self.prompts)

    @property
    def sha256(self) -> str:
        """Hex digest of the prompts joined with newlines (order-sensitive)."""
        return hashlib.sha256("\n".join(self.prompts).encode("utf-8")).hexdigest()

    def first(self, n: int | None) -> PromptSet:
        """The first ``n`` prompts (all of them when ``n`` is ``None`` or not smaller than the set)."""
        return self if n is None or n >= len(self) else replace(self, prompts=self.prompts[:n])

    def describe(self) -> dict[str, Any]:
        """The provenance a circuit records: ``{"name", "count", "sha256"}``."""
        return {"name": self.name, "count": len(self), "sha256": self.sha256}


def check_strings(prompts: Sequence[Any], where: str) -> None:
    for index, prompt in enumerate(prompts):
        if not isinstance(prompt, str):
            raise PromptSetError(
                f"{where}: prompt {index} is a {type(prompt).__name__} ({prompt!r:.60}), not a string; "
                "every prompt must be text"
            )


def clean(raw: Sequence[Any], where: str) -> tuple[str, ...]:
    """Strip each prompt and skip blank ones; refuse non-strings and an empty result."""
    check_strings(raw, where)
    prompts = tuple(p.strip() for p in raw if p.strip())
    if len(prompts) < len(raw):
        logger.debug("%s: skipped %d blank prompt(s)", where, len(raw) - len(prompts))
    if not prompts:
        raise PromptSetError(f"{where}: no prompts (empty, or only blank entries); add at least one prompt")
    return prompts
