"""Per-row neuron steering: row ``r`` of a batch maps the neuron site through its own gain and bias.

:class:`~neurogate.models.gains.NeuronGains` holds one ``[d_mlp]`` gain and bias per layer, the same for
every row. Comparing several circuits or multipliers then takes one batched pass per setting. Here each
layer's tables are ``[rows, d_mlp]`` and broadcast over positions (``x * gain[:, None] + bias[:, None]``
on the ``[rows, pos, d_mlp]`` site tensor), so one batch can carry many settings, "no steering" included
(a row of ones and zeros, which leaves ``x`` exactly as it is).

A row's steering is given as per-layer ``(index, factor, offset)`` maps, the form
:func:`~neurogate.models.hooks.scale_neurons` takes (``None``: no steering), so this module needs no
circuit type; :mod:`neurogate.steering.rows` turns circuits into these maps. Rows with equal maps share
one table row (``groups``): memory grows with the distinct settings, not the rows.

The tables follow the batch: :meth:`RowGains.bind` picks which of the given rows the next passes run
(generation sorts prompts by length and cuts them into sub-batches), and :meth:`RowGains.select` compacts
the bound rows the way decoding compacts its batch when rows finish
(:func:`neurogate.models.ragged.ragged_greedy`). A pass over another number of rows than are bound raises
instead of broadcasting one row's steering onto another.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from neurogate.errors import ConfigError
from neurogate.models.hooks import Handle, NeuronMap, SiteFn, check_scale, hook_sites

if TYPE_CHECKING:
    from neurogate.models.loading import LoadedModel

RowMaps = dict[int, NeuronMap] | None
"""One row's steering: ``{layer: (index [k], factor [k], offset [k] or None)}``, or ``None`` for none."""


def _key(maps: RowMaps) -> tuple[object, ...]:
    """A hashable form of ``maps``, equal for equal steerings (rows that can share a table row)."""
    if not maps:
        return ()
    parts: list[object] = []
    for layer in sorted(maps):
        index, factor, offset = maps[layer]
        parts.append(
            (
                int(layer),
                tuple(int(i) for i in index.tolist()),
                tuple(float(f) for f in factor.tolist()),
                None if offset is None else tuple(float(o) for o in offset.tolist()),
            )
        )
    return tuple(parts)


def _check(lm: LoadedModel, row: int, maps: RowMaps) -> None:
    """Raise :class:`ConfigError` unless ``maps`` names layers and neurons of ``lm`` with finite factors."""
    if maps is None:
        return
    n_layers, d_mlp = lm.adapter.n_layers, lm.adapter.d_mlp
    for layer, (index, factor, offset) in maps.items():
        where = f"row {row}, layer {layer}"
        if not 0 <= int(layer) < n_layers:
            raise ConfigError(f"row {row} steers layer {layer}, but {lm.spec} has {n_layers} layers")
        shapes = {index.shape, factor.shape} | (set() if offset is None else {offset.shape})
        if index.dim() != 1 or len(shapes) != 1:
            raise ConfigError(f"{where}: index, factor and offset must be 1-d tensors of one length")
        if index.numel() and not (int(index.min()) >= 0 and int(index.max()) < d_mlp):
            raise ConfigError(f"{where}: neuron indices must lie in [0, {d_mlp}) on {lm.spec}")
        if index.unique().numel() != index.numel():
            raise ConfigError(f"{where}: a neuron index appears twice")
        check_scale(factor.tolist(), lm.dtype, "multiplier")


class RowGains(Handle):
    """Per-row gain and bias tables at every steered layer's neuron site, and the hooks that apply them.

    ``groups[r]`` is the table row of given row ``r``; ``bank_gain[layer]`` / ``bank_bias[layer]`` hold
    one float32 row per distinct steering, and the ``gain`` / ``bias`` tables the hooks read hold the
    bound rows, in the model's dtype, on the layer's device. Removing the handle removes the hooks."""

    def __init__(self, lm: LoadedModel, steerings: Sequence[RowMaps]) -> None:
        steerings = list(steerings)
        if not steerings:
            raise ConfigError("row steering needs at least one row")
        for row, maps in enumerate(steerings):
            _check(lm, row, maps)
        keys: dict[tuple[object, ...], int] = {}
        distinct: list[RowMaps] = []
        groups: list[int] = []
        for maps in steerings:
            key = _key(maps)
            if key not in keys:
                keys[key] = len(distinct)
                distinct.append(maps)
            groups.append(keys[key])
        self.lm = lm
        self.rows = len(steerings)
        self.groups = torch.tensor(groups, dtype=torch.long)
        self.bank_gain: dict[int, torch.Tensor] = {}
        self.bank_bias: dict[int, torch.Tensor] = {}
        layers = sorted({int(layer) for maps in distinct if maps for layer in maps})
        for layer in layers:
            device = lm.adapter.site_device(layer)
            gain = torch.ones((len(distinct), lm.adapter.d_mlp), dtype=torch.float32)
            bias = torch.zeros_like(gain)
            for g, maps in enumerate(distinct):
                if maps and layer in maps:
                    index, factor, offset = maps[layer]
                    gain[g, index] = factor.float().cpu()
                    if offset is not None:
                        bias[g, index] = offset.float().cpu()
            self.bank_gain[layer], self.bank_bias[layer] = gain.to(device), bias.to(device)
        self.gain: dict[int, torch.Tensor] = {}
        self.bias: dict[int, torch.Tensor] = {}
        self.bound: list[int] = []
        self.bind(range(self.rows))
        fns = {f"blocks.{layer}.mlp.post": self._hook(layer) for layer in layers}
        hooks = hook_sites(lm, fns, label="row steering")
        super().__init__([hooks.remove], label=f"row steering over {self.rows} rows")

    def __enter__(self) -> RowGains:
        return self

    @property
    def distinct(self) -> int:
        """How many distinct steerings (table rows) the given rows use."""
        return int(self.groups.max()) + 1

    def bind(self, rows: Sequence[int]) -> None:
        """Make the next passes run the given rows (indices into the steerings, repeats allowed), in order."""
        rows = [int(r) for r in rows]
        if not rows or not all(0 <= r < self.rows for r in rows):
            raise ConfigError(f"bind takes row indices in [0, {self.rows}), got {rows[:8]}")
        self.bound = rows
        picks = self.groups[rows]
        for layer, bank in self.bank_gain.items():
            idx = picks.to(bank.device)
            self.gain[layer] = bank[idx].to(self.lm.dtype)
            self.bias[layer] = self.bank_bias[layer][idx].to(self.lm.dtype)

    def variants(self) -> tuple[list[int], torch.Tensor]:
        """The bound rows' distinct steerings: one bound row standing for each (first seen first), and each
        bound row's position among them (a shared prefix runs once per variant: see
        :func:`neurogate.models.prefix.prefill`)."""
        first: dict[int, int] = {}
        reps: list[int] = []
        pick: list[int] = []
        for row in self.bound:
            group = int(self.groups[row])
            if group not in first:
                first[group] = len(reps)
                reps.append(row)
            pick.append(first[group])
        return reps, torch.tensor(pick, dtype=torch.long)

    @torch.no_grad()
    def select(self, keep: torch.Tensor | Sequence[int]) -> None:
        """Keep only the bound rows at positions ``keep`` (as a decoding step drops finished rows)."""
        positions = [int(k) for k in (keep.tolist() if isinstance(keep, torch.Tensor) else keep)]
        self.bind([self.bound[k] for k in positions])

    def _hook(self, layer: int) -> SiteFn:
        def fn(x: torch.Tensor) -> torch.Tensor | None:
            gain, bias = self.gain[layer], self.bias[layer]
            if x.shape[0] != gain.shape[0]:
                raise RuntimeError(
                    f"row steering is bound to {gain.shape[0]} rows but a forward pass ran {x.shape[0]}; "
                    "bind() the rows of each batch (generation does this itself)"
                )
            if gain.dtype != x.dtype or gain.device != x.device:
                gain, bias = gain.to(x), bias.to(x)
            shape = (x.shape[0],) + (1,) * (x.dim() - 2) + (x.shape[-1],)
            g, b = gain.view(shape), bias.view(shape)
            if x.requires_grad and torch.is_grad_enabled():
                return x * g + b
            x.mul_(g).add_(b)
            return None

        return fn


def steer_rows(lm: LoadedModel, steerings: Sequence[RowMaps]) -> RowGains:
    """Steer row ``r`` of every later batch by ``steerings[r]`` until the returned handle (also a context
    manager) is removed: ``with steer_rows(lm, [maps_a, None, maps_b]): lm.model(**three_row_batch)``."""
    return RowGains(lm, steerings)
