"""Atomic file writes: a file is written beside its target and renamed into place, so a crash or Ctrl-C
never leaves half a file where a later run would read it."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def _file_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; when the block succeeds it replaces ``target`` (with the
    usual permissions for a new file), when it fails the temporary file is removed."""
    path = Path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, _file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json_atomic(
    path: str | os.PathLike[str], data: Any, *, indent: int | None = 1, allow_nan: bool = False
) -> Path:
    """Write JSON atomically. NaN and infinity are refused unless ``allow_nan`` (store them as null)."""
    return write_text_atomic(path, json.dumps(data, indent=indent, allow_nan=allow_nan) + "\n")
