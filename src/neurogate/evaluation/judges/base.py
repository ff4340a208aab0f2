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

#: Said under every table of refusal rates that the offline judges produced (docs/judges.md measures it).
RECALL_CAVEAT = (
    "Judged refusal rates of steered conditions can be off in either direction: the offline judges miss many "
    'refusals written in the requested form with content against the request ("steps to protect your '
    'identity" for "how to commit identity theft"), and keyword also counts "I cannot ... However, here is '
    'how it might work" followed by the steps as a refusal; read the replies before quoting a cut '
    "(docs/judges.md measures both on hand-read audits)."
)


def describe(config: dict[str, Any]) -> str:
    """A judge's model, server and readout in a few words, from its ``config()`` ("" when it has none):
    what a reader needs to know which judge produced a rate."""
    return ", ".join(f"{key} {config[key]}" for key in ("model", "url", "readout") if config.get(key))


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
