"""The judge options, declared once: :func:`judge_options` gives a command that judges replies every judge
option with the same help and hands it one :class:`JudgeOptions`, which yields :class:`EvalSettings` fields.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

import typer

from neurogate.defaults import DEFAULT_JUDGE_MODEL
from neurogate.errors import ConfigError

F = TypeVar("F", bound=Callable[..., Any])


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


_GROUP = inspect.signature(_options).parameters
_GROUP_HINTS = typing.get_type_hints(_options, include_extras=True)


def judge_options(command: F) -> F:
    """Give ``command`` the judge options in place of its ``judging: JudgeOptions = NO_JUDGE_OPTIONS``
    parameter (at that place in its help) and call it with the :class:`JudgeOptions` they make."""
    signature = inspect.signature(command)
    hints = typing.get_type_hints(command, include_extras=True)
    if "judging" not in signature.parameters:
        raise TypeError(f"{command.__name__} takes no 'judging' parameter")
    params: list[inspect.Parameter] = []
    for name, param in signature.parameters.items():
        if name != "judging":
            params.append(param.replace(annotation=hints.get(name, param.annotation)))
            continue
        clash = set(_GROUP) & set(signature.parameters)
        if clash:
            raise TypeError(f"{command.__name__} already has the judge parameter(s) {', '.join(clash)}")
        params += [p.replace(annotation=_GROUP_HINTS[n]) for n, p in _GROUP.items()]

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        group = {name: kwargs.pop(name) for name in _GROUP if name in kwargs}
        return command(*args, judging=_options(**group), **kwargs)

    del wrapper.__wrapped__  # typer reads the signature below, not the command's own
    returns = hints.get("return", signature.return_annotation)
    wrapper.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=params, return_annotation=returns
    )
    wrapper.__annotations__ = {**{p.name: p.annotation for p in params}, "return": returns}
    return typing.cast(F, wrapper)
