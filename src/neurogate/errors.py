"""The neurogate error hierarchy: every error says what went wrong and how to fix it."""

from __future__ import annotations


class NeurogateError(Exception):
    """Base class of every error neurogate raises on purpose."""


class ModelLoadError(NeurogateError):
    """A model or tokenizer could not be found or loaded."""


class UnsupportedArchitectureError(NeurogateError):
    """The model's architecture has no adapter and the generic fallback does not fit it."""


class ZooError(NeurogateError):
    """Pulling, verifying or converting an offline zoo model failed."""


class PromptSetError(NeurogateError):
    """A prompt set could not be read or is unusable (empty, unknown column, ...)."""


class CircuitError(NeurogateError):
    """A circuit file is invalid, or a circuit does not fit the model it is applied to."""


class ConfigError(NeurogateError):
    """An argument or configuration value is out of range or inconsistent."""


class DegenerateError(NeurogateError):
    """An input gives a meaningless result (e.g. two prompt sets with the same prompts): refused unless the
    caller explicitly allows it."""


class EndpointError(NeurogateError):
    """A generation server (an OpenAI-compatible endpoint) could not be reached or refused a request."""
