"""Residual-stream baselines: activation addition (CAA) and directional ablation, by hooks or by weights.

Sites (see :mod:`neurogate.models.sites`): ``blocks.{L}.resid_pre`` (the stream entering a layer),
``blocks.{L}.attn.out`` (the attention block's write) and ``blocks.{L}.resid_post`` (the stream leaving a
layer), all ``[batch, pos, d_model]``. Which module holds each comes from the architecture table.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import nn

from neurogate.discovery.directions import ResidualDirections
from neurogate.errors import ConfigError, UnsupportedArchitectureError
from neurogate.models.hooks import Handle, cast_cache, check_scale, hook_sites
from neurogate.models.loading import LoadedModel
from neurogate.steering.base import STRENGTH, Intervention, Scale, Source


def add_vector(lm: LoadedModel, layer: int, vector: torch.Tensor, scale: float = 1.0) -> Handle:
    """Add ``scale * vector`` to the residual stream after ``layer``, at every position, until removed."""
    if vector.shape != (lm.adapter.d_model,):
        raise ConfigError(f"the vector must have shape [{lm.adapter.d_model}], got {list(vector.shape)}")
    if not 0 <= layer < lm.adapter.n_layers:
        raise ConfigError(f"layer {layer} is outside 0..{lm.adapter.n_layers - 1}")
    v = cast_cache(vector.float() * scale)
    return hook_sites(
        lm, {f"blocks.{layer}.resid_post": lambda h: h + v(h)}, label=f"add vector at layer {layer}"
    )


def ablate_direction(lm: LoadedModel, direction: torch.Tensor, strength: float = 1.0) -> Handle:
    """Remove ``strength`` times the component along ``direction`` at every residual site, until removed.

    Sites: the input of layer 0, each attention write (``resid_mid``) and each layer output. With
    ``strength=1`` this equals :func:`orthogonalize` (the weight form), up to rounding.
    """
    if direction.shape != (lm.adapter.d_model,):
        raise ConfigError(
            f"the direction must have shape [{lm.adapter.d_model}], got {list(direction.shape)}"
        )
    norm = direction.float().norm()
    if norm == 0:
        raise ConfigError("cannot ablate a zero direction")
    r = cast_cache(direction.float() / norm)

    def project(h: torch.Tensor) -> torch.Tensor:
        rr = r(h)
        return h - strength * (h @ rr).unsqueeze(-1) * rr

    sites = ["blocks.0.resid_pre"]
    for i in range(lm.adapter.n_layers):
        sites += [f"blocks.{i}.attn.out", f"blocks.{i}.resid_post"]
    return hook_sites(lm, dict.fromkeys(sites, project), label="directional ablation")


def _writers(lm: LoadedModel) -> list[tuple[nn.Module, bool]]:
    """Every matrix that writes to the residual stream, with whether its weight is ``[d_in, d_model]``."""
    if lm.adapter.spec.sandwich_norms:
        raise ConfigError(
            f"{lm.adapter.family} normalises each write after its projection, so weight "
            "orthogonalisation cannot reproduce directional ablation; use the hook form (kind 'ablation')"
        )
    if lm.adapter.moe is not None:
        raise ConfigError(
            f"{lm.adapter.family} keeps its experts' down-projections in fused 3-D parameters, which weight "
            "orthogonalisation does not edit; use the hook form (kind 'ablation')"
        )
    conv = lm.adapter.spec.layout == "conv1d"
    out: list[tuple[nn.Module, bool]] = []
    for i in range(lm.adapter.n_layers):
        out += [(lm.adapter.attention_out(i), conv), (lm.adapter.down_proj(i), conv)]
    return out


def _weight(module: nn.Module) -> torch.Tensor:
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor):
        raise UnsupportedArchitectureError(f"{type(module).__name__} has no weight tensor to orthogonalise")
    return weight


def orthogonalize(lm: LoadedModel, direction: torch.Tensor) -> Handle:
    """Project ``direction`` out of the embeddings and every residual-writing matrix (attention output
    and MLP down-projection, biases included), so the stream never carries it. Tied output embeddings
    are untied for the duration. :meth:`Handle.remove` restores the original weights bit-exactly."""
    if direction.shape != (lm.adapter.d_model,):
        raise ConfigError(
            f"the direction must have shape [{lm.adapter.d_model}], got {list(direction.shape)}"
        )
    writers = _writers(lm)
    r = direction.float() / direction.float().norm()
    undo: list[Callable[[], None]] = []

    def edit(param: torch.Tensor, fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
        original = param.data.clone()
        rr = r.to(param.device)
        param.data.copy_(fn(param.data.float(), rr).to(param.dtype))

        def restore() -> None:
            param.data.copy_(original)

        undo.append(restore)

    def rows(w: torch.Tensor, rr: torch.Tensor) -> torch.Tensor:  # rows live in the residual space
        return w - (w @ rr).unsqueeze(-1) * rr

    def cols(w: torch.Tensor, rr: torch.Tensor) -> torch.Tensor:  # columns live in the residual space
        return w - rr.unsqueeze(-1) * (rr @ w).unsqueeze(0)

    model = lm.model
    emb = model.get_input_embeddings()
    head = model.get_output_embeddings()
    with torch.no_grad():
        if isinstance(head, nn.Module) and head.weight is emb.weight:
            tied = _weight(head)
            setattr(head, "weight", nn.Parameter(tied.data.clone(), requires_grad=False))  # noqa: B010
            undo.append(lambda: setattr(head, "weight", tied))
        embeddings = [emb] + [m for m in (lm.adapter.position_embeddings(),) if m is not None]
        for module in embeddings:
            edit(_weight(module), rows)
        for module, conv in writers:
            edit(_weight(module), rows if conv else cols)
            bias = getattr(module, "bias", None)
            if isinstance(bias, torch.Tensor):
                edit(bias, lambda b, rr: b - (b @ rr) * rr)
    return Handle(undo, label="orthogonalised weights")


class _DirectionIntervention(Intervention):
    """An intervention built from residual directions at one layer (default: the directions' best)."""

    scale: ClassVar[Scale] = STRENGTH
    source: ClassVar[Source] = "directions"
    options: ClassVar[tuple[str, ...]] = ("layer",)

    def __init__(
        self, lm: LoadedModel, directions: ResidualDirections, strength: float, layer: int | None = None
    ) -> None:
        super().__init__()
        directions.check_model(lm)
        check_scale([strength], lm.dtype, "strength")
        self.lm = lm
        self.directions = directions
        self.value = float(strength)
        self.layer = directions.best_layer if layer is None else directions.check_layer(layer)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "layer": self.layer}


class ActivationAddition(_DirectionIntervention):
    """CAA: ``h <- h - s * v`` after ``layer`` at every position, ``v = mean_pos - mean_neg``.

    Strength 1 removes one full mean difference; negative strength adds it. ``layer`` defaults to the
    directions' best layer.
    """

    kind: ClassVar[str] = "caa"
    summary: ClassVar[str] = "subtract s times the residual mean difference after one layer"

    def attach(self) -> Handle:
        return add_vector(self.lm, self.layer, self.directions.vector(self.layer), -self.value)


class DirectionalAblation(_DirectionIntervention):
    """Directional ablation: ``h <- h - s * (h . r) r`` at every residual site, with
    ``r = unit(mean_pos - mean_neg)`` at ``layer`` (default: the best layer). Strength 1 removes it fully."""

    kind: ClassVar[str] = "ablation"
    summary: ClassVar[str] = "project s times the unit refusal direction out of every residual site"

    def attach(self) -> Handle:
        return ablate_direction(self.lm, self.directions.unit(self.layer), self.value)
