"""What every intervention is: a reusable description of a change (kind + value on its scale + what it
needs) that :meth:`Intervention.attach` applies and the returned :class:`Handle` undoes.

Each kind declares its :class:`Scale` once. Neuron kinds use the **multiplier** ``m`` (1 = no change,
0 ablates, negative flips, > 1 amplifies); residual-stream kinds use a **strength** ``s`` (0 = no change,
1 = the method's full effect). Reports and results always name the scale with the number.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ClassVar, Literal

from neurogate.models.hooks import Handle

Source = Literal["circuit", "directions"]


@dataclass(frozen=True)
class Scale:
    """How an intervention's number reads: its name, its symbol in labels, and its no-change value."""

    name: str
    symbol: str
    neutral: float
    meaning: str

    def label(self, value: float) -> str:
        """``"m=0"`` or ``"s=0.5"``."""
        return f"{self.symbol}={value:g}"


MULTIPLIER = Scale(
    "multiplier",
    "m",
    1.0,
    "each neuron's activation is multiplied by m at every position: 1 = unchanged, 0 ablates, "
    "negative flips the sign, > 1 amplifies",
)
STRENGTH = Scale(
    "strength",
    "s",
    0.0,
    "how much of the method's change is applied: 0 = unchanged, 1 = the full change, negative reverses it",
)


class Intervention(ABC):
    """A change to a model that can be attached (and removed) any number of times.

    Subclasses set ``kind`` (the registry name), ``scale``, ``source`` (what they are built from: a
    circuit or residual directions) and ``options`` (the keyword options they accept). ``value`` is the
    number on ``scale``.
    """

    kind: ClassVar[str]
    scale: ClassVar[Scale]
    source: ClassVar[Source]
    options: ClassVar[tuple[str, ...]] = ()
    summary: ClassVar[str] = ""
    value: float

    def __init__(self) -> None:
        self._active: list[Handle] = []

    @abstractmethod
    def attach(self) -> Handle:
        """Apply the change to the model now; the returned handle undoes it."""

    @property
    def label(self) -> str:
        """A short label such as ``"cna m=0"`` or ``"caa s=1"``."""
        return f"{self.kind} {self.scale.label(self.value)}"

    def describe(self) -> dict[str, Any]:
        """A JSON-ready description: kind, the scale's name and value, and kind-specific settings."""
        return {"kind": self.kind, "scale": self.scale.name, self.scale.name: self.value}

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
