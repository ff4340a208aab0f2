"""Entry point: registers every command and turns neurogate errors into clean messages.

Commands register when their module is imported, so the imports below are in the order ``--help`` lists
them (pipeline order), not alphabetical.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import sys
import threading

from rich.markup import escape

# isort: off
from neurogate.cli import info, models  # Models
from neurogate.cli import discover, attribute, steer, chat, export, serve  # Find and steer a circuit
from neurogate.cli import study, sweep, tune, experiments, audit  # Evaluate
from neurogate.cli import ui  # Explore

# isort: on
from neurogate.cli.app import RunState, app, err_console
from neurogate.errors import NeurogateError

COMMAND_MODULES = (
    info, models, discover, attribute, steer, chat, export, serve, study, sweep, tune, experiments, audit,
    ui,
)


def _redeliver_lost_interrupt(unraisable: sys.UnraisableHookArgs) -> None:
    """Python drops an exception raised where it cannot propagate (a weakref or GC callback, such as
    importlib's module-lock cleanup) and prints it as "Exception ignored". A Ctrl-C landing there would be
    lost and the command would run on; send SIGINT again, a moment later, from a thread (sent from here,
    Python would run the handler at once, still inside the callback). If it lands in a callback again, this
    hook runs again, until it lands in ordinary code."""
    if unraisable.exc_type is not None and issubclass(unraisable.exc_type, KeyboardInterrupt):
        timer = threading.Timer(0.01, os.kill, args=(os.getpid(), signal.SIGINT))
        timer.daemon = True
        timer.start()
        return
    sys.__unraisablehook__(unraisable)


def main() -> None:
    """Run the CLI; a :class:`NeurogateError` prints its message and exits with status 2. A Ctrl-C that
    Python would drop inside a callback is delivered again (:func:`_redeliver_lost_interrupt`)."""
    sys.unraisablehook = _redeliver_lost_interrupt
    try:
        app()
    except NeurogateError as exc:
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print(interrupted_message(sys.argv[1:]), highlight=False, soft_wrap=True)
        sys.exit(130)
    except SystemExit as exc:  # typer turns Ctrl-C inside a command into a silent exit 130
        if exc.code == 130:
            err_console.print(interrupted_message(sys.argv[1:]), highlight=False, soft_wrap=True)
        raise


def entry() -> None:
    """The console script and ``python -m neurogate``: :func:`main`, then Ctrl-C ignored while Python shuts
    down. The command's work is saved by then; a late Ctrl-C would only make a finished run look killed."""
    try:
        main()
    finally:
        with contextlib.suppress(ValueError):  # not the main thread: nothing to change
            signal.signal(signal.SIGINT, signal.SIG_IGN)


def interrupted_message(argv: list[str]) -> str:
    """What Ctrl-C prints: where finished work was kept (or that nothing partial was written) and the
    command that resumes."""
    lines = ["[yellow]interrupted.[/]"]
    if RunState.saved:
        lines += [f"finished work is kept: {escape(where)}" for where in RunState.saved]
        lines.append(f"resume with the same command: neurogate {escape(shlex.join(argv))}")
    else:
        lines.append("nothing partial was written (neurogate writes each file whole, or not at all).")
        lines.append(f"run it again with: neurogate {escape(shlex.join(argv))}")
    return "\n".join(lines)


if __name__ == "__main__":
    entry()
