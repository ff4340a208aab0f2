"""Progress on stderr for long loops, shared by capture, generation, evaluation and the CLI: a rich bar on a
terminal, and plain lines where stderr is a log file or a pipe (a bar there is either silent for minutes or
dozens of redrawn lines)."""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.progress import Task as RichTask
from rich.text import Text

#: Seconds between two plain progress lines of one task (a new stage or the end is said at once).
INTERVAL = 30.0


def on_terminal() -> bool:
    """Whether stderr, where progress goes, is a terminal (a bar can redraw itself there)."""
    return sys.stderr.isatty()


def clock(seconds: float) -> str:
    """Elapsed time as ``m:ss`` or ``h:mm:ss``."""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def amount(completed: float, total: float | None, unit: str | None = None) -> str:
    """How far a task is, in its unit: ``3/12`` (no unit), ``1/2 packages``, ``412/1,040 MiB`` (``"bytes"``),
    or for a one-step task (``"step"``) nothing until it is ``done``."""
    if unit == "step":
        return "done" if total is not None and completed >= total else ""
    if unit == "bytes":
        scale = 2**20
        shown = f"{completed / scale:,.0f}" + (f"/{total / scale:,.0f}" if total else "")
        return f"{shown} MiB"
    count = f"{completed:g}/{total:g}" if total else (f"{completed:g}" if completed else "")
    return f"{count} {unit}" if unit and count else count


@dataclass
class _Task:
    description: str
    total: float | None
    unit: str | None = None
    completed: float = 0.0
    started: float = field(default_factory=time.monotonic)
    said: float = field(default_factory=time.monotonic)
    finished: bool = False


class PlainProgress:
    """The part of rich's :class:`~rich.progress.Progress` that neurogate uses (``add_task``, ``update``),
    written as plain lines on stderr: one when a task starts or its description changes, then at most one
    every ``interval`` seconds, and one when it completes, each with the count and the elapsed time."""

    def __init__(self, interval: float = INTERVAL) -> None:
        self.interval = interval
        self._tasks: list[_Task] = []

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def add_task(
        self, description: str, total: float | None = None, unit: str | None = None, **_: Any
    ) -> int:
        self._tasks.append(_Task(description, total, unit))
        self._say(self._tasks[-1])
        return len(self._tasks) - 1

    def update(
        self,
        task_id: int,
        *,
        advance: float | None = None,
        completed: float | None = None,
        total: float | None = None,
        description: str | None = None,
        **_: Any,
    ) -> None:
        task = self._tasks[task_id]
        renamed = description is not None and description != task.description
        if description is not None:
            task.description = description
        if total is not None:
            task.total = total
        if completed is not None:
            task.completed = completed
        if advance is not None:
            task.completed += advance
        done = task.total is not None and task.completed >= task.total
        if renamed or (done and not task.finished) or time.monotonic() - task.said >= self.interval:
            task.finished = done
            self._say(task)

    @staticmethod
    def _say(task: _Task) -> None:
        shown = amount(task.completed, task.total, task.unit)
        line = f"{task.description}{': ' + shown if shown else ''} ({clock(time.monotonic() - task.started)})"
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
        task.said = time.monotonic()


class AmountColumn(ProgressColumn):
    """A rich column showing :func:`amount` in each task's own ``unit`` (a task field), so one bar can
    count packages, bytes and a one-step conversion without calling them all bytes."""

    def render(self, task: RichTask) -> Text:
        return Text(amount(task.completed, task.total, task.fields.get("unit")), style="progress.download")


@contextmanager
def progress_bar(enabled: bool, total: int, label: str) -> Iterator[Callable[[int], None]]:
    """A transient rich progress bar on stderr (plain lines when stderr is not a terminal); yields
    ``advance(n)`` (a no-op when disabled)."""
    if not enabled:
        yield lambda _n: None
        return
    if not on_terminal():
        plain = PlainProgress()
        task = plain.add_task(label, total=total)
        yield lambda n: plain.update(task, advance=n)
        return
    with Progress(
        TextColumn(f"[bold]{label}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        rich_task = bar.add_task(label, total=total)
        yield lambda n: bar.update(rich_task, advance=n)


@contextmanager
def quiet_gguf_conversion() -> Iterator[None]:
    """Switch off transformers' own "Converting and de-quantizing GGUF tensors" bar (a plain tqdm, which
    neither its logging settings nor ours reach) while a GGUF is read, unless stderr is a terminal: in a
    log it is dozens of lines."""
    if on_terminal():
        yield
        return
    from transformers import modeling_gguf_pytorch_utils as gguf_reader

    drawn = gguf_reader.tqdm
    gguf_reader.tqdm = functools.partial(drawn, disable=True)
    try:
        yield
    finally:
        gguf_reader.tqdm = drawn
