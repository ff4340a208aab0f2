"""The report's content as data: a section is notes and tables of formatted cells, rendered the same way to
Markdown and HTML by :mod:`neurogate.study.report`; and the conditions the report's tables list."""

from __future__ import annotations

from dataclasses import dataclass, field

from neurogate.study.results import StudyResults


@dataclass
class Table:
    """A table of already formatted cells, with an optional caption."""

    columns: list[str]
    rows: list[list[str]]
    caption: str = ""


@dataclass
class Section:
    """One report section: notes (one bullet each), tables and an optional code block."""

    title: str
    notes: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    code: str = ""


def headline_keys(r: StudyResults) -> list[str]:
    """The sweep's conditions, the given circuits, then the specificity controls."""
    sweep = [k for k in r.sweep if k in r.conditions]
    return sweep + [g.key for g in r.given_circuits] + [c.key for c in r.controls]
