"""The recorder: hooks that copy chosen positions of a site kind, at every layer, during one forward pass.

A :class:`Recorder` hooks one or more site kinds of every layer (canonical names in
:mod:`neurogate.models.sites`: ``mlp.post`` for the MLP neurons, ``resid_post`` for the residual stream,
...) and copies the chosen positions of each row into a float32 buffer. Once the last layer's last recorded
site has been read, the hook stops the forward pass, so nothing after it (final norm, LM head) runs.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal

import torch

from neurogate.models.hooks import SiteFn, hook_site
from neurogate.models.loading import LoadedModel
from neurogate.models.prefix import cache_kwarg
from neurogate.models.sites import NEURONS, SiteKind, check_kind

Reduce = Literal["first", "mean", "max", "none"]
# the order in which a decoder layer reaches each site, to know which one is read last
_SITE_ORDER = {"resid_pre": 0, "attn.out": 1, "mlp.post": 2, "resid_post": 3}


class _StopForward(Exception):
    """Raised by the last recorded site's hook once everything needed has been captured."""


class Recorder:
    """Hooks that record chosen positions of every layer's sites of the given kinds.

    :meth:`run` takes ``positions``, ``[batch, P]`` indices into the position axis, and returns
    ``{kind: values}`` in float32: ``[batch, P, n_layers, width]`` with ``reduce="none"``, else
    ``[batch, n_layers, width]`` holding the first of the P positions (``"first"``), or their mean or max.
    With ``stop=True`` the last site's hook raises a private exception that :meth:`run` catches.
    ``remove()`` takes the hooks off.
    """

    def __init__(
        self,
        lm: LoadedModel,
        kinds: Sequence[SiteKind] = (NEURONS,),
        *,
        stop: bool = True,
        reduce: Reduce = "first",
    ) -> None:
        self.lm = lm
        self.kinds = tuple(dict.fromkeys(check_kind(k) for k in kinds))
        if not self.kinds:
            raise ValueError("a Recorder needs at least one site kind")
        self.stop = stop
        self.reduce = reduce
        self.positions: torch.Tensor | None = None
        self.values: dict[str, torch.Tensor] = {}
        self._handles: list[Any] = []
        n = lm.adapter.n_layers
        last_kind = max(self.kinds, key=_SITE_ORDER.__getitem__)
        try:
            for layer in range(n):
                for kind in self.kinds:
                    is_stop = stop and layer == n - 1 and kind == last_kind
                    fn = self._reader(kind, layer, is_stop)
                    self._handles.append(hook_site(lm, f"blocks.{layer}.{kind}", fn))
        except BaseException:
            self.remove()
            raise

    def _reader(self, kind: str, layer: int, is_stop: bool) -> SiteFn:
        def read(site: torch.Tensor) -> None:
            if self.positions is not None:
                rows = torch.arange(site.shape[0], device=site.device)[:, None]
                picked = site[rows, self.positions.to(site.device)].to(torch.float32)  # [batch, P, width]
                out = self.values[kind]
                if self.reduce == "none":
                    out[:, :, layer] = picked.to(out.device)
                elif self.reduce == "mean":
                    out[:, layer] = picked.mean(1).to(out.device)
                elif self.reduce == "max":
                    out[:, layer] = picked.amax(1).to(out.device)
                else:
                    out[:, layer] = picked[:, 0].to(out.device)
            if is_stop:
                raise _StopForward

        return read

    def _buffer(self, kind: str, positions: torch.Tensor) -> torch.Tensor:
        adapter = self.lm.adapter
        shape: tuple[int, ...] = (positions.shape[0], adapter.n_layers, adapter.width(f"blocks.0.{kind}"))
        if self.reduce == "none":
            shape = (shape[0], positions.shape[1], *shape[1:])
        return torch.empty(shape, dtype=torch.float32, device=self.lm.device)

    def run(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        positions: torch.Tensor | None,
        *,
        position_ids: torch.Tensor | None = None,
        cache: Any = None,
    ) -> dict[str, torch.Tensor]:
        """One forward pass; returns the recorded values when ``positions`` (``[batch]`` or ``[batch, P]``)
        is set (an empty dict when it is ``None``, which runs without recording, e.g. to fill a cache)."""
        if positions is not None and positions.dim() == 1:
            positions = positions[:, None]
        self.positions = positions
        self.values = {k: self._buffer(k, positions) for k in self.kinds} if positions is not None else {}
        kwargs: dict[str, Any] = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "use_cache": cache is not None,
        }
        if position_ids is not None:
            kwargs["position_ids"] = position_ids
        if cache is not None:
            kwargs[cache_kwarg(self.lm.model)] = cache
        try:
            self.lm.model(**kwargs)
        except _StopForward:
            pass
        else:
            if self.stop:
                raise RuntimeError("the forward pass finished without reaching the last recorded site")
        values, self.values, self.positions = self.values, {}, None
        return values

    def remove(self) -> None:
        """Take every hook off (idempotent)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


@contextmanager
def recording(
    lm: LoadedModel, kinds: Sequence[SiteKind] = (NEURONS,), *, stop: bool = True, reduce: Reduce = "first"
) -> Iterator[Recorder]:
    """A :class:`Recorder` on ``lm`` whose hooks are removed however the block ends."""
    recorder = Recorder(lm, kinds, stop=stop, reduce=reduce)
    try:
        yield recorder
    finally:
        recorder.remove()
