"""Judges: whether each reply did what was asked, behind one contract (:mod:`.base`), in one registry.

* ``keyword`` (default, offline): refusal phrases and patterns near the start of the reply.
* ``endpoint``: an OpenAI-compatible chat server asked a StrongREJECT-style rubric.

A new judge is one class with ``name``, ``config()`` and ``judge()``, registered in :data:`JUDGES`.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

from neurogate.errors import ConfigError
from neurogate.evaluation.judges.base import Judge, Verdict
from neurogate.evaluation.judges.endpoint import EndpointJudge, RubricScore, parse_rubric
from neurogate.evaluation.judges.keyword import KeywordJudge

JUDGES: dict[str, Callable[..., Judge]] = {"keyword": KeywordJudge, "endpoint": EndpointJudge}
RENAMED = {"llm": "endpoint"}


def check_judge_name(name: str) -> None:
    """Raise :class:`ConfigError` unless ``name`` is a registered judge (a "did you mean" for typos)."""
    if name in RENAMED:
        raise ConfigError(f"the {name!r} judge is now called {RENAMED[name]!r}; use --judge {RENAMED[name]}")
    factory = JUDGES.get(name)
    if factory is None:
        close = difflib.get_close_matches(name, JUDGES, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown judge {name!r}; choose from {', '.join(JUDGES)}.{hint}")


def get_judge(name: str = "keyword", **options: Any) -> Judge:
    """Build a judge by name; unknown names get a "did you mean" hint."""
    check_judge_name(name)
    return JUDGES[name](**options)


__all__ = [
    "JUDGES",
    "EndpointJudge",
    "Judge",
    "KeywordJudge",
    "RubricScore",
    "Verdict",
    "check_judge_name",
    "get_judge",
    "parse_rubric",
]
