"""Models: loading any causal LM (hub id, directory, GGUF, offline zoo), the architecture table and its
canonical sites, hooks that undo themselves, the one prompt -> tokens -> batches path, and generation."""

from neurogate.models.architectures import Adapter, ArchSpec, resolve_adapter, supported_families
from neurogate.models.generation import Generation, generate
from neurogate.models.hooks import Handle, hook_site
from neurogate.models.loading import LoadedModel, load_model, wrap_model
from neurogate.models.sites import Site, parse_site

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
