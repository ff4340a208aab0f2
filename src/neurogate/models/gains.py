"""Neuron gains: one fixed hook per layer that maps the neuron site through dense gain and bias vectors.

A compiled forward pass (``torch.compile``, CUDA graphs) bakes in the hooks it saw when it was traced,
and torch does not notice a hook added later to a module that had none (measured with torch 2.13: the
compiled decoding steps silently ran without it). Neuron steering is a multiply on a fixed index set, so
it can be expressed as *values* instead of *code*: :class:`NeuronGains` hooks every layer's ``mlp.post``
site once, with ``x * gain[layer] + bias[layer]`` where both are ``[d_mlp]``, ones and zeros when nothing
is steered (``x * 1 + 0`` is ``x``). Steering then writes factors and offsets into these vectors in place;
the compiled graph reads the new values at its next run, and nothing is retraced.

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

from neurogate.models.hooks import NeuronMap, SiteFn, hook_site, register_neuron_router

if TYPE_CHECKING:
    from neurogate.models.loading import LoadedModel

LayerScales = dict[int, NeuronMap]


class NeuronGains:
    """Per-layer gain and bias vectors at the neuron site (``[d_mlp]`` each, in the model's dtype, on the
    layer's device) and the hooks that apply them. Active maps compose in the order they were attached
    (``a -> f2 * (f1 * a + o1) + o2``); removing one rebuilds the vectors from the others."""

    def __init__(self, lm: LoadedModel) -> None:
        adapter = lm.adapter
        self.gains: list[torch.Tensor] = []
        self.biases: list[torch.Tensor] = []
        for layer in range(adapter.n_layers):
            device = adapter.site_device(layer)
            for store, fill in ((self.gains, 1.0), (self.biases, 0.0)):
                vector = torch.full((adapter.d_mlp,), fill, dtype=lm.dtype, device=device)
                torch._dynamo.mark_static_address(vector)  # CUDA graphs read it in place, like weights
                store.append(vector)
        self._active: dict[int, LayerScales] = {}
        self._next = 0
        handles = [hook_site(lm, f"blocks.{i}.mlp.post", self._hook(i)) for i in range(len(self.gains))]
        self.hook_ids: set[int] = {h.id for h in handles}

    def _hook(self, layer: int) -> SiteFn:
        gain, bias = self.gains[layer], self.biases[layer]

        def fn(x: torch.Tensor) -> torch.Tensor | None:
            g, b = (gain, bias) if gain.dtype == x.dtype else (gain.to(x.dtype), bias.to(x.dtype))
            if x.requires_grad and torch.is_grad_enabled():
                return x * g + b
            x.mul_(g).add_(b)
            return None

        return fn

    @property
    def active(self) -> bool:
        """Whether any scaling is currently applied."""
        return bool(self._active)

    def push(self, scales: LayerScales) -> Callable[[], None]:
        """Apply ``scales`` (``{layer: (index [k], factor [k], offset [k] or None)}``); returns the callback
        that removes them."""
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
        for layer, (gain, bias) in enumerate(zip(self.gains, self.biases, strict=True)):
            g = torch.ones(gain.shape, dtype=torch.float32, device=gain.device)
            b = torch.zeros(gain.shape, dtype=torch.float32, device=gain.device)
            for scales in self._active.values():
                if layer in scales:
                    index, factor, offset = scales[layer]
                    idx = index.to(gain.device)
                    f = factor.to(device=gain.device, dtype=torch.float32)
                    o = 0.0 if offset is None else offset.to(device=gain.device, dtype=torch.float32)
                    g[idx], b[idx] = g[idx] * f, b[idx] * f + o
            gain.copy_(g)  # in place: compiled graphs hold this storage
            bias.copy_(b)


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
