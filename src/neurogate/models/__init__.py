"""Models: loading any causal LM (hub id, directory, GGUF, offline zoo), the architecture table and its
canonical sites, hooks that undo themselves, the one prompt -> tokens -> batches path, and generation."""

from __future__ import annotations

from typing import TYPE_CHECKING

from neurogate.lazy import lazy_names

if TYPE_CHECKING:
    from neurogate.models.architectures import Adapter, ArchSpec, resolve_adapter, supported_families
    from neurogate.models.generation import Generation, generate
    from neurogate.models.hooks import Handle, hook_site
    from neurogate.models.loading import LoadedModel, load_model, wrap_model
    from neurogate.models.sites import Site, parse_site

#: Where each name lives, imported on first use: a light module of the package (the zoo's names, the
#: command line's help) does not load torch and transformers through this file.
_LAZY = {
    **dict.fromkeys(["Adapter", "ArchSpec", "resolve_adapter", "supported_families"], "architectures"),
    **dict.fromkeys(["Generation", "generate"], "generation"),
    **dict.fromkeys(["Handle", "hook_site"], "hooks"),
    **dict.fromkeys(["LoadedModel", "load_model", "wrap_model"], "loading"),
    **dict.fromkeys(["Site", "parse_site"], "sites"),
}

__getattr__ = lazy_names(__name__, _LAZY)

__all__ = [
    "Adapter",
    "ArchSpec",
    "Generation",
    "Handle",
    "LoadedModel",
    "Site",
    "generate",
    "hook_site",
    "load_model",
    "parse_site",
    "resolve_adapter",
    "supported_families",
    "wrap_model",
]
