"""Where a sweep or study takes its four prompt sets from, loaded and checked for leakage in one place."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from neurogate import settings
from neurogate.prompts.leakage import check_leakage
from neurogate.prompts.load import load
from neurogate.prompts.sets import PromptSet

SIDES = ("positive", "negative", "eval", "benign")


@dataclass(frozen=True)
class PromptSources:
    """The discovery sets (``positive``, ``negative``) and the evaluation sets (``eval``: harmful prompts
    whose refusal is measured; ``benign``: prompts for over-refusal and KL), each a spec for
    :func:`neurogate.prompts.load`, with optional limits (the first N prompts)."""

    positive: str = "builtin:harmful"
    negative: str = "builtin:benign"
    eval: str = "builtin:harmful-eval"
    benign: str = "builtin:benign-eval"
    n_discovery: int | None = None
    n_eval: int | None = 100
    n_benign: int | None = 40

    def __post_init__(self) -> None:
        for name in ("n_discovery", "n_eval", "n_benign"):
            settings.whole(name, getattr(self, name), optional=True)

    def load(self) -> PromptSets:
        """Load all four sets; evaluation prompts found in a discovery set are an error (strict), benign
        ones a warning."""
        sets = PromptSets(
            load(self.positive, limit=self.n_discovery),
            load(self.negative, limit=self.n_discovery),
            load(self.eval, limit=self.n_eval),
            load(self.benign, limit=self.n_benign),
        )
        check_leakage([sets.positive, sets.negative], sets.eval, strict=True)
        check_leakage([sets.positive, sets.negative], sets.benign)
        return sets

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, base: PromptSources | None = None) -> PromptSources:
        return settings.build(cls, data, base=base, where="prompts")


@dataclass(frozen=True)
class PromptSets:
    """The four loaded prompt sets of a run."""

    positive: PromptSet
    negative: PromptSet
    eval: PromptSet
    benign: PromptSet

    def describe(self) -> dict[str, dict[str, Any]]:
        """Name, count and content hash of each set."""
        return {side: getattr(self, side).describe() for side in SIDES}

    def digests(self) -> dict[str, str]:
        """The sha256 of each set's contents (what run ids and resume keys hash)."""
        return {side: getattr(self, side).sha256 for side in SIDES}
