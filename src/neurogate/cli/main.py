"""Entry point: registers every command and turns neurogate errors into clean messages.

Commands register when their module is imported, so the imports below are in the order ``--help`` lists
them (pipeline order), not alphabetical.
"""

from __future__ import annotations

import sys

# isort: off
from neurogate.cli import info, models  # Models
from neurogate.cli import discover, steer, chat, export  # Find and steer a circuit
from neurogate.cli import study, sweep, tune, experiments  # Evaluate
from neurogate.cli import ui  # Explore

# isort: on
from neurogate.cli.app import app, err_console
from neurogate.errors import NeurogateError

COMMAND_MODULES = (info, models, discover, steer, chat, export, study, sweep, tune, experiments, ui)


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
