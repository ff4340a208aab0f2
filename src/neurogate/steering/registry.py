"""The one registry of interventions: kind -> class, each with its scale documented on the class.

=============  ==============  =====================================================================
kind           scale           what it does
=============  ==============  =====================================================================
``cna``        multiplier m    multiply the circuit's MLP neurons by m (1 = unchanged, 0 ablates)
``mean``       multiplier m    move the circuit's neurons toward their negative-prompt mean (m = 0: there)
``random``     multiplier m    the same as cna on random neurons with the circuit's per-layer counts (seed=)
``caa``        strength s      subtract s times the residual mean difference after one layer (layer=)
``ablation``   strength s      project s times the unit refusal direction out of the stream (layer=)
=============  ==============  =====================================================================

Every caller (CLI, evaluation, study, report) builds interventions with :func:`make`. Adding a kind is one
:class:`~neurogate.steering.base.Intervention` subclass and one line in :data:`INTERVENTIONS`.
"""

from __future__ import annotations

import difflib
from typing import Any

from neurogate.discovery.circuit import Circuit
from neurogate.discovery.directions import ResidualDirections
from neurogate.errors import ConfigError
from neurogate.models.loading import LoadedModel
from neurogate.steering.base import Intervention
from neurogate.steering.neurons import MeanAblation, NeuronScaling, RandomControl
from neurogate.steering.residual import ActivationAddition, DirectionalAblation

INTERVENTIONS: dict[str, type[Intervention]] = {
    cls.kind: cls
    for cls in (NeuronScaling, MeanAblation, RandomControl, ActivationAddition, DirectionalAblation)
}
KINDS: tuple[str, ...] = tuple(INTERVENTIONS)


def get_kind(kind: str) -> type[Intervention]:
    """The intervention class registered as ``kind``; unknown kinds get a "did you mean"."""
    try:
        return INTERVENTIONS[kind]
    except KeyError:
        close = difflib.get_close_matches(kind, INTERVENTIONS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(
            f"unknown intervention kind {kind!r}; choose one of {', '.join(KINDS)}.{hint}"
        ) from None


def make(
    kind: str, lm: LoadedModel, source: Circuit | ResidualDirections, value: float, **options: Any
) -> Intervention:
    """Build an intervention of ``kind`` at ``value`` on its own scale (``m`` for neuron kinds, ``s`` for
    residual kinds; see the module table). ``source`` is a :class:`Circuit` or :class:`ResidualDirections`,
    as the kind needs."""
    cls = get_kind(kind)
    extra = set(options) - set(cls.options)
    if extra:
        raise ConfigError(
            f"kind {kind!r} takes no option(s) {sorted(extra)}; it takes {list(cls.options) or 'none'}"
        )
    expected = Circuit if cls.source == "circuit" else ResidualDirections
    if not isinstance(source, expected):
        how = "`neurogate discover`" if cls.source == "circuit" else "neurogate.compute_directions"
        raise ConfigError(
            f"kind {kind!r} needs a {expected.__name__} (from {how}), not {type(source).__name__}"
        )
    return cls(lm, source, value, **options)  # type: ignore[call-arg]


def describe_kinds() -> list[dict[str, str]]:
    """One row per kind: name, source, scale and what it does (for help text and reports)."""
    return [
        {"kind": k, "source": c.source, "scale": f"{c.scale.name} {c.scale.symbol}", "summary": c.summary}
        for k, c in INTERVENTIONS.items()
    ]
