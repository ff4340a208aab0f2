"""The intervention protocol: a :class:`Handle` undoes one change; an :class:`Intervention` describes one.

Every change neurogate makes to a model (a hook, a weight edit) returns a :class:`Handle` whose
:meth:`Handle.remove` undoes it (idempotent) and which is also a context manager, so the change is undone
even when the body raises. An :class:`Intervention` is a reusable description (kind + strength + what it
needs) that :meth:`Intervention.attach` turns into a handle; ``with intervention: ...`` attaches it for the
duration of the block.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any

from torch.utils.hooks import RemovableHandle


class Handle:
    """Undo callbacks run (in reverse order) by :meth:`remove`; removing twice is a no-op."""

    def __init__(self, undo: Iterable[Callable[[], None]] = (), *, label: str = "intervention") -> None:
        self._undo: list[Callable[[], None]] = list(undo)
        self.label = label
        self._removed = False

    @classmethod
    def of_hooks(cls, hooks: Iterable[RemovableHandle], *, label: str = "hooks") -> Handle:
        """A handle that removes torch hook handles."""
        return cls([h.remove for h in hooks], label=label)

    @classmethod
    def combine(cls, handles: Iterable[Handle], *, label: str = "combined") -> Handle:
        """One handle over several: removing it removes each, the last one first."""
        return cls([h.remove for h in handles], label=label)

    @property
    def removed(self) -> bool:
        return self._removed

    def remove(self) -> None:
        """Undo the change; later calls do nothing. Every undo step runs even if an earlier one raises."""
        if self._removed:
            return
        self._removed = True
        error: BaseException | None = None
        for undo in reversed(self._undo):
            try:
                undo()
            except BaseException as exc:  # keep undoing the rest, then re-raise the first failure
                error = error or exc
        self._undo.clear()
        if error is not None:
            raise error

    def __enter__(self) -> Handle:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.remove()

    def __repr__(self) -> str:
        state = "removed" if self._removed else "active"
        return f"Handle({self.label}, {state})"


class Intervention(ABC):
    """A description of a change to a model that can be attached (and removed) any number of times.

    ``kind``: ``"cna"``, ``"caa"``, ``"ablation"`` or ``"random"``; ``strength``: 0 means no change
    (see :func:`neurogate.interventions.make` for each kind's scale).
    """

    kind: str
    strength: float

    def __init__(self) -> None:
        self._active: list[Handle] = []

    @abstractmethod
    def attach(self) -> Handle:
        """Apply the change to the model now; the returned handle undoes it."""

    def describe(self) -> dict[str, Any]:
        """A JSON-ready description (kind, strength and kind-specific settings)."""
        return {"kind": self.kind, "strength": self.strength}

    def __enter__(self) -> Intervention:
        self._active.append(self.attach())
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._active.pop().remove()

    def __repr__(self) -> str:
        settings = ", ".join(f"{k}={v!r}" for k, v in self.describe().items())
        return f"{type(self).__name__}({settings})"
