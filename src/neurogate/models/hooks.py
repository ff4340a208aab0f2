"""Changing a model so that the change can be undone: site hooks and the :class:`Handle`.

Every change neurogate makes to a model (a hook, a weight edit) returns a :class:`Handle` whose
:meth:`Handle.remove` undoes it (idempotent) and which is also a context manager, so the change is undone
even when the body raises. :func:`hook_site` attaches a function to a canonical site
(:mod:`neurogate.models.sites`): the function sees the site's ``[batch, pos, width]`` tensor and returns a
replacement, or ``None`` to keep it (after editing it in place, or after only reading it).
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from neurogate.errors import ConfigError
from neurogate.models import moe
from neurogate.models.sites import Site

if TYPE_CHECKING:
    from neurogate.models.loading import LoadedModel

SiteFn = Callable[[torch.Tensor], torch.Tensor | None]


@runtime_checkable
class Attachable(Protocol):
    """Anything that can change a model until undone: ``attach()`` applies it and returns the
    :class:`Handle` that removes it (every intervention in :mod:`neurogate.steering`)."""

    def attach(self) -> Handle: ...


class Handle:
    """Undo callbacks run (in reverse order) by :meth:`remove`; removing twice is a no-op."""

    def __init__(self, undo: Iterable[Callable[[], None]] = (), *, label: str = "intervention") -> None:
        self._undo: list[Callable[[], None]] = list(undo)
        self.label = label
        self._removed = False

    @classmethod
    def of_hooks(cls, hooks: Iterable[RemovableHandle], *, label: str = "hooks") -> Handle:
        """A handle that removes torch hook handles."""
        return cls([h.remove for h in hooks], label=label)

    @classmethod
    def combine(cls, handles: Iterable[Handle], *, label: str = "combined") -> Handle:
        """One handle over several: removing it removes each, the last one first."""
        return cls([h.remove for h in handles], label=label)

    @property
    def removed(self) -> bool:
        return self._removed

    def remove(self) -> None:
        """Undo the change; later calls do nothing. Every undo step runs even if an earlier one raises."""
        if self._removed:
            return
        self._removed = True
        error: BaseException | None = None
        for undo in reversed(self._undo):
            try:
                undo()
            except BaseException as exc:  # keep undoing the rest, then re-raise the first failure
                error = error or exc
        self._undo.clear()
        if error is not None:
            raise error

    def __enter__(self) -> Handle:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.remove()

    def __repr__(self) -> str:
        state = "removed" if self._removed else "active"
        return f"Handle({self.label}, {state})"


def _pre_hook(fn: SiteFn) -> Callable[..., Any]:
    def hook(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        if not args or not isinstance(args[0], torch.Tensor):
            return None
        new = fn(args[0])
        return None if new is None else (new, *args[1:])

    return hook


def _pre_kwargs_hook(fn: SiteFn) -> Callable[..., Any]:
    def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if args and isinstance(args[0], torch.Tensor):
            new = fn(args[0])
            return None if new is None else ((new, *args[1:]), kwargs)
        if isinstance(kwargs.get("hidden_states"), torch.Tensor):
            new = fn(kwargs["hidden_states"])
            return None if new is None else (args, {**kwargs, "hidden_states": new})
        return None

    return hook


def _output_hook(fn: SiteFn) -> Callable[..., Any]:
    def hook(module: nn.Module, args: Any, output: Any) -> Any:
        hidden = output[0] if isinstance(output, tuple) else output
        if not isinstance(hidden, torch.Tensor):
            return None
        new = fn(hidden)
        if new is None:
            return None
        return (new, *output[1:]) if isinstance(output, tuple) else new

    return hook


def hook_site(lm: LoadedModel, site: Site | str, fn: SiteFn) -> RemovableHandle:
    """Call ``fn`` on ``site``'s tensor at every forward pass until the returned torch handle is removed."""
    module, kind = lm.adapter.resolve(site)
    if kind == "moe":
        return moe.hook_block(module, fn)
    if kind == "pre":
        return module.register_forward_pre_hook(_pre_hook(fn))
    if kind == "pre_kwargs":
        return module.register_forward_pre_hook(_pre_kwargs_hook(fn), with_kwargs=True)
    return module.register_forward_hook(_output_hook(fn))


def hook_sites(lm: LoadedModel, fns: dict[str, SiteFn], *, label: str = "hooks") -> Handle:
    """:func:`hook_site` for several sites at once, as one :class:`Handle` (all or nothing)."""
    hooks: list[RemovableHandle] = []
    try:
        for site, fn in fns.items():
            hooks.append(hook_site(lm, site, fn))
    except BaseException:
        for h in hooks:
            h.remove()
        raise
    return Handle.of_hooks(hooks, label=label)


def cast_cache(vec: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """``like -> vec`` on ``like``'s device and dtype, converted once per (device, dtype)."""
    cache: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}

    def get(like: torch.Tensor) -> torch.Tensor:
        key = (like.device, like.dtype)
        if key not in cache:
            cache[key] = vec.to(device=like.device, dtype=like.dtype)
        return cache[key]

    return get


def scale_limit(dtype: torch.dtype) -> float:
    """The largest multiplier or strength allowed on a model of ``dtype``: the square root of its largest
    finite value, because a scaled activation is squared by the next normalisation (and a value beyond
    it overflows to inf there and turns every later activation into NaN)."""
    return math.sqrt(torch.finfo(dtype).max) if dtype.is_floating_point else math.inf


def check_scale(values: Iterable[float], dtype: torch.dtype, what: str) -> None:
    """Raise :class:`ConfigError` unless every value is finite and within :func:`scale_limit` of ``dtype``
    (checked in the dtype the model computes in, where e.g. 1e40 is already inf in bfloat16)."""
    limit = scale_limit(dtype)
    name = str(dtype).removeprefix("torch.")
    for value in values:
        v = float(value)
        if math.isfinite(v) and abs(v) <= limit:
            continue
        cast = torch.tensor(v, dtype=torch.float64).to(dtype)
        where = (
            "is not finite"
            if not math.isfinite(v)
            else ("overflows to inf" if not bool(torch.isfinite(cast)) else "is finite but too large")
        )
        raise ConfigError(
            f"{what} {v:g} {where} in {name} (largest finite value {torch.finfo(dtype).max:.3g}); scaled "
            f"activations are squared by the next normalisation, so |{what}| must stay below {limit:.3g} on "
            f"a {name} model (useful values lie between about -10 and 10)"
        )


NeuronMap = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]
"""Per layer: neuron indices ``[k]`` (long), factors ``[k]`` and optional offsets ``[k]`` (float)."""
NeuronRouter = Callable[[dict[int, NeuronMap]], Callable[[], None]]
_ROUTERS: weakref.WeakKeyDictionary[nn.Module, NeuronRouter] = weakref.WeakKeyDictionary()


def register_neuron_router(model: nn.Module, router: NeuronRouter) -> None:
    """Send every later :func:`scale_neurons` on ``model`` to ``router`` (which applies the maps and
    returns their undo callback) instead of adding hooks: see :mod:`neurogate.models.gains`."""
    _ROUTERS[model] = router


def scale_neurons(lm: LoadedModel, scales: dict[int, NeuronMap], label: str) -> Handle:
    """Map neurons at the ``mlp.post`` site to ``factor * a + offset`` (offset 0 when ``None``):
    ``scales[layer] = (index, factor, offset)``.

    The down-projection input is a fresh intermediate, so it is changed in place (one gather and one
    scatter on ``k`` columns); under autograd a new tensor is returned instead. On a model with a gain
    table (:mod:`neurogate.models.gains`) the maps go into the table and no hook is added.
    """
    for parts in scales.values():
        check_scale(parts[1].tolist(), lm.dtype, "multiplier")
    router = _ROUTERS.get(lm.model)
    if router is not None:
        return Handle([router(scales)], label=label)
    if lm.adapter.moe is not None:  # expert neurons: scaled on the tokens routed to their experts
        blocks = lm.adapter.down_projs
        return Handle.of_hooks(
            [moe.scale_block(blocks[layer], parts) for layer, parts in scales.items()], label=label
        )

    def make(index: torch.Tensor, factor: torch.Tensor, offset: torch.Tensor | None) -> SiteFn:
        on_device: dict[torch.device, torch.Tensor] = {}
        get_factor = cast_cache(factor)
        get_offset = cast_cache(offset) if offset is not None else None

        def fn(x: torch.Tensor) -> torch.Tensor | None:
            idx = on_device.get(x.device)
            if idx is None:
                idx = on_device[x.device] = index.to(x.device)
            new = x.index_select(-1, idx) * get_factor(x)
            if get_offset is not None:
                new = new + get_offset(x)
            if x.requires_grad and torch.is_grad_enabled():
                return x.index_copy(-1, idx, new)
            x[..., idx] = new
            return None

        return fn

    fns = {f"blocks.{layer}.mlp.post": make(*parts) for layer, parts in scales.items()}
    return hook_sites(lm, fns, label=label)
