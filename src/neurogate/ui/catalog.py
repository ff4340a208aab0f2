"""What the explorer may show: the circuit files given on the command line, and the runs (with their
circuits) in the runs folder. Every item has an id of the form ``ROOT:RELATIVE/PATH``, where ROOT numbers
one of the allowed folders; ids are resolved with :func:`~neurogate.ui.security.confine`, so a request can
never name a file outside those folders. Loaded files are cached until they change on disk."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from neurogate.discovery.circuit import Circuit
from neurogate.discovery.directions import ResidualDirections
from neurogate.study.results import StudyResults
from neurogate.tuning import TuneResults
from neurogate.ui.runs import RESULTS, TUNE, find_runs, run_entry
from neurogate.ui.security import PathNotAllowed, confine
from neurogate.ui.settings import UISettings

T = TypeVar("T")
RUN_CIRCUITS = ("circuit.json", "circuit-ranking.json", "tuned-circuit.json")
DIRECTIONS = "directions.safetensors"


class Catalog:
    """Lists and loads circuits and runs inside the allowed folders (thread-safe, cached by mtime)."""

    def __init__(self, settings: UISettings) -> None:
        self.settings = settings
        self.roots = settings.roots
        self._cache: dict[Path, tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def _id(self, path: Path) -> str:
        for i, root in enumerate(self.roots):
            if path.is_relative_to(root):
                return f"{i}:{path.relative_to(root).as_posix()}"
        raise PathNotAllowed(f"{path} is outside the explorer's folders")

    def resolve(self, item: str) -> Path:
        """The file or folder an id names (inside the allowed folders, or :class:`PathNotAllowed`)."""
        root, sep, rel = item.partition(":")
        if not sep or not root.isdigit() or int(root) >= len(self.roots):
            raise PathNotAllowed(f"{item!r} does not name anything the explorer was given")
        return confine(self.roots[int(root)], rel)

    def _load(self, path: Path, reader: Callable[[Path], T]) -> T:
        mtime = path.stat().st_mtime
        with self._lock:
            hit = self._cache.get(path)
            if hit is not None and hit[0] == mtime:
                return hit[1]  # type: ignore[no-any-return]
        value = reader(path)
        with self._lock:
            self._cache[path] = (mtime, value)
        return value

    # -- circuits --------------------------------------------------------------------------------------

    def circuit_paths(self) -> list[Path]:
        """The given circuit files, then each run's circuits."""
        paths = list(self.settings.circuits)
        for run in self.run_paths():
            paths += [run / name for name in RUN_CIRCUITS if (run / name).is_file()]
        return list(dict.fromkeys(paths))

    def circuits(self) -> list[dict[str, Any]]:
        """One entry per circuit: id, a readable name, its model and size (unreadable files say why)."""
        out: list[dict[str, Any]] = []
        for path in self.circuit_paths():
            item = self._id(path)
            name = item.split(":", 1)[1]
            try:
                c = self.circuit(item)
            except Exception as exc:  # one broken file must not hide the others
                out.append({"id": item, "name": name, "error": str(exc)})
                continue
            out.append({"id": item, "name": name, "model": c.model.get("spec", "?"), "n_neurons": len(c)})
        return out

    def circuit(self, item: str) -> Circuit:
        return self._load(self.resolve(item), Circuit.load)

    # -- runs ------------------------------------------------------------------------------------------

    def run_paths(self) -> list[Path]:
        return find_runs(self.settings.runs) if self.settings.runs is not None else []

    def runs(self) -> list[dict[str, Any]]:
        out = []
        for folder in self.run_paths():
            item = self._id(folder)
            try:
                entry = run_entry(folder, self.run(item))
            except Exception as exc:  # one broken run must not hide the others
                out.append({"id": item, "name": folder.name, "error": str(exc)})
                continue
            out.append({**entry, "id": item})
        return out

    def run_folder(self, item: str) -> Path:
        folder = self.resolve(item)
        if not (folder / RESULTS).is_file() and not (folder / TUNE).is_file():
            raise PathNotAllowed(f"{item!r} is not a run (no {RESULTS} or {TUNE})")
        return folder

    def run(self, item: str) -> StudyResults | TuneResults:
        """A study's results, or a tuning search's when the folder holds ``tune.json``."""
        folder = self.run_folder(item)
        if (folder / RESULTS).is_file():
            return self._load(folder / RESULTS, StudyResults.load)
        return self._load(folder / TUNE, TuneResults.load)

    def directions(self, fits: Callable[[ResidualDirections], bool]) -> tuple[ResidualDirections, str] | None:
        """Residual directions stored in a run that ``fits`` accepts (the newest run first), with the
        run folder's name."""
        for run in self.run_paths():
            path = run / DIRECTIONS
            if path.is_file():
                found = self._load(path, ResidualDirections.load)
                if fits(found):
                    return found, run.name
        return None
