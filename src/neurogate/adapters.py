"""Architecture adapters: where each model family keeps its decoder layers and MLP neuron site.

The *neuron site* is the input of a layer's MLP down-projection, shape ``[batch, pos, d_mlp]``: the
post-activation neuron values (``act(gate(x)) * up(x)`` in gated MLPs, ``act(fc(x))`` otherwise).
The *residual stream* of layer ``i`` is the hidden state a decoder layer returns, ``[batch, pos, d_model]``.

Adding a family is one :class:`ArchSpec` entry in :data:`ARCHITECTURES`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import nn

from neurogate.errors import UnsupportedArchitectureError

WeightLayout = Literal["linear", "conv1d"]


@dataclass(frozen=True)
class ArchSpec:
    """Where one architecture family keeps its parts, as attribute paths from the causal-LM model.

    ``layers``: candidate paths to the ``ModuleList`` of decoder layers (first that exists wins).
    ``down_proj``: path from a decoder layer to its MLP down-projection module.
    ``layout``: ``"linear"`` when the down-projection weight is ``[d_model, d_mlp]`` (``nn.Linear``),
    ``"conv1d"`` when it is ``[d_mlp, d_model]`` (GPT-2's ``Conv1D``).
    """

    family: str
    model_types: tuple[str, ...]
    layers: tuple[str, ...]
    down_proj: str
    layout: WeightLayout = "linear"


_DECODER = ("model.layers", "model.language_model.layers", "language_model.model.layers")

ARCHITECTURES: tuple[ArchSpec, ...] = (
    ArchSpec("llama", ("llama",), _DECODER, "mlp.down_proj"),
    ArchSpec("mistral", ("mistral",), _DECODER, "mlp.down_proj"),
    ArchSpec("qwen2", ("qwen2",), _DECODER, "mlp.down_proj"),
    ArchSpec("qwen3", ("qwen3",), _DECODER, "mlp.down_proj"),
    ArchSpec("gemma", ("gemma",), _DECODER, "mlp.down_proj"),
    ArchSpec("gemma2", ("gemma2",), _DECODER, "mlp.down_proj"),
    ArchSpec("gemma3", ("gemma3_text", "gemma3"), _DECODER, "mlp.down_proj"),
    ArchSpec("phi3", ("phi3",), _DECODER, "mlp.down_proj"),
    ArchSpec("olmo2", ("olmo2",), _DECODER, "mlp.down_proj"),
    ArchSpec("gpt2", ("gpt2",), ("transformer.h",), "mlp.c_proj", layout="conv1d"),
    ArchSpec("gpt_neox", ("gpt_neox",), ("gpt_neox.layers",), "mlp.dense_4h_to_h"),
)

_GENERIC = ArchSpec("generic", (), _DECODER, "mlp.down_proj")


def _get_path(root: nn.Module, path: str) -> nn.Module | None:
    obj: object = root
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj if isinstance(obj, nn.Module) else None


@dataclass(frozen=True)
class Adapter:
    """A resolved architecture adapter bound to one model instance."""

    spec: ArchSpec
    layers: nn.ModuleList
    down_projs: tuple[nn.Module, ...]
    d_mlp: int
    d_model: int

    @property
    def family(self) -> str:
        return self.spec.family

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @property
    def n_neurons(self) -> int:
        """Total MLP neurons across all layers."""
        return self.n_layers * self.d_mlp

    def down_proj(self, layer: int) -> nn.Module:
        """The down-projection module of ``layer``; its input is the neuron site."""
        return self.down_projs[layer]

    def layer(self, layer: int) -> nn.Module:
        """The decoder layer ``layer``; its output is the residual stream after that layer."""
        return self.layers[layer]


def supported_families() -> list[str]:
    """Names of the architecture families with a declared adapter."""
    return [spec.family for spec in ARCHITECTURES]


def _widths(module: nn.Module, layout: WeightLayout) -> tuple[int, int]:
    weight = getattr(module, "weight", None)
    if weight is None or weight.dim() != 2:
        raise UnsupportedArchitectureError(
            f"the down-projection {type(module).__name__} has no 2-D weight; neurogate needs one to read "
            "the number of neurons"
        )
    if layout == "conv1d":
        return int(weight.shape[0]), int(weight.shape[1])
    return int(weight.shape[1]), int(weight.shape[0])


def _bind(model: nn.Module, spec: ArchSpec) -> Adapter | None:
    for path in spec.layers:
        layers = _get_path(model, path)
        if isinstance(layers, nn.ModuleList) and len(layers) > 0:
            downs = tuple(_get_path(layer, spec.down_proj) for layer in layers)
            if any(d is None for d in downs):
                return None
            found = tuple(d for d in downs if d is not None)
            d_mlp, d_model = _widths(found[0], spec.layout)
            return Adapter(spec=spec, layers=layers, down_projs=found, d_mlp=d_mlp, d_model=d_model)
    return None


def _unsupported(model_type: str) -> UnsupportedArchitectureError:
    return UnsupportedArchitectureError(
        f"neurogate has no adapter for model_type {model_type!r}, and the model has no "
        "`layers[i].mlp.down_proj` to fall back on. Supported families: "
        + ", ".join(supported_families())
        + ". To add one, append an ArchSpec to neurogate.adapters.ARCHITECTURES naming the path to the "
        "decoder layers and to each layer's MLP down-projection."
    )


def resolve_adapter(model: nn.Module) -> Adapter:
    """Find the adapter for ``model`` from its config's ``model_type``, else the generic fallback."""
    config = getattr(model, "config", None)
    model_type = str(getattr(config, "model_type", "") or "")
    for spec in ARCHITECTURES:
        if model_type in spec.model_types:
            adapter = _bind(model, spec)
            if adapter is None:
                raise _unsupported(model_type)
            return adapter
    adapter = _bind(model, _GENERIC)
    if adapter is None:
        raise _unsupported(model_type)
    return adapter
