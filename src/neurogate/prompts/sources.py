"""Where a sweep or study takes its four prompt sets from, loaded and checked for leakage in one place."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from neurogate import settings
from neurogate.errors import ConfigError
from neurogate.prompts.leakage import NEAR_DUPLICATE, Leak, Policy, without_leaks
from neurogate.prompts.load import load
from neurogate.prompts.sets import PromptSet

SIDES = ("positive", "negative", "eval", "benign")


@dataclass(frozen=True)
class PromptSources:
    """The discovery sets (``positive``, ``negative``) and the evaluation sets (``eval``: harmful prompts
    whose refusal is measured; ``benign``: prompts for over-refusal and KL), each a spec for
    :func:`neurogate.prompts.load`, with optional limits (the first N prompts).

    ``leakage``: what happens to evaluation and benign prompts that match or nearly duplicate a discovery
    prompt (:mod:`neurogate.prompts.leakage`): ``"drop"`` them (the limits then count the prompts that are
    left), raise an ``"error"``, or ``"warn"`` and keep them. Both evaluation sets get the same check."""

    positive: str = "builtin:harmful"
    negative: str = "builtin:benign"
    eval: str = "builtin:harmful-eval"
    benign: str = "builtin:benign-eval"
    n_discovery: int | None = None
    n_eval: int | None = 100
    n_benign: int | None = 40
    leakage: Policy = "drop"

    def __post_init__(self) -> None:
        for name in ("n_discovery", "n_eval", "n_benign"):
            settings.whole(name, getattr(self, name), optional=True)
        if self.leakage not in ("drop", "error", "warn"):
            raise ConfigError(f"leakage must be 'drop', 'error' or 'warn', got {self.leakage!r}")

    def load(self) -> PromptSets:
        """Load all four sets and apply the leakage policy to the two evaluation sets."""
        discovery = [load(self.positive, limit=self.n_discovery), load(self.negative, limit=self.n_discovery)]
        harmful, harmful_leaks = without_leaks(discovery, load(self.eval), self.leakage)
        benign, benign_leaks = without_leaks(discovery, load(self.benign), self.leakage)
        return PromptSets(
            discovery[0],
            discovery[1],
            harmful.first(self.n_eval),
            benign.first(self.n_benign),
            leaks={"eval": harmful_leaks, "benign": benign_leaks},
            policy=self.leakage,
        )

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
    leaks: dict[str, list[Leak]] = field(default_factory=dict)
    policy: Policy = "drop"

    def describe(self) -> dict[str, dict[str, Any]]:
        """Name, count and content hash of each set."""
        return {side: getattr(self, side).describe() for side in SIDES}

    def digests(self) -> dict[str, str]:
        """The sha256 of each set's contents (what run ids and resume keys hash)."""
        return {side: getattr(self, side).sha256 for side in SIDES}

    def leakage_record(self) -> dict[str, Any]:
        """What the leakage check compared, what it found and what was done, worded as strictly as the
        check is (for the run's record and report)."""
        found = {
            side: [[leak.prompt, leak.twin, round(leak.similarity, 3)] for leak in leaks]
            for side, leaks in self.leaks.items()
        }
        return {
            "check": (
                "normalised (case, whitespace, punctuation) matches and near-duplicates (character "
                f"5-gram Jaccard or edit similarity >= {NEAR_DUPLICATE}, and no content word swapped for "
                "another) against every discovery prompt; "
                "paraphrases further apart are not detected"
            ),
            "policy": self.policy,
            "found": found,
            "discovery": [self.positive.describe(), self.negative.describe()],
        }
