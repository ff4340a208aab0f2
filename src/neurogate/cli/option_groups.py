"""Options declared once and shared by several commands: :func:`option_group` gives a command the options
of one function's signature in place of a single parameter, and calls the command with what that function
makes of them (a dataclass of the group's values)."""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


def option_group(param: str, make: Callable[..., Any]) -> Callable[[F], F]:
    """A decorator that replaces a command's ``param`` parameter with ``make``'s parameters (typer reads
    their options off ``make``'s signature; they appear at that place in the command's help) and calls the
    command with ``param=make(**those options)``."""
    group = inspect.signature(make).parameters
    group_hints = typing.get_type_hints(make, include_extras=True)

    def decorate(command: F) -> F:
        signature = inspect.signature(command)
        hints = typing.get_type_hints(command, include_extras=True)
        if param not in signature.parameters:
            raise TypeError(f"{command.__name__} takes no {param!r} parameter")
        params: list[inspect.Parameter] = []
        for name, p in signature.parameters.items():
            if name != param:
                params.append(p.replace(annotation=hints.get(name, p.annotation)))
                continue
            clash = set(group) & set(signature.parameters)
            if clash:
                raise TypeError(f"{command.__name__} already has the {param} parameter(s) {', '.join(clash)}")
            params += [g.replace(annotation=group_hints[n]) for n, g in group.items()]

        @functools.wraps(command)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            values = {name: kwargs.pop(name) for name in group if name in kwargs}
            return command(*args, **{param: make(**values)}, **kwargs)

        del wrapper.__wrapped__  # typer reads the signature below, not the command's own
        returns = hints.get("return", signature.return_annotation)
        wrapper.__signature__ = signature.replace(  # type: ignore[attr-defined]
            parameters=params, return_annotation=returns
        )
        wrapper.__annotations__ = {**{p.name: p.annotation for p in params}, "return": returns}
        return typing.cast(F, wrapper)

    return decorate
