"""Integrity records of converted zoo models: what was written at pull time, and checks against it.

A record holds, for every file of a model directory, its size, its full sha256, a hash of a few fixed 1 MiB
windows (the *sampled* hash) and its modification time. The cheap check that runs on every load compares
sizes and sampled hashes, and hashes a file in full only when its modification time changed since the
record (an in-place edit that keeps the size changes the time, so it cannot slip through); the full check
behind ``neurogate models verify`` hashes every byte.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

WINDOW = 1 << 20
"""Bytes in one sampled window."""
WINDOWS = 16
"""Windows per file: the first, the last and evenly spaced ones between (a file of 16 MiB or less is read
whole)."""


@dataclass(frozen=True)
class FileCheck:
    """What one file's check found: ``problem`` is empty when the file matches its record."""

    path: str
    problem: str = ""
    restamp: int | None = None


def _offsets(size: int, window: int, count: int) -> list[int]:
    if size <= window * count:
        return [0]
    last = size - window
    return [round(i * last / (count - 1)) for i in range(count)]


def _windows(path: Path, size: int, window: int, count: int) -> Iterator[bytes]:
    with path.open("rb") as fh:
        if size <= window * count:
            yield fh.read()
            return
        for offset in _offsets(size, window, count):
            fh.seek(offset)
            yield fh.read(window)


def sampled_sha256(path: Path, size: int, window: int = WINDOW, count: int = WINDOWS) -> str:
    """sha256 of ``count`` fixed windows of ``window`` bytes (the whole file when it is small)."""
    digest = hashlib.sha256()
    for chunk in _windows(path, size, window, count):
        digest.update(chunk)
    return digest.hexdigest()


def full_sha256(path: Path) -> str:
    """sha256 of every byte of ``path``."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def _files(directory: Path, skip: set[str]) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file() and p.name not in skip)


def record(directory: Path, skip: set[str]) -> dict[str, Any]:
    """The integrity record of every file under ``directory`` except the names in ``skip``."""
    files: dict[str, Any] = {}
    for path in _files(directory, skip):
        stat = path.stat()
        files[path.relative_to(directory).as_posix()] = {
            "size": stat.st_size,
            "sha256": full_sha256(path),
            "sampled_sha256": sampled_sha256(path, stat.st_size, WINDOW, WINDOWS),
            "mtime_ns": stat.st_mtime_ns,
        }
    return {"window": WINDOW, "windows": WINDOWS, "files": files}


def _well_formed(name: str, entry: Any) -> bool:
    parts = Path(name).parts
    return (
        isinstance(entry, dict)
        and isinstance(entry.get("size"), int)
        and all(isinstance(entry.get(k), str) for k in ("sha256", "sampled_sha256"))
        and bool(parts)
        and not Path(name).is_absolute()
        and ".." not in parts
    )


def _check_file(
    directory: Path, name: str, entry: dict[str, Any], meta: dict[str, Any], full: bool
) -> FileCheck:
    path = directory / name
    try:
        stat = path.stat()
    except OSError:
        return FileCheck(name, "is missing")
    size = entry["size"]
    if stat.st_size != size:
        return FileCheck(name, f"has {stat.st_size:,} bytes, expected {size:,} (truncated or replaced)")
    try:
        if full or stat.st_mtime_ns != entry.get("mtime_ns"):
            if full_sha256(path) != entry["sha256"]:
                return FileCheck(name, "content differs from the pulled file (sha256 mismatch)")
            restamp = None if stat.st_mtime_ns == entry.get("mtime_ns") else stat.st_mtime_ns
            return FileCheck(name, restamp=restamp)
        sampled = sampled_sha256(path, size, meta["window"], meta["windows"])
    except OSError as exc:
        return FileCheck(name, f"cannot be read ({exc.strerror or exc})")
    if sampled != entry["sampled_sha256"]:
        return FileCheck(name, "content differs from the pulled file (sampled sha256 mismatch)")
    return FileCheck(name)


def check(directory: Path, meta: dict[str, Any], full: bool = False) -> list[FileCheck]:
    """Check every recorded file of ``directory`` against ``meta`` (a :func:`record`), cheaply or in full."""
    files = meta.get("files")
    sizes = [meta.get("window"), meta.get("windows")]
    if not isinstance(files, dict) or not all(isinstance(v, int) and v > 1 for v in sizes):
        return [FileCheck("<record>", "the integrity record is malformed")]
    out: list[FileCheck] = []
    for name, entry in sorted(files.items()):
        if not _well_formed(name, entry):
            out.append(FileCheck(name, "has a malformed integrity record"))
            continue
        out.append(_check_file(directory, name, entry, meta, full))
    return out
