"""What every settings dataclass shares: building it from a mapping (a TOML table, CLI flags) with unknown
keys refused by name, and the small checks its ``__post_init__`` runs once."""

from __future__ import annotations

import difflib
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import MISSING, asdict, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from neurogate.errors import ConfigError

T = TypeVar("T")
R = TypeVar("R", bound="Record")


class Record:
    """A dataclass result that saves as a plain dict and loads back from one."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload, no-any-return]

    @classmethod
    def from_dict(cls: type[R], data: Mapping[str, Any]) -> R:
        return cls(**data)


def build(cls: type[T], data: Mapping[str, Any], *, base: T | None = None, where: str = "settings") -> T:
    """``cls`` from ``data`` on top of ``base`` (or the defaults); unknown keys get a "did you mean"."""
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    for key in data:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"unknown {where} setting {key!r}{hint}; known: {', '.join(sorted(known))}")
    start = base if base is not None else None
    values = dict(data)
    for f in fields(cls):  # type: ignore[arg-type]
        current = getattr(start, f.name) if start is not None else _default(f)
        if f.name not in values or not is_dataclass(current) or isinstance(values[f.name], type(current)):
            continue
        if not isinstance(values[f.name], Mapping):
            raise ConfigError(
                f"{where}.{f.name} must be a table of settings (e.g. [{f.name}] in TOML), "
                f"got {values[f.name]!r:.60}"
            )
        values[f.name] = build(type(current), values[f.name], base=current, where=f"{where}.{f.name}")
    try:
        if start is not None:
            return replace(start, **values)  # type: ignore[type-var]
        return cls(**values)
    except TypeError as exc:
        raise ConfigError(f"invalid {where}: {exc}") from exc


def _default(f: Any) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return None


def to_dict(obj: Any) -> dict[str, Any]:
    """A settings dataclass as plain JSON-ready data (tuples become lists)."""
    if not is_dataclass(obj) or isinstance(obj, type):
        raise TypeError(f"not a dataclass instance: {obj!r}")
    return _plain(asdict(obj))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def whole(name: str, value: Any, *, minimum: int = 1, optional: bool = False) -> None:
    """Raise unless ``value`` is an int >= ``minimum`` (or ``None`` when ``optional``)."""
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be a whole number >= {minimum}, got {value!r}")


def number(
    name: str, value: Any, *, low: float | None = None, high: float | None = None, low_open: bool = False
) -> float:
    """Raise unless ``value`` is a finite number inside the bounds; return it as a float."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    if low is not None and (value <= low if low_open else value < low):
        raise ConfigError(f"{name} must be {'>' if low_open else '>='} {low:g}, got {value!r}")
    if high is not None and value > high:
        raise ConfigError(f"{name} must be <= {high:g}, got {value!r}")
    return float(value)


def as_tuple(name: str, value: Any) -> tuple[Any, ...]:
    """A list or tuple setting as a tuple; a bare string is refused (it is almost always a mistake)."""
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise ConfigError(f"{name} must be a list, got {value!r}")
    return tuple(value)


def digest(parts: Any, length: int = 12) -> str:
    """A short stable hash of JSON-ready ``parts`` (dataclasses allowed): the run ids and resume keys of
    sweeps and studies, so the same inputs always map to the same stored results."""
    data = _plain(asdict(parts)) if is_dataclass(parts) and not isinstance(parts, type) else parts
    blob = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def file_digest(path: str | Path) -> str:
    """The sha256 of a file's bytes (for run ids that must change when an input file changes)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
