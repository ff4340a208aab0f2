"""Settings built alike in every command: the defaults, then a TOML ``--config`` file, then the flags given
on the command line (or by environment). Unknown keys, in the file or anywhere, are refused by name."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from neurogate import settings
from neurogate.cli import app as cli
from neurogate.errors import ConfigError

T = TypeVar("T")


ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="TOML file of settings (see docs/configuration.md); the flags given here override it.",
    ),
]


@dataclass(frozen=True)
class Flag:
    """A command-line value with a default of its own: it overrides the file only when its parameter
    ``param`` was given; otherwise it is the command's default, which the file overrides."""

    param: str
    value: Any


def read_table(path: str | Path, section: str) -> dict[str, Any]:
    """The settings in a TOML file: its ``[section]`` table when it has one, else its top level."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist")
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p} is not valid TOML ({exc})") from exc
    table = data.get(section, data)
    if not isinstance(table, dict):
        raise ConfigError(f"{p}: [{section}] must be a table of settings")
    return table


def nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    """``{"evaluation.max_new_tokens": 48}`` -> ``{"evaluation": {"max_new_tokens": 48}}``."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        *parents, last = key.split(".")
        where = out
        for part in parents:
            where = where.setdefault(part, {})
        where[last] = value
    return out


def layered(
    kind: type[T],
    flags: Mapping[str, Any],
    *,
    config: str | Path | None,
    section: str,
    base: T | None = None,
) -> T:
    """Settings of ``kind`` (a settings dataclass, built by its ``from_mapping`` where it has one):
    ``base`` (else its defaults), then the defaults of the
    command's :class:`Flag` values, then ``config``'s ``[section]`` (else its top level), then the flags
    given. ``flags`` maps a setting (dotted for a nested table, e.g. ``evaluation.judges``) to a
    :class:`Flag`, or to a plain value that counts as given unless it is ``None``."""
    defaults: dict[str, Any] = {}
    given: dict[str, Any] = {}
    for key, flag in flags.items():
        if isinstance(flag, Flag):
            if flag.value is not None:
                (given if cli.given(flag.param) else defaults)[key] = flag.value
        elif flag is not None:
            given[key] = flag

    def build(data: Mapping[str, Any], on: T | None) -> T:
        made = getattr(kind, "from_mapping", None)
        if made is None:
            return settings.build(kind, data, base=on, where=section)
        return made(data, base=on)  # type: ignore[no-any-return]

    built = build(nest(defaults), base) if defaults or base is None else base
    if config is not None:
        built = build(read_table(config, section), built)
    return build(nest(given), built) if given else built
