"""Residual-stream baselines: activation addition (CAA) and directional ablation, by hooks or by weights.

Sites: ``resid_pre`` (the input of layer 0, i.e. the embedding output), ``resid_mid`` (after a layer's
attention write) and ``resid_post`` (a decoder layer's output). All are ``[batch, pos, d_model]``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from neurogate.directions import ResidualDirections
from neurogate.errors import ConfigError, UnsupportedArchitectureError
from neurogate.interventions.base import Handle, Intervention
from neurogate.loading import LoadedModel

_ATTENTION = ("self_attn", "attn", "attention")
_ATTENTION_OUT = ("self_attn.o_proj", "attn.c_proj", "attention.dense", "self_attn.dense")


def _path(root: nn.Module, path: str) -> nn.Module | None:
    obj: Any = root
    for part in path.split("."):
        obj = getattr(obj, part, None)
    return obj if isinstance(obj, nn.Module) else None


def _post_norm(layer: nn.Module) -> bool:
    """Sandwich-norm layers (Gemma 2/3, OLMo 2) normalise each write before adding it to the stream."""
    return _path(layer, "post_feedforward_layernorm") is not None


def _attention_writer(layer: nn.Module) -> nn.Module:
    """The module whose output is the attention block's write into the residual stream."""
    if _post_norm(layer):
        found = _path(layer, "post_attention_layernorm")
        if found is not None:
            return found
    for name in _ATTENTION:
        found = _path(layer, name)
        if found is not None:
            return found
    raise UnsupportedArchitectureError(
        f"{type(layer).__name__} has no attention module named {' or '.join(_ATTENTION)}; directional "
        "ablation needs it to reach the mid-layer residual stream"
    )


def _map_output(fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """A forward hook that replaces a module's hidden-state output (a tensor or a tuple's first item)."""

    def hook(module: nn.Module, args: Any, output: Any) -> Any:
        if isinstance(output, tuple):
            return (fn(output[0]), *output[1:])
        return fn(output)

    return hook


def _map_input(fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """A forward pre-hook (with kwargs) that replaces a decoder layer's hidden-state input."""

    def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if args and isinstance(args[0], torch.Tensor):
            return (fn(args[0]), *args[1:]), kwargs
        if isinstance(kwargs.get("hidden_states"), torch.Tensor):
            return args, {**kwargs, "hidden_states": fn(kwargs["hidden_states"])}
        return None

    return hook


def _cast(vec: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """``like -> vec`` on ``like``'s device and dtype, cached."""
    cache: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}

    def get(like: torch.Tensor) -> torch.Tensor:
        key = (like.device, like.dtype)
        if key not in cache:
            cache[key] = vec.to(device=like.device, dtype=like.dtype)
        return cache[key]

    return get


def add_vector(lm: LoadedModel, layer: int, vector: torch.Tensor, scale: float = 1.0) -> Handle:
    """Add ``scale * vector`` to the residual stream after ``layer``, at every position, until removed."""
    if vector.shape != (lm.adapter.d_model,):
        raise ConfigError(f"the vector must have shape [{lm.adapter.d_model}], got {list(vector.shape)}")
    if not 0 <= layer < lm.adapter.n_layers:
        raise ConfigError(f"layer {layer} is outside 0..{lm.adapter.n_layers - 1}")
    v = _cast(vector.float() * scale)
    hook = lm.adapter.layer(layer).register_forward_hook(_map_output(lambda h: h + v(h)))
    return Handle.of_hooks([hook], label=f"add vector at layer {layer}")


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
    r = _cast(direction.float() / norm)

    def project(h: torch.Tensor) -> torch.Tensor:
        rr = r(h)
        return h - strength * (h @ rr).unsqueeze(-1) * rr

    hooks = [lm.adapter.layer(0).register_forward_pre_hook(_map_input(project), with_kwargs=True)]
    for i in range(lm.adapter.n_layers):
        layer = lm.adapter.layer(i)
        hooks.append(_attention_writer(layer).register_forward_hook(_map_output(project)))
        hooks.append(layer.register_forward_hook(_map_output(project)))
    return Handle.of_hooks(hooks, label="directional ablation")


def _writers(lm: LoadedModel) -> list[tuple[nn.Module, bool]]:
    """Every matrix that writes to the residual stream, with whether its weight is ``[d_in, d_model]``."""
    out: list[tuple[nn.Module, bool]] = []
    conv = lm.adapter.spec.layout == "conv1d"
    for i in range(lm.adapter.n_layers):
        layer = lm.adapter.layer(i)
        if _post_norm(layer):
            raise ConfigError(
                f"{lm.adapter.family} normalises each write after its projection, so weight "
                "orthogonalisation cannot reproduce directional ablation; use the hook form (kind 'ablation')"
            )
        attn = next((m for m in (_path(layer, p) for p in _ATTENTION_OUT) if m is not None), None)
        if attn is None:
            raise UnsupportedArchitectureError(
                f"no attention output projection ({', '.join(_ATTENTION_OUT)}) in {type(layer).__name__}"
            )
        out += [(attn, conv), (lm.adapter.down_proj(i), conv)]
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
        embeddings = [emb] + [m for m in (_path(model, "transformer.wpe"),) if m is not None]
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

    def __init__(
        self, lm: LoadedModel, directions: ResidualDirections, strength: float, layer: int | None = None
    ) -> None:
        super().__init__()
        directions.check_model(lm)
        self.lm = lm
        self.directions = directions
        self.strength = float(strength)
        self.layer = directions.best_layer if layer is None else directions._check(layer)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "strength": self.strength, "layer": self.layer}


class ActivationAddition(_DirectionIntervention):
    """CAA: ``h <- h - strength * v`` after ``layer`` at every position, ``v = mean_pos - mean_neg``.

    Strength 1 removes one full mean difference; negative strength adds it. ``layer`` defaults to the
    directions' best layer.
    """

    kind = "caa"

    def attach(self) -> Handle:
        return add_vector(self.lm, self.layer, self.directions.vector(self.layer), -self.strength)


class DirectionalAblation(_DirectionIntervention):
    """Directional ablation: ``h <- h - strength * (h . r) r`` at every residual site, with
    ``r = unit(mean_pos - mean_neg)`` at ``layer`` (default: the best layer). Strength 1 removes it fully."""

    kind = "ablation"

    def attach(self) -> Handle:
        return ablate_direction(self.lm, self.directions.unit(self.layer), self.strength)
