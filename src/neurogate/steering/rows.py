"""Several circuits in one batch: row ``r`` steered by its own circuit, multiplier and ``toward``.

Comparing K circuits (or K multipliers of one) on N prompts takes K batched generations with
:meth:`Circuit.apply`; here it takes one batch of K * N rows, each row under its own setting, "no
steering" included. Each row computes exactly what :meth:`Circuit.apply` computes for it alone (the same
``factor * a + offset`` per neuron), through the per-row tables of :mod:`neurogate.models.row_gains`.

A row's setting (:data:`RowSpec`) is ``None`` (unsteered), ``(circuit, multiplier)`` or
``(circuit, multiplier, toward)`` with ``toward`` ``"zero"`` (plain multiplier) or ``"mean"``
(mean-ablation, :class:`~neurogate.steering.neurons.MeanAblation`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from neurogate.discovery.circuit import Circuit, Multiplier, Toward
from neurogate.errors import ConfigError
from neurogate.models.generation import Generation, generate
from neurogate.models.loading import LoadedModel
from neurogate.models.row_gains import RowGains, RowMaps
from neurogate.models.row_gains import steer_rows as steer_row_maps

RowSpec = tuple[Circuit, Multiplier] | tuple[Circuit, Multiplier, Toward] | None
"""One row's steering: ``None``, ``(circuit, multiplier)`` or ``(circuit, multiplier, toward)``."""


def row_maps(lm: LoadedModel, specs: Sequence[RowSpec]) -> list[RowMaps]:
    """Each row's setting as the per-layer ``(index, factor, offset)`` maps :meth:`Circuit.apply` would
    use. Raises :class:`~neurogate.errors.CircuitError` for a circuit found on a model of another shape and
    :class:`ConfigError` for a malformed setting."""
    if isinstance(specs, tuple) and specs and isinstance(specs[0], Circuit):
        raise ConfigError("row steering takes one setting per row: wrap a single (circuit, m) in a list")
    out: list[RowMaps] = []
    made: dict[tuple[int, float, str], RowMaps] = {}
    checked: set[int] = set()
    for row, spec in enumerate(specs):
        if spec is None:
            out.append(None)
            continue
        if not isinstance(spec, tuple) or len(spec) not in (2, 3) or not isinstance(spec[0], Circuit):
            raise ConfigError(
                f"row {row}: a row's steering must be None, (circuit, multiplier) or "
                f"(circuit, multiplier, toward), got {type(spec).__name__}"
            )
        circuit, multiplier = spec[0], spec[1]
        toward: Toward = spec[2] if len(spec) == 3 else "zero"  # type: ignore[misc]
        if id(circuit) not in checked:
            circuit.check_model(lm)
            checked.add(id(circuit))
        # a plain number of the same circuit resolves once, however many rows repeat it
        key = (id(circuit), float(multiplier), str(toward)) if isinstance(multiplier, int | float) else None
        if key is not None and key in made:
            out.append(made[key])
            continue
        scales = circuit.scales(multiplier, toward)
        maps: RowMaps = {layer: (s.index, s.factor, s.offset) for layer, s in scales.items()}
        if key is not None:
            made[key] = maps
        out.append(maps)
    return out


def steer_rows(lm: LoadedModel, specs: Sequence[RowSpec]) -> RowGains:
    """Steer row ``r`` of every later batch by ``specs[r]`` until the returned handle (also a context
    manager) is removed: ``with steer_rows(lm, [(a, 0.0), (b, -1.0), None]): lm.model(**batch)``. For
    batches of other rows, :meth:`RowGains.bind` picks which rows they are."""
    return steer_row_maps(lm, row_maps(lm, specs))


def generate_rows(
    lm: LoadedModel, prompts: Sequence[str], specs: Sequence[RowSpec], **options: Any
) -> list[Generation]:
    """:func:`~neurogate.models.generation.generate` with prompt ``i`` steered by ``specs[i]``, all in
    one call (sorted, batched and decoded together). ``options`` are ``generate``'s keywords."""
    if isinstance(prompts, str):
        raise ConfigError("generate_rows takes a sequence of prompts; wrap a single prompt in a list")
    if len(specs) != len(prompts):
        raise ConfigError(f"{len(specs)} row steerings for {len(prompts)} prompts; give one per prompt")
    return generate(lm, prompts, row_steering=row_maps(lm, specs), **options)
