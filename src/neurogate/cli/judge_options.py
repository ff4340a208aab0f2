"""The judge options, declared once: :func:`judge_options` gives a command that judges replies every judge
option with the same help and hands it one :class:`JudgeOptions`, which yields :class:`EvalSettings` fields.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import typer

from neurogate.cli.option_groups import F, option_group
from neurogate.defaults import DEFAULT_JUDGE_MODEL
from neurogate.errors import ConfigError


@dataclass(frozen=True)
class JudgeOptions:
    """The judge options of one command line; ``None`` (or no judges) where an option was not given."""

    judges: tuple[str, ...] = ()
    local_judge_model: str | None = None
    local_judge_rubric: str | None = None
    endpoint_url: str | None = None
    endpoint_model: str | None = None

    def settings(self) -> dict[str, Any]:
        """The :class:`EvalSettings` fields these options set (the settings' own defaults stand for the
        rest)."""
        out: dict[str, Any] = {"judges": self.judges} if self.judges else {}
        given = {
            "local_judge_model": self.local_judge_model,
            "local_judge_rubric": self.local_judge_rubric,
            "endpoint_url": self.endpoint_url,
            "endpoint_model": self.endpoint_model,
        }
        out.update({k: v for k, v in given.items() if v is not None})
        return out


#: What a command's ``judging`` parameter defaults to (the decorator always passes the options given).
NO_JUDGE_OPTIONS = JudgeOptions()


def judge_names(given: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Judge names from repeated and/or comma-separated options (``--judge keyword,local``)."""
    return tuple(n.strip() for item in given for n in item.split(",") if n.strip())


def _options(
    judge: Annotated[
        list[str] | None,
        typer.Option(
            "--judge",
            help="Judge(s): keyword (offline, instant), local (a local model reads each reply), endpoint (an "
            "OpenAI-compatible server). Repeat or comma-separate; the first gives the headline numbers.",
        ),
    ] = None,
    local_judge_model: Annotated[
        str | None,
        typer.Option(
            "--local-judge-model",
            help=f"Model the local judge runs (default: {DEFAULT_JUDGE_MODEL}, read through a probe fitted "
            "on hand-labelled replies; another model is read through its answer letters; see "
            "docs/judges.md).",
        ),
    ] = None,
    local_judge_rubric: Annotated[
        str | None,
        typer.Option(
            "--local-judge-rubric",
            help="What the local judge asks: attempt (was the task attempted; the default) or serves (does "
            "the reply's content serve the request; also tells redirects apart; see docs/judges.md).",
        ),
    ] = None,
    endpoint_url: Annotated[
        str | None, typer.Option("--endpoint-url", help="Endpoint judge: base URL (or NEUROGATE_JUDGE_URL).")
    ] = None,
    endpoint_model: Annotated[
        str | None,
        typer.Option("--endpoint-model", help="Endpoint judge: model name (or NEUROGATE_JUDGE_MODEL)."),
    ] = None,
    judge_url: Annotated[str | None, typer.Option("--judge-url", hidden=True)] = None,
    judge_model: Annotated[str | None, typer.Option("--judge-model", hidden=True)] = None,
) -> JudgeOptions:
    """The group's parameters (typer reads them off this signature) and what they make."""
    if judge_url is not None:
        raise ConfigError("--judge-url is now --endpoint-url (the 'llm' judge is now called 'endpoint')")
    if judge_model is not None:
        raise ConfigError("--judge-model is now --endpoint-model (the 'llm' judge is now called 'endpoint')")
    return JudgeOptions(
        judges=judge_names(judge or []),
        local_judge_model=local_judge_model,
        local_judge_rubric=local_judge_rubric,
        endpoint_url=endpoint_url,
        endpoint_model=endpoint_model,
    )


_JUDGE_GROUP = option_group("judging", _options)


def judge_options(command: F) -> F:
    """Give ``command`` the judge options in place of its ``judging: JudgeOptions = NO_JUDGE_OPTIONS``
    parameter (at that place in its help) and call it with the :class:`JudgeOptions` they make."""
    return _JUDGE_GROUP(command)
