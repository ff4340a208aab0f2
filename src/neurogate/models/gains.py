"""Neuron gains: one fixed hook per layer that multiplies the neuron site by a dense gain vector.

A compiled forward pass (``torch.compile``, CUDA graphs) bakes in the hooks it saw when it was traced,
and torch does not notice a hook added later to a module that had none (measured with torch 2.13: the
compiled decoding steps silently ran without it). Neuron steering is a multiply on a fixed index set, so
it can be expressed as *values* instead of *code*: :class:`NeuronGains` hooks every layer's ``mlp.post``
site once, with ``x * gain[layer]`` where ``gain`` is ``[d_mlp]`` and all ones when nothing is steered
(``x * 1`` is exact). Steering then writes factors into the gain vectors in place; the compiled graph
reads the new values at its next run, and nothing is retraced.

Once installed on a model (by :func:`install_gains`), the table stays for the model's lifetime, because
removing and re-adding hooks is exactly what a compiled graph cannot follow. While it is installed,
:func:`neurogate.models.hooks.scale_neurons` routes every neuron scaling into it.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import nn

from neurogate.models.hooks import SiteFn, hook_site, register_neuron_router

if TYPE_CHECKING:
    from neurogate.models.loading import LoadedModel

LayerScales = dict[int, tuple[torch.Tensor, torch.Tensor]]


class NeuronGains:
    """Per-layer gain vectors at the neuron site (``[d_mlp]`` each, in the model's dtype, on the layer's
    device) and the hooks that apply them. Active scalings compose by multiplication, in the order they
    were attached; removing one rebuilds the gains from the others."""

    def __init__(self, lm: LoadedModel) -> None:
        adapter = lm.adapter
        self.gains: list[torch.Tensor] = []
        for layer in range(adapter.n_layers):
            weight = adapter.down_proj(layer).weight
            assert isinstance(weight, torch.Tensor)
            gain = torch.ones(adapter.d_mlp, dtype=lm.dtype, device=weight.device)
            torch._dynamo.mark_static_address(gain)  # CUDA graphs read it in place, as they read weights
            self.gains.append(gain)
        self._active: dict[int, LayerScales] = {}
        self._next = 0
        handles = [hook_site(lm, f"blocks.{i}.mlp.post", self._hook(i)) for i in range(len(self.gains))]
        self.hook_ids: set[int] = {h.id for h in handles}

    def _hook(self, layer: int) -> SiteFn:
        gain = self.gains[layer]

        def fn(x: torch.Tensor) -> torch.Tensor | None:
            g = gain if gain.dtype == x.dtype else gain.to(x.dtype)
            if x.requires_grad and torch.is_grad_enabled():
                return x * g
            x.mul_(g)
            return None

        return fn

    @property
    def active(self) -> bool:
        """Whether any scaling is currently applied."""
        return bool(self._active)

    def push(self, scales: LayerScales) -> Callable[[], None]:
        """Apply ``scales`` (``{layer: (index [k], factor [k])}``); returns the callback that removes them."""
        token = self._next
        self._next += 1
        self._active[token] = scales
        self._rebuild()

        def undo() -> None:
            if self._active.pop(token, None) is not None:
                self._rebuild()

        return undo

    @torch.no_grad()
    def _rebuild(self) -> None:
        for layer, gain in enumerate(self.gains):
            product = torch.ones(gain.shape, dtype=torch.float32, device=gain.device)
            for scales in self._active.values():
                if layer in scales:
                    index, factor = scales[layer]
                    idx = index.to(gain.device)
                    product[idx] = product[idx] * factor.to(device=gain.device, dtype=torch.float32)
            gain.copy_(product)  # in place: compiled graphs hold this storage


_TABLES: weakref.WeakKeyDictionary[nn.Module, NeuronGains] = weakref.WeakKeyDictionary()


def gains_of(lm: LoadedModel) -> NeuronGains | None:
    """The model's gain table, when one is installed."""
    return _TABLES.get(lm.model)


def install_gains(lm: LoadedModel) -> NeuronGains:
    """Install the gain table on ``lm`` (once; later calls return the same table). From then on every
    neuron scaling on this model writes gains instead of adding hooks."""
    table = _TABLES.get(lm.model)
    if table is None:
        table = NeuronGains(lm)
        _TABLES[lm.model] = table
        register_neuron_router(lm.model, table.push)
    return table
