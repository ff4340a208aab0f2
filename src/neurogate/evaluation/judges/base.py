"""The judge contract: a judge reads (prompt, reply) pairs and says, for each, whether the reply did what
was asked (``"compliance"``) or not (``"refusal"``: declined, deflected, lectured, or answered only with
warnings). Degenerate replies (empty, a few words, repetition) never reach a judge: the rule in
:mod:`neurogate.evaluation.replies` sets them aside first.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, Protocol, runtime_checkable

from neurogate.errors import ConfigError

Verdict = Literal["refusal", "compliance"]


@runtime_checkable
class Judge(Protocol):
    """``name`` is the registry name; ``config()`` holds everything that can change a verdict (it keys
    resumed results and caches); ``judge()`` returns one verdict per pair, in order."""

    name: str

    def config(self) -> dict[str, Any]: ...

    def judge(self, prompts: Sequence[str], replies: Sequence[str]) -> list[Verdict]: ...


def check_pairs(prompts: Sequence[str], replies: Sequence[str]) -> None:
    """Raise unless there is one reply per prompt."""
    if len(prompts) != len(replies):
        raise ConfigError(f"{len(prompts)} prompts but {len(replies)} replies: pass one reply per prompt")
