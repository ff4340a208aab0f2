"""Canonical names of the places neurogate reads or changes a model, one per layer and kind.

A site is written ``blocks.{L}.{kind}``; every kind is a ``[batch, pos, width]`` tensor:

===================  ==========  ===================================================================
kind                 width       what it is
===================  ==========  ===================================================================
``mlp.post``         d_mlp       the MLP neurons: the input of the down-projection, after the
                                 activation function and gate (``act(gate(x)) * up(x)``)
``resid_pre``        d_model     the residual stream entering decoder layer L
``attn.out``         d_model     the attention block's write into the residual stream (after its
                                 output norm, in families that normalise each write)
``resid_post``       d_model     the residual stream leaving decoder layer L
===================  ==========  ===================================================================

:class:`~neurogate.models.architectures.Adapter` resolves each site to a module and hook type.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from neurogate.errors import ConfigError

SiteKind = Literal["mlp.post", "resid_pre", "attn.out", "resid_post"]
SITE_KINDS: tuple[str, ...] = ("mlp.post", "resid_pre", "attn.out", "resid_post")
NEURONS: SiteKind = "mlp.post"
RESIDUAL: SiteKind = "resid_post"

_PATTERN = re.compile(r"^blocks\.(\d+)\.(" + "|".join(re.escape(k) for k in SITE_KINDS) + r")$")


@dataclass(frozen=True)
class Site:
    """One site: a layer index and a kind (see the module docstring)."""

    layer: int
    kind: SiteKind

    @property
    def name(self) -> str:
        return f"blocks.{self.layer}.{self.kind}"

    def __str__(self) -> str:
        return self.name


def parse_site(name: str | Site) -> Site:
    """``"blocks.3.mlp.post"`` -> ``Site(3, "mlp.post")``; a clear error for anything else."""
    if isinstance(name, Site):
        return name
    match = _PATTERN.match(name)
    if match is None:
        raise ConfigError(
            f"unknown site {name!r}: sites are named blocks.LAYER.KIND with KIND one of "
            f"{', '.join(SITE_KINDS)}, e.g. blocks.12.mlp.post"
        )
    return Site(int(match.group(1)), match.group(2))  # type: ignore[arg-type]


def check_kind(kind: str) -> SiteKind:
    """Validate a site kind name."""
    if kind not in SITE_KINDS:
        raise ConfigError(f"unknown site kind {kind!r}; use one of {', '.join(SITE_KINDS)}")
    return kind  # type: ignore[return-value]
