"""Entry point: registers every command module and turns neurogate errors into clean messages."""

from __future__ import annotations

import sys

from neurogate.cli import chat, discover, experiments, export, info, models, steer, study, sweep
from neurogate.cli.app import app, err_console
from neurogate.errors import NeurogateError

COMMAND_MODULES = (info, models, discover, steer, export, chat, sweep, study, experiments)


def main() -> None:
    """Run the CLI; a :class:`NeurogateError` prints its message and exits with status 2."""
    try:
        app()
    except NeurogateError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]")
        sys.exit(130)


if __name__ == "__main__":
    main()
