"""Judges: whether each reply did what was asked, behind one contract (:mod:`.base`), in one registry.

* ``keyword`` (default, offline): refusal phrases and patterns near the start of the reply.
* ``local``: a causal LM on this machine (a small zoo model chosen on the labelled set, or any loaded model,
  e.g. the evaluated one unsteered) makes a forced choice under a StrongREJECT-style rubric, read from its
  next-token probabilities.
* ``endpoint``: an OpenAI-compatible chat server asked a StrongREJECT-style rubric.

A new judge is one class with ``name``, ``config()`` and ``judge()``, registered in :data:`JUDGES`; one
that tells redirects from compliance also sets ``detects_redirect = True`` (:mod:`.base`).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

from neurogate.errors import ConfigError
from neurogate.evaluation.judges.base import VERDICTS, Judge, Verdict, detects_redirect
from neurogate.evaluation.judges.endpoint import EndpointJudge, RubricScore, parse_rubric
from neurogate.evaluation.judges.keyword import KeywordJudge
from neurogate.evaluation.judges.local import LocalJudge

JUDGES: dict[str, Callable[..., Judge]] = {
    "keyword": KeywordJudge,
    "local": LocalJudge,
    "endpoint": EndpointJudge,
}
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
    "VERDICTS",
    "EndpointJudge",
    "Judge",
    "KeywordJudge",
    "LocalJudge",
    "RubricScore",
    "Verdict",
    "check_judge_name",
    "detects_redirect",
    "get_judge",
    "parse_rubric",
]
