"""``--threads``: one option on the root command and on every command, applied before a command runs.

The root option (``neurogate --threads 1 steer ...``) is remembered by the root callback; the option that
:class:`ThreadedGroup` adds to every command (``neurogate steer --threads 1 ...``) wins over it, and its
callback applies the result (:func:`neurogate.threads.configured`: the flag, then ``NEUROGATE_THREADS``,
then the settings file, then a plain ``OMP_NUM_THREADS``, then ``auto``) as the command's options are read,
before its body runs. Also the speed line commands print after generating.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

import typer
import typer.core
import typer.main

from neurogate import threads

logger = logging.getLogger(__name__)

HELP = (
    "CPU threads for the model: a whole number, or auto (the cores other processes leave idle; the "
    f"default). Also {threads.ENV} or `threads` in the settings file."
)


class _Root:
    """The root command's ``--threads`` of the running command line (one process, one command)."""

    value: str | None = None


def remember_root(value: str | None) -> None:
    """Keep the root ``--threads`` until the command's own option is read."""
    _Root.value = value


def _apply(value: str | None) -> str | None:
    flag = value if value is not None else _Root.value
    setting, source = threads.configured(flag)
    count = threads.set_threads(setting)
    logger.info("torch uses %d CPU thread(s) (threads=%s, from %s)", count, setting, source)
    return value


RootOpt = Annotated[str | None, typer.Option("--threads", help=HELP, show_default=False)]
_CommandOpt = Annotated[str | None, typer.Option("--threads", help=HELP, show_default=False, callback=_apply)]


def _prototype(threads: _CommandOpt = None) -> None:
    """Only its ``--threads`` parameter is used."""


def _command_option() -> Any:
    """The ``--threads`` parameter as typer builds it, taken off a one-option command; its value is not
    passed to the command functions (they do not take it)."""
    proto = typer.Typer()
    proto.command()(_prototype)
    param = typer.main.get_command(proto).params[0]
    param.expose_value = False
    return param


_PARAM = _command_option()


def _add_option(group: Any) -> None:
    for command in group.commands.values():
        if hasattr(command, "commands"):
            _add_option(command)
        elif not any(p.name == "threads" for p in command.params):
            command.params.append(_PARAM)


class ThreadedGroup(typer.core.TyperGroup):
    """A command group whose commands, nested ones too, all take ``--threads``."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        _add_option(self)


def torch_threads() -> int:
    """The CPU threads torch uses now (for the speed lines commands print)."""
    import torch  # here: importing the command line (its --help) does not load torch

    return int(torch.get_num_threads())


def speed(tokens: int, seconds: float) -> str:
    """A speed line for generated replies: ``"96 tokens in 8.1 s, 11.9 tok/s on 1 thread"``."""
    rate = tokens / seconds if seconds > 0 else 0.0
    count = torch_threads()
    pool = f"{count} thread" + ("s" if count != 1 else "")
    return f"{tokens} tokens in {seconds:.1f} s, {rate:.1f} tok/s on {pool}"
