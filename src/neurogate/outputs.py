"""Where neurogate writes: safe targets, temporary folders it owns, and sweeping the ones a killed run left.

Rules every writer follows:

* a target path never goes through a symlink, and is never the working directory, one of its parents,
  the home directory, a filesystem root, or a folder that holds one of the command's inputs;
* a folder is replaced only when it is empty or carries the marker file of what neurogate wrote there;
* temporary folders are created by :func:`owned_tempdir` beside the target. Each holds an owner file that its
  process keeps locked (``flock``) while it lives, so a later run can tell an abandoned folder (lock free:
  its process is gone, e.g. after SIGKILL) from one in use, and :func:`sweep` removes only abandoned ones;
* new files and folders get the user's umask (``tempfile`` would make them private).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from neurogate.errors import ConfigError

try:  # POSIX only; without it nothing is ever swept (safe, never wrong)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

OWNER = ".neurogate-owner"
TEMP_PREFIX = ".neurogate-tmp-"


def umask() -> int:
    """The process umask (read without changing it for good)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode a new file gets from ``open()``: 0o666 less the umask."""
    return 0o666 & ~umask()


def dir_mode() -> int:
    """The mode a new folder gets from ``mkdir``: 0o777 less the umask."""
    return 0o777 & ~umask()


def apply_umask(folder: Path) -> None:
    """Give every file and folder under ``folder`` (itself included) the modes the user's umask gives new
    ones: some writers (``tempfile``, safetensors via transformers) create them private (0600/0700)."""
    files, dirs = file_mode(), dir_mode()
    for root, subdirs, names in os.walk(folder):
        for name in names:
            path = Path(root, name)
            if not path.is_symlink():
                path.chmod(files)
        for name in subdirs:
            Path(root, name).chmod(dirs)
    folder.chmod(dirs)


def _absolute(path: Path) -> Path:
    """``path`` made absolute against the working directory, symlinks kept (not resolved)."""
    path = path.expanduser()
    return path if path.is_absolute() else Path.cwd() / path


def symlink_in(path: Path) -> Path | None:
    """The first component of ``path`` (as written, made absolute) that is a symlink, or ``None``."""
    current = Path(_absolute(path).anchor)
    for part in _absolute(path).parts[1:]:
        current = current / part
        if current.is_symlink():
            return current
        if not current.exists():
            return None
    return None


def _contains(parent: Path, child: Path) -> bool:
    return child == parent or parent in child.parents


def check_target(
    out: str | os.PathLike[str], *, option: str = "--out", inputs: Iterable[str | os.PathLike[str]] = ()
) -> Path:
    """Refuse a write target that could take something that is not neurogate's with it; return it resolved.

    Refused: a path through a symlink, the working directory or any folder above it, the home directory, a
    filesystem root, and any folder that holds (or is) one of ``inputs``.
    """
    given = Path(out)
    link = symlink_in(given)
    if link is not None:
        raise ConfigError(
            f"{option} {str(given)!r} goes through the symlink {link} -> {os.readlink(link)}; neurogate does "
            "not write through symlinks. Give the real path instead"
        )
    target = _absolute(given).resolve()
    cwd = Path.cwd().resolve()
    if _contains(target, cwd):
        raise ConfigError(
            f"{option} {str(given)!r} is the working directory or a folder above it; give a new sub-folder "
            "such as ./steered-model"
        )
    if target == Path.home().resolve() or target == Path(target.anchor):
        raise ConfigError(
            f"{option} {str(given)!r} is the home directory or a filesystem root; give a new folder"
        )
    for item in inputs:
        if not _absolute(Path(item)).exists():
            continue  # a hub id or zoo name, not a local path
        source = _absolute(Path(item)).resolve()
        if _contains(target, source):
            raise ConfigError(
                f"{option} {str(given)!r} holds the input {str(item)!r}; writing there could replace it. "
                "Give a folder of its own"
            )
    return target


def check_file_target(out: str | os.PathLike[str], option: str, example: str = "circuit.json") -> Path:
    """Check, before any expensive work, that a file can be written at ``out``: not a folder, and its folder
    exists (or can be created) and is writable. (The file is replaced atomically, a symlink by a file.)

    A path that ends in a slash names a folder everywhere in neurogate: where a folder is written it is that
    folder, and where a file is written it is refused here, with ``example`` as the file name to give (pass
    the path as the user typed it: ``Path`` drops the slash)."""
    path = Path(out).expanduser()
    if path.is_dir() or str(out).endswith(("/", os.sep)):
        raise ConfigError(f"{option} {str(out)!r} is a directory; give a file name, e.g. {path / example}")
    check_writable_dir(_absolute(path).parent, option, str(out))
    return path


def check_dir_output(out: str | os.PathLike[str], option: str) -> Path:
    """Check, before any expensive work, that ``out`` is (or can become) a writable folder, not a file."""
    path = Path(out).expanduser()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{option} {str(out)!r} is a file; give a folder (it is created when missing)")
    check_writable_dir(_absolute(path), option, str(out))
    return path


def check_writable_dir(folder: Path, option: str, given: str) -> None:
    """Raise unless ``folder`` exists and is writable, or its nearest existing parent is a writable folder."""
    probe = folder
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(f"{option} {given!r}: {probe} is a file, so no folder can be made there")
    try:  # a real probe: permission bits say nothing for root, /proc or a read-only filesystem
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as exc:
        raise ConfigError(
            f"{option} {given!r}: cannot write in {probe} ({exc.strerror or exc}); choose a path you can "
            "write to"
        ) from exc


def _lock(fh: IO[str]) -> bool:
    """Take the owner lock without waiting; False when another live process holds it."""
    if fcntl is None:  # pragma: no cover - Windows
        return False
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


@contextmanager
def owned_tempdir(parent: str | os.PathLike[str], prefix: str) -> Iterator[Path]:
    """A fresh folder ``parent/<prefix>XXXX`` (the user's umask), owned by this process until the block ends,
    then removed on every exit path (Ctrl-C included) unless the block moved it away. Remove the owner
    file (:func:`release`) before renaming the folder into place."""
    base = Path(parent)
    base.mkdir(parents=True, exist_ok=True)
    tmp: Path | None = None
    try:
        with interrupts_held():  # a Ctrl-C between making the folder and owning it would leave it behind
            tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
        tmp.chmod(dir_mode())
        owner = tmp / OWNER
        with owner.open("w") as fh:
            _lock(fh)
            fh.write(f"{os.getpid()}\n")
            fh.flush()
            yield tmp
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def interrupts_held() -> Iterator[None]:
    """Hold SIGINT back for the block (it is delivered when the block ends), where the platform allows."""
    mask = getattr(signal, "pthread_sigmask", None)
    if mask is None:  # pragma: no cover - Windows
        yield
        return
    old = mask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        mask(signal.SIG_SETMASK, old)


def release(folder: Path) -> None:
    """Drop the owner file of an :func:`owned_tempdir` folder that is about to become a real output."""
    (folder / OWNER).unlink(missing_ok=True)


def _abandoned(folder: Path, legacy_age: float | None) -> bool:
    owner = folder / OWNER
    if not owner.is_file():  # made by an older neurogate (no owner file): only by age, where allowed
        if legacy_age is None:
            return False
        try:
            return time.time() - folder.stat().st_mtime > legacy_age
        except OSError:
            return False
    try:
        with owner.open("a") as fh:
            return _lock(fh)
    except OSError:
        return False


def sweep(parent: str | os.PathLike[str], prefix: str, *, legacy_age: float | None = None) -> list[Path]:
    """Remove the abandoned temporary folders ``parent/<prefix>*`` left by killed runs (their owner lock is
    free); log one line when any were removed. ``legacy_age``: also remove folders with no owner file that
    were not touched for that many seconds (only where every such folder is neurogate's, as in the zoo)."""
    base = Path(parent)
    if not base.is_dir():
        return []
    removed: list[Path] = []
    with contextlib.suppress(OSError):
        for child in base.iterdir():
            ours = child.name.startswith(prefix) and child.is_dir() and not child.is_symlink()
            if ours and _abandoned(child, legacy_age):
                shutil.rmtree(child, ignore_errors=True)
                removed.append(child)
    if removed:
        logger.warning(
            "removed %d temporary folder(s) left by an interrupted earlier run in %s: %s",
            len(removed),
            base,
            ", ".join(p.name for p in removed),
        )
    return removed
