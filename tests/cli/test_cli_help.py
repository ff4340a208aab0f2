"""Help and tables read at 80 columns: no option, default or zoo name cut short, no type placeholder on
every row."""

from __future__ import annotations

import pytest
import typer.main
from typer.testing import CliRunner

from neurogate.cli.main import app
from neurogate.models import zoo

runner = CliRunner(env={"COLUMNS": "80", "TERMINAL_WIDTH": "80"})


def _commands() -> list[list[str]]:
    """Every command and subcommand, as the words that name it."""
    found: list[list[str]] = [[]]

    def walk(group: object, prefix: list[str]) -> None:
        for name, command in getattr(group, "commands", {}).items():
            if getattr(command, "hidden", False):
                continue
            found.append([*prefix, name])
            walk(command, [*prefix, name])

    walk(typer.main.get_command(app), [])
    return found


@pytest.mark.parametrize("words", _commands(), ids=lambda words: " ".join(words) or "neurogate")
def test_help_fits_80_columns_without_cutting_anything(words: list[str]) -> None:
    result = runner.invoke(app, [*words, "--help"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert "…" not in result.stdout, result.stdout
    options = [line for line in lines if line.lstrip("│ *").startswith("-")]
    assert options and not [line for line in options if "<" in line]  # no <bool>, <str>, ... on options


def test_models_list_shows_every_name_whole_at_80_columns() -> None:
    result = runner.invoke(app, ["models", "list"])
    assert result.exit_code == 0, result.output
    assert max(len(line) for line in result.stdout.splitlines()) <= 80
    for name in zoo.ZOO:
        assert f"zoo:{name}" in result.stdout
    assert "…" not in result.stdout
