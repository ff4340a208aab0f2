"""Atomic file writes: a file is written beside its target and renamed into place, so a crash or Ctrl-C
never leaves half a file where a later run would read it.

The temporary file is named ``.<target name>.<writer's pid>.<random>``. A writer killed outright
(SIGKILL, power loss) cannot remove its own, so the next write of the same target removes the siblings
whose writer is no longer running."""

from __future__ import annotations

import glob
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


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists, under another user
        return True
    return True


def remove_stale(target: Path) -> list[Path]:
    """Remove the temporary siblings of ``target`` left by writers that no longer run; return them."""
    removed = []
    for tmp in target.parent.glob(f".{glob.escape(target.name)}.*"):
        pid = tmp.name[len(target.name) + 2 :].split(".", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _running(int(pid)):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


@contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; when the block succeeds it replaces ``target`` (with the
    usual permissions for a new file), when it fails the temporary file is removed."""
    path = Path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", dir=path.parent)
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
