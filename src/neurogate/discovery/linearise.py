"""A linearised backward pass: the model's forward values unchanged, its gradients made linear.

Inside :func:`linearised` every forward pass computes exactly what the model computes, but the backward
pass follows a linear stand-in for each nonlinear part, so that gradient x activation adds up along paths:

* **normalisation**: each RMSNorm / LayerNorm denominator (the per-position scale) is treated as a
  constant; the centring of LayerNorm and the learned weight stay (they are linear);
* **attention**: eager attention, with the attention pattern treated as a constant (the query and key
  are detached before the pattern is formed, so gradients flow through the values only);
* **MLP**: the activation function passes gradients through its value ratio ``act(g) / g`` (so
  ``act(g)`` reads as a linear function of ``g``), and in a gated MLP the gradient through the product
  ``act(gate) * up`` is split half and half between the two factors (so the product, quadratic in its
  input, is shared out once and not twice).

Each stand-in is a straight-through term ``y.detach() + L(x - x.detach())``: its value is the model's
own output ``y`` and its gradient is the linear map ``L``. Everything is undone by the returned
:class:`~neurogate.models.hooks.Handle`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from neurogate.errors import UnsupportedArchitectureError
from neurogate.models.architectures import get_path
from neurogate.models.hooks import Handle
from neurogate.models.loading import LoadedModel

FROZEN_ATTENTION = "neurogate_frozen_pattern"
_ACT_NAMES = ("act_fn", "activation_fn", "act")
_registered = False


def _delta(x: torch.Tensor) -> torch.Tensor:
    """Zero in value, the identity in gradient: the variable a straight-through term differentiates."""
    return x - x.detach()


def _half_grad(x: torch.Tensor) -> torch.Tensor:
    """``x`` in value, half of the gradient flowing back through it."""
    return x.detach() + 0.5 * _delta(x)


def _eps(module: nn.Module) -> float:
    for name in ("variance_epsilon", "eps", "epsilon"):
        value = getattr(module, name, None)
        if isinstance(value, int | float):
            return float(value)
    raise UnsupportedArchitectureError(
        f"the norm {type(module).__name__} names no epsilon (variance_epsilon or eps), so its scale cannot "
        "be held constant"
    )


def _rms_hook() -> Callable[..., Any]:
    """RMSNorm, ``y = w * x / rms(x)``: the gradient is ``w / rms(x)`` per channel, ``rms`` constant.
    ``w`` (``weight`` or ``1 + weight``, by family) is read off the module's output for a constant
    input, once per module, so every variant of the weight is covered."""
    weights: dict[int, torch.Tensor] = {}

    def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> Any:
        x = args[0] if args else None
        if not isinstance(x, torch.Tensor) or not isinstance(output, torch.Tensor) or not x.requires_grad:
            return None
        eps = _eps(module)
        with torch.no_grad():
            if id(module) not in weights:
                probe = module(torch.ones(1, x.shape[-1], device=x.device, dtype=x.dtype)).float()
                weights[id(module)] = probe[0] * (1.0 + eps) ** 0.5
            inv_rms = torch.rsqrt(x.detach().float().pow(2).mean(-1, keepdim=True) + eps)
            slope = (weights[id(module)] * inv_rms).to(output.dtype)
        return output.detach() + _delta(x).to(output.dtype) * slope

    return hook


def _layer_norm_hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> Any:
    """LayerNorm, ``y = w * (x - mean) / std(x) + b``: centring and ``w`` kept, ``std`` constant."""
    x = args[0] if args else None
    if not isinstance(x, torch.Tensor) or not isinstance(output, torch.Tensor) or not x.requires_grad:
        return None
    eps = _eps(module)
    with torch.no_grad():
        inv_std = torch.rsqrt(x.detach().float().var(-1, unbiased=False, keepdim=True) + eps)
    dx = _delta(x).float()
    lin = (dx - dx.mean(-1, keepdim=True)) * inv_std
    weight = getattr(module, "weight", None)
    if isinstance(weight, torch.Tensor):
        lin = lin * weight.float()
    return output.detach() + lin.to(output.dtype)


def _act_hook(share: float) -> Callable[..., Any]:
    """The activation ``a = act(g)`` passes gradient through ``a / g`` (times ``share``: 0.5 in a gated
    MLP, where the other half goes to the up-projection)."""

    def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> Any:
        g = args[0] if args else None
        if not isinstance(g, torch.Tensor) or not isinstance(output, torch.Tensor) or not g.requires_grad:
            return None
        with torch.no_grad():
            gf, af = g.detach().float(), output.detach().float()
            tiny = gf.abs() < 1e-6
            ratio = torch.where(tiny, torch.full_like(af, 0.5), af / torch.where(tiny, 1.0, gf))
        return output.detach() + (share * _delta(g).float() * ratio).to(output.dtype)

    return hook


def _up_hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> Any:
    """Half of the product's gradient to the up-projection."""
    return _half_grad(output) if isinstance(output, torch.Tensor) and output.requires_grad else None


def _fused_up_hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> Any:
    """A fused ``gate_up_proj`` (Phi-3: gate first, up second): half the gradient to the up half."""
    if not isinstance(output, torch.Tensor) or not output.requires_grad:
        return None
    gate, up = output.chunk(2, dim=-1)
    return torch.cat((gate, _half_grad(up)), dim=-1)


def _mlp_hooks(lm: LoadedModel) -> list[RemovableHandle]:
    """Hooks on every layer's activation function and, in gated MLPs, its up-projection."""
    hooks: list[RemovableHandle] = []
    seen: set[int] = set()
    parent = lm.adapter.spec.down_proj.rpartition(".")[0]
    for layer in range(lm.adapter.n_layers):
        mlp = get_path(lm.adapter.layer(layer), parent) if parent else lm.adapter.layer(layer)
        act = next((m for n in _ACT_NAMES if (m := get_path(mlp, n)) is not None), None) if mlp else None
        if mlp is None or act is None:
            raise UnsupportedArchitectureError(
                f"{lm.adapter.family}: layer {layer}'s MLP has no activation module "
                f"({', '.join(_ACT_NAMES)}), so its nonlinearity cannot be linearised"
            )
        up, fused = get_path(mlp, "up_proj"), get_path(mlp, "gate_up_proj")
        gated = up is not None or fused is not None
        if id(act) in seen:
            raise UnsupportedArchitectureError("the MLP layers share one activation module; cannot linearise")
        seen.add(id(act))
        hooks.append(act.register_forward_hook(_act_hook(0.5 if gated else 1.0)))
        if up is not None:
            hooks.append(up.register_forward_hook(_up_hook))
        elif fused is not None:
            hooks.append(fused.register_forward_hook(_fused_up_hook))
    return hooks


def _norm_hooks(model: nn.Module) -> list[RemovableHandle]:
    """Hooks holding every norm's scale constant."""
    hooks: list[RemovableHandle] = []
    rms = _rms_hook()
    for module in model.modules():
        name = type(module).__name__
        if isinstance(module, nn.LayerNorm) or (name.endswith("LayerNorm") and hasattr(module, "bias")):
            hooks.append(module.register_forward_hook(_layer_norm_hook))
        elif name.endswith("RMSNorm"):
            hooks.append(module.register_forward_hook(rms))
    return hooks


def _frozen_pattern_attention(
    module: nn.Module, query: torch.Tensor, key: torch.Tensor, *args: Any, **kwargs: Any
) -> Any:
    """The family's own eager attention with the pattern constant: query and key detached."""
    eager = getattr(sys.modules[type(module).__module__], "eager_attention_forward", None)
    if eager is None:
        raise UnsupportedArchitectureError(
            f"{type(module).__name__} has no eager_attention_forward in its module, so its attention "
            "pattern cannot be held constant"
        )
    return eager(module, query.detach(), key.detach(), *args, **kwargs)


def _register_attention() -> None:
    """Make :data:`FROZEN_ATTENTION` a transformers attention implementation (with the eager mask)."""
    global _registered
    if _registered:
        return
    from transformers.masking_utils import AttentionMaskInterface, eager_mask
    from transformers.modeling_utils import AttentionInterface

    AttentionInterface.register(FROZEN_ATTENTION, _frozen_pattern_attention)
    AttentionMaskInterface.register(FROZEN_ATTENTION, eager_mask)
    _registered = True


def _configs(model: nn.Module) -> list[Any]:
    """Every distinct config among the model's modules (attention modules read their own)."""
    found: dict[int, Any] = {}
    for module in model.modules():
        config = getattr(module, "config", None)
        if config is not None and hasattr(config, "_attn_implementation"):
            found.setdefault(id(config), config)
    return list(found.values())


def switch_attention(lm: LoadedModel, name: str) -> Callable[[], None]:
    """Run the model's attention as ``name`` (``"eager"``, or :data:`FROZEN_ATTENTION`); returns the undo."""
    if name == FROZEN_ATTENTION:
        _register_attention()
    configs = _configs(lm.model)
    before = [c._attn_implementation for c in configs]
    for config in configs:
        config._attn_implementation = name

    def undo() -> None:
        for config, old in zip(configs, before, strict=True):
            config._attn_implementation = old

    return undo


@contextmanager
def attention_implementation(lm: LoadedModel, name: str) -> Iterator[None]:
    """:func:`switch_attention` for the body of a ``with`` block."""
    undo = switch_attention(lm, name)
    try:
        yield
    finally:
        undo()


def linearised(lm: LoadedModel) -> Handle:
    """Linearise the model's backward pass (see the module docstring) until the handle is removed.
    Forward values are the model's own (with eager attention)."""
    hooks: list[RemovableHandle] = []
    try:
        hooks += _norm_hooks(lm.model)
        hooks += _mlp_hooks(lm)
    except BaseException:
        for h in hooks:
            h.remove()
        raise
    undo = switch_attention(lm, FROZEN_ATTENTION)
    return Handle([undo, *(h.remove for h in hooks)], label="linearised backward")
