"""Mixture-of-experts layers: the flat neuron numbering and the forward pass that reaches expert neurons.

In transformers 5 the routed experts of Mixtral, Qwen2-MoE, Qwen3-MoE and OLMoE live in one ``experts``
module holding 3-D parameters (``gate_up_proj [E, 2*d_expert, d_model]``, ``down_proj [E, d_model,
d_expert]``) and no per-expert ``nn.Linear``; the block's ``gate`` (router) returns ``(logits, top-k
weights, top-k indices)``; Qwen2-MoE adds a ``shared_expert`` (an ordinary gated MLP, scaled by
``sigmoid(shared_expert_gate(x))``) that sees every token.

**Neuron numbering.** One sparse layer's ``mlp.post`` site is a flat vector of ``E * d_expert + d_shared``
neurons: neuron ``j`` of expert ``e`` is ``e * d_expert + j``; neuron ``j`` of the shared expert is
``E * d_expert + j``. A token's entries for the experts it was not routed to are NaN (they were never
computed), the rest are the values entering that expert's down-projection (``act(gate) * up``).

While anything reads or changes the site, the block's forward is replaced on that instance by
:func:`_forward` (one loop over the routed experts, the same arithmetic as transformers' eager experts)
and restored when the last reader or change is removed. Reading (:func:`hook_block`) builds the flat
``[batch, pos, width]`` tensor; scaling (:func:`scale_block`) edits only the routed rows of each touched
expert, without building it.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.hooks import RemovableHandle

SiteFn = Callable[[torch.Tensor], torch.Tensor | None]
Scale = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]
"""Flat neuron indices ``[k]`` (long), factors ``[k]`` and optional offsets ``[k]``."""


@dataclass(frozen=True)
class MoeLayout:
    """The shape of one sparse layer: ``n_experts`` routed experts of ``d_expert`` neurons each, ``top_k``
    experts per token, and a shared expert of ``d_shared`` neurons (0 when there is none)."""

    n_experts: int
    d_expert: int
    top_k: int
    d_shared: int = 0

    @property
    def width(self) -> int:
        """Neurons in the flat numbering (routed experts first, then the shared expert)."""
        return self.n_experts * self.d_expert + self.d_shared

    def split(self, index: int) -> tuple[int | None, int]:
        """Flat ``index`` -> ``(expert, neuron in it)``; expert ``None`` is the shared expert."""
        if not 0 <= index < self.width:
            raise IndexError(f"neuron {index} is outside 0..{self.width - 1}")
        if index >= self.n_experts * self.d_expert:
            return None, index - self.n_experts * self.d_expert
        return index // self.d_expert, index % self.d_expert

    def flat(self, expert: int | None, neuron: int) -> int:
        """The inverse of :meth:`split`."""
        if expert is None:
            return self.n_experts * self.d_expert + neuron
        return expert * self.d_expert + neuron

    def to_dict(self) -> dict[str, int]:
        return {
            "n_experts": self.n_experts,
            "d_expert": self.d_expert,
            "top_k": self.top_k,
            "d_shared": self.d_shared,
        }


def neuron_label(layer: int, index: int, moe: dict[str, Any] | None) -> str:
    """``L3 #12`` for a dense neuron; ``L3 E5 #12`` (expert 5's neuron 12) or ``L3 shared #4`` in a
    sparse layer described by ``moe`` (a :meth:`MoeLayout.to_dict`, as stored in a circuit's shape)."""
    if not moe:
        return f"L{layer} #{index}"
    expert, neuron = MoeLayout(**{k: int(v) for k, v in moe.items()}).split(index)
    return f"L{layer} {'shared' if expert is None else f'E{expert}'} #{neuron}"


def experts_of(block: nn.Module) -> nn.Module | None:
    """The fused ``experts`` module of a sparse block (3-D ``gate_up_proj`` and ``down_proj``), or None."""
    experts = getattr(block, "experts", None)
    if not isinstance(experts, nn.Module) or getattr(block, "gate", None) is None:
        return None
    for name in ("gate_up_proj", "down_proj"):
        param = getattr(experts, name, None)
        if not isinstance(param, torch.Tensor) or param.dim() != 3:
            return None
    return experts


def layout_of(block: nn.Module) -> MoeLayout | None:
    """The :class:`MoeLayout` of a sparse block, or ``None`` when ``block`` is not one."""
    experts = experts_of(block)
    if experts is None:
        return None
    down = experts.down_proj
    assert isinstance(down, torch.Tensor)
    gate = block.gate
    top_k = int(getattr(gate, "top_k", 0) or getattr(block, "top_k", 0))
    shared = getattr(block, "shared_expert", None)
    d_shared = 0
    if isinstance(shared, nn.Module):
        weight = getattr(getattr(shared, "down_proj", None), "weight", None)
        d_shared = int(weight.shape[1]) if isinstance(weight, torch.Tensor) else 0
    return MoeLayout(int(down.shape[0]), int(down.shape[2]), top_k, d_shared)


def down_weights(block: nn.Module) -> list[torch.Tensor]:
    """The down-projection weights of a sparse block in flat order: each expert's ``[d_model, d_expert]``
    (views into the 3-D parameter), then the shared expert's ``[d_model, d_shared]``."""
    experts = experts_of(block)
    assert experts is not None
    down = experts.down_proj
    assert isinstance(down, torch.Tensor)
    out = [down.data[e] for e in range(int(down.shape[0]))]
    shared: Any = getattr(block, "shared_expert", None)
    if shared is not None:
        weight: Any = shared.down_proj.weight
        out.append(weight.data)
    return out


def flat_down_weight(block: nn.Module) -> torch.Tensor:
    """``[d_model, width]``: every down-projection column in flat order (a copy; read it only)."""
    return torch.cat(down_weights(block), dim=1)


class _Site:
    """What reads or changes one sparse block: site functions and scale maps, in registration order."""

    def __init__(self, layout: MoeLayout) -> None:
        self.layout = layout
        self.fns: OrderedDict[int, SiteFn] = OrderedDict()
        self.scales: OrderedDict[int, dict[int | None, Scale]] = OrderedDict()

    def empty(self) -> bool:
        return not self.fns and not self.scales


_SITES: weakref.WeakKeyDictionary[nn.Module, _Site] = weakref.WeakKeyDictionary()


class _BlockHandle(RemovableHandle):
    """Removes one reader or change; the block's own forward comes back with the last one."""

    def __init__(self, block: nn.Module, site: _Site, registry: OrderedDict[int, Any]) -> None:
        super().__init__(registry)
        self._block = weakref.ref(block)
        self._site = site

    def remove(self) -> None:
        super().remove()
        block = self._block()
        if block is not None and self._site.empty() and _SITES.get(block) is self._site:
            del _SITES[block]
            block.__dict__.pop("forward", None)


def _site(block: nn.Module) -> _Site:
    site = _SITES.get(block)
    if site is None:
        layout = layout_of(block)
        if layout is None:
            raise ValueError(f"{type(block).__name__} is not a sparse mixture-of-experts block")
        site = _SITES[block] = _Site(layout)
        block.forward = _forward.__get__(block)  # instance attribute: shadows the class's forward
    return site


def hook_block(block: nn.Module, fn: SiteFn) -> RemovableHandle:
    """Call ``fn`` on the block's flat ``[batch, pos, width]`` neuron tensor (NaN where a token was not
    routed) at every forward pass; ``fn`` edits it in place or returns a replacement (read back only at
    routed entries). Removing the handle detaches ``fn``."""
    site = _site(block)
    handle = _BlockHandle(block, site, site.fns)
    site.fns[handle.id] = fn
    return handle


def split_scale(layout: MoeLayout, scale: Scale) -> dict[int | None, Scale]:
    """A flat scale map cut into one map per expert (local indices; key ``None``: the shared expert)."""
    index, factor, offset = scale
    expert = torch.div(index, layout.d_expert, rounding_mode="floor").clamp_max(layout.n_experts)
    out: dict[int | None, Scale] = {}
    for e in sorted({int(v) for v in expert.tolist()}):
        mask = expert == e
        shared = e == layout.n_experts
        local = index[mask] - (layout.n_experts * layout.d_expert if shared else e * layout.d_expert)
        out[None if shared else e] = (local, factor[mask], None if offset is None else offset[mask])
    return out


def scale_block(block: nn.Module, scale: Scale) -> RemovableHandle:
    """Map the given flat neurons to ``factor * a + offset`` on the tokens routed to their experts (the
    shared expert's on every token), until the handle is removed."""
    site = _site(block)
    handle = _BlockHandle(block, site, site.scales)
    site.scales[handle.id] = split_scale(site.layout, scale)
    return handle


def _apply(h: torch.Tensor, scale: Scale) -> torch.Tensor:
    index, factor, offset = scale
    idx = index.to(h.device)
    new = h.index_select(-1, idx) * factor.to(h.device, h.dtype)
    if offset is not None:
        new = new + offset.to(h.device, h.dtype)
    return h.index_copy(-1, idx, new)


def _edit(
    site: _Site,
    shape: torch.Size,
    routed: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    shared_h: torch.Tensor | None,
) -> torch.Tensor | None:
    """Run the site functions on the flat tensor, then the scale maps; ``routed[e] = (tokens, slots, h)``
    is updated in place with the edited activations; returns the edited shared activations."""
    layout = site.layout
    if site.fns:
        ref = shared_h if shared_h is not None else next(iter(routed.values()))[2]
        n_tokens = shape[:-1].numel()
        flat = torch.full((n_tokens, layout.width), float("nan"), dtype=ref.dtype, device=ref.device)
        for e, (tokens, _slots, h) in routed.items():
            flat[tokens, e * layout.d_expert : (e + 1) * layout.d_expert] = h
        if shared_h is not None:
            flat[:, layout.n_experts * layout.d_expert :] = shared_h
        view = flat.view(*shape[:-1], layout.width)
        for fn in list(site.fns.values()):
            new = fn(view)
            if new is not None:
                view = new
        flat = view.reshape(n_tokens, layout.width)
        for e, (tokens, slots, _h) in list(routed.items()):
            routed[e] = (tokens, slots, flat[tokens, e * layout.d_expert : (e + 1) * layout.d_expert])
        if shared_h is not None:
            shared_h = flat[:, layout.n_experts * layout.d_expert :]
    for maps in list(site.scales.values()):
        for key, scale in maps.items():
            if key is None:
                if shared_h is not None:
                    shared_h = _apply(shared_h, scale)
            elif key in routed:
                tokens, slots, h = routed[key]
                routed[key] = (tokens, slots, _apply(h, scale))
    return shared_h


def _forward(block: nn.Module, hidden_states: torch.Tensor) -> torch.Tensor:
    """The sparse block's forward with its neurons exposed (see the module docstring)."""
    site = _SITES[block]
    gate: Any = block.gate
    experts: Any = block.experts
    shape = hidden_states.shape
    x = hidden_states.reshape(-1, shape[-1])
    _, top_weights, top_index = gate(x)
    routed: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
    with torch.no_grad():
        hit = torch.unique(top_index).tolist()
    for e in (int(v) for v in hit):
        if not 0 <= e < site.layout.n_experts:
            continue
        tokens, slots = torch.where(top_index == e)
        gate, up = F.linear(x[tokens], experts.gate_up_proj[e]).chunk(2, dim=-1)
        routed[e] = (tokens, slots, experts.act_fn(gate) * up)
    shared: Any = getattr(block, "shared_expert", None)
    shared_h = shared.act_fn(shared.gate_proj(x)) * shared.up_proj(x) if shared is not None else None
    if routed or shared_h is not None:
        shared_h = _edit(site, shape, routed, shared_h)
    out = torch.zeros_like(x)
    for e, (tokens, slots, h) in routed.items():
        y = F.linear(h, experts.down_proj[e]) * top_weights[tokens, slots, None]
        out.index_add_(0, tokens, y.to(out.dtype))
    if shared is not None and shared_h is not None:
        shared_gate: Any = block.shared_expert_gate
        shared_out = torch.sigmoid(shared_gate(x)) * shared.down_proj(shared_h)
        out = out + shared_out
    return out.reshape(shape)
