"""The command line's help loads no torch and no transformers (so ``neurogate --help`` answers at once):
every command module imports only light things, and help texts read their defaults from light modules."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import sys
import typer.main
from typer.testing import CliRunner
from neurogate.cli.main import app

def walk(group, prefix):
    yield prefix
    for name, command in getattr(group, "commands", {}).items():
        yield from walk(command, [*prefix, name])

runner = CliRunner()
for words in walk(typer.main.get_command(app), []):
    result = runner.invoke(app, [*words, "--help"])
    assert result.exit_code == 0, (words, result.output)
heavy = sorted(m for m in ("torch", "transformers", "safetensors", "numpy") if m in sys.modules)
print(" ".join(heavy) or "light")
"""


def test_help_of_every_command_loads_no_torch() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "light", f"--help imported {done.stdout.strip()}"
