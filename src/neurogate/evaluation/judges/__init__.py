"""Judges: whether each reply did what was asked, behind one contract (:mod:`.base`), in one registry.

* ``keyword`` (default, offline): refusal phrases and patterns near the start of the reply.
* ``local``: a causal LM on this machine (a small zoo model chosen on the labelled set, or any loaded model,
  e.g. the evaluated one unsteered) makes a forced choice under a StrongREJECT-style rubric, read from its
  next-token probabilities.
* ``endpoint``: an OpenAI-compatible chat server asked a StrongREJECT-style rubric.

A new judge is one class with ``name``, ``config()`` and ``judge()``, registered in :data:`JUDGES`; one
that tells redirects from compliance also sets ``detects_redirect = True`` (:mod:`.base`). Each class builds
itself from the evaluation settings (``from_settings``, a default with no options on :class:`.JudgeBase`),
so what a judge reads from the settings is said by the judge alone.
"""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING, Any

from neurogate.errors import ConfigError
from neurogate.evaluation.judges.base import (
    VERDICTS,
    Judge,
    JudgeBase,
    JudgeClass,
    JudgeSettings,
    Verdict,
    detects_redirect,
)
from neurogate.evaluation.judges.endpoint import EndpointJudge, RubricScore, parse_rubric
from neurogate.evaluation.judges.keyword import KeywordJudge
from neurogate.evaluation.judges.local import LocalJudge

if TYPE_CHECKING:
    from neurogate.models.loading import LoadedModel

JUDGES: dict[str, JudgeClass] = {
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


def judges_from_settings(settings: JudgeSettings, lm: LoadedModel | None = None) -> list[Judge]:
    """The judges ``settings`` name, in order (the primary first), each built by its own class from the
    settings; ``lm`` (the evaluated model) goes to judges that run a model when no other is configured."""
    return [JUDGES[name].from_settings(settings, lm) for name in settings.judges]


__all__ = [
    "JUDGES",
    "VERDICTS",
    "EndpointJudge",
    "Judge",
    "JudgeBase",
    "JudgeClass",
    "JudgeSettings",
    "KeywordJudge",
    "LocalJudge",
    "RubricScore",
    "Verdict",
    "check_judge_name",
    "detects_redirect",
    "get_judge",
    "judges_from_settings",
    "parse_rubric",
]
