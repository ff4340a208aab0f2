"""neurogate: find the few MLP neurons that carry a behaviour in a language model, and turn it down or up."""

from __future__ import annotations

__version__ = "0.1.0"

from neurogate.adapters import Adapter, ArchSpec, resolve_adapter, supported_families
from neurogate.circuit import Circuit, Neuron
from neurogate.errors import (
    CircuitError,
    ConfigError,
    ModelLoadError,
    NeurogateError,
    PromptSetError,
    UnsupportedArchitectureError,
    ZooError,
)
from neurogate.loading import LoadedModel, load_model, wrap_model

__all__ = [
    "Adapter",
    "ArchSpec",
    "Circuit",
    "CircuitError",
    "ConfigError",
    "LoadedModel",
    "ModelLoadError",
    "NeurogateError",
    "Neuron",
    "PromptSetError",
    "UnsupportedArchitectureError",
    "ZooError",
    "__version__",
    "load_model",
    "resolve_adapter",
    "supported_families",
    "wrap_model",
]
