"""Architecture adapters: where each model family keeps the modules behind every site.

One :class:`ArchSpec` per family in :data:`ARCHITECTURES` names, as attribute paths, the decoder layers,
each layer's MLP down-projection, its attention block and attention output projection, the norms that
families with "sandwich" norms put on each write into the residual stream, and any learned position
embeddings. :class:`Adapter` binds a spec to one model and resolves every canonical site
(:mod:`neurogate.models.sites`) to the module and hook type that reach it. Adding a family is one entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from neurogate.errors import UnsupportedArchitectureError
from neurogate.models.moe import MoeLayout, layout_of
from neurogate.models.sites import Site, parse_site

WeightLayout = Literal["linear", "conv1d"]
HookType = Literal["pre", "pre_kwargs", "output", "moe"]


@dataclass(frozen=True)
class ArchSpec:
    """Where one family keeps its parts, as attribute paths.

    ``layers``: candidate paths from the causal-LM model to the ``ModuleList`` of decoder layers (the first
    that exists wins). The rest are paths from one decoder layer: ``down_proj`` (the MLP down-projection,
    whose input is the neuron site), ``attention`` (the attention block), ``attention_out`` (its output
    projection), ``attn_write_norm`` / ``mlp_write_norm`` (norms applied to each block's write before it is
    added to the stream; ``None`` in pre-norm families). ``position_embeddings``: path from the model to
    learned absolute position embeddings, if any. ``layout``: ``"linear"`` when the down-projection weight
    is ``[d_model, d_mlp]`` (``nn.Linear``), ``"conv1d"`` when it is ``[d_mlp, d_model]`` (GPT-2).
    ``moe_block``: in mixture-of-experts families, the path from a layer to its sparse block (routed
    experts fused in 3-D parameters, see :mod:`neurogate.models.moe`); ``down_proj`` is then unused.
    """

    family: str
    model_types: tuple[str, ...]
    layers: tuple[str, ...]
    down_proj: str = "mlp.down_proj"
    attention: str = "self_attn"
    attention_out: str = "self_attn.o_proj"
    attn_write_norm: str | None = None
    mlp_write_norm: str | None = None
    position_embeddings: str | None = None
    layout: WeightLayout = "linear"
    moe_block: str | None = None

    @property
    def sandwich_norms(self) -> bool:
        """True when each block's write is normalised after its projection (so weights alone cannot
        remove a direction from the stream)."""
        return self.attn_write_norm is not None or self.mlp_write_norm is not None


_DECODER = ("model.layers", "model.language_model.layers", "language_model.model.layers")
_SANDWICH: dict[str, Any] = {
    "attn_write_norm": "post_attention_layernorm",
    "mlp_write_norm": "post_feedforward_layernorm",
}

# fmt: off
ARCHITECTURES: tuple[ArchSpec, ...] = (
    ArchSpec("llama", ("llama",), _DECODER),
    ArchSpec("mistral", ("mistral",), _DECODER),
    ArchSpec("qwen2", ("qwen2",), _DECODER),
    ArchSpec("qwen3", ("qwen3",), _DECODER),
    ArchSpec("gemma", ("gemma",), _DECODER),
    ArchSpec("gemma2", ("gemma2",), _DECODER, **_SANDWICH),
    ArchSpec("gemma3", ("gemma3_text", "gemma3"), _DECODER, **_SANDWICH),
    ArchSpec("phi3", ("phi3",), _DECODER),
    ArchSpec("olmo2", ("olmo2",), _DECODER, **_SANDWICH),
    ArchSpec("gpt2", ("gpt2",), ("transformer.h",), down_proj="mlp.c_proj", attention="attn",
             attention_out="attn.c_proj", position_embeddings="transformer.wpe", layout="conv1d"),
    ArchSpec("gpt_neox", ("gpt_neox",), ("gpt_neox.layers",), down_proj="mlp.dense_4h_to_h",
             attention="attention", attention_out="attention.dense"),
    ArchSpec("mixtral", ("mixtral",), _DECODER, moe_block="mlp"),
    ArchSpec("qwen2_moe", ("qwen2_moe",), _DECODER, moe_block="mlp"),
    ArchSpec("qwen3_moe", ("qwen3_moe",), _DECODER, moe_block="mlp"),
    ArchSpec("olmoe", ("olmoe",), _DECODER, moe_block="mlp"),
)
# fmt: on

GENERIC = ArchSpec("generic", (), _DECODER)


def get_path(root: nn.Module, path: str) -> nn.Module | None:
    """The module at dotted ``path`` under ``root``, or ``None`` when any step is missing."""
    obj: object = root
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj if isinstance(obj, nn.Module) else None


@dataclass(frozen=True)
class Adapter:
    """An :class:`ArchSpec` bound to one model instance: its layers, down-projections and widths.

    ``moe``: the layout of every layer's sparse block in a mixture-of-experts family (``None`` for dense
    models); ``down_projs`` then holds the sparse blocks and ``d_mlp`` is the flat neuron count per layer
    (:attr:`MoeLayout.width`)."""

    spec: ArchSpec
    model: nn.Module
    layers: nn.ModuleList
    down_projs: tuple[nn.Module, ...]
    d_mlp: int
    d_model: int
    moe: MoeLayout | None = None

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

    def site_device(self, layer: int) -> torch.device:
        """The device of ``layer``'s neuron site: its down-projection weight's (a sparse block's first
        parameter in a mixture-of-experts model)."""
        module = self.down_projs[layer]
        weight = getattr(module, "weight", None)
        if isinstance(weight, torch.Tensor):
            return weight.device
        return next(module.parameters()).device

    def layer(self, layer: int) -> nn.Module:
        """Decoder layer ``layer``."""
        return self.layers[layer]

    def part(self, layer: int, path: str | None, what: str) -> nn.Module:
        """The module at ``path`` inside decoder layer ``layer``; a clear error when the family lacks it."""
        found = get_path(self.layers[layer], path) if path else None
        if found is None:
            raise UnsupportedArchitectureError(
                f"{self.family}: decoder layer {layer} ({type(self.layers[layer]).__name__}) has no {what} "
                f"at {path!r}; fix the family's entry in neurogate.models.architectures.ARCHITECTURES"
            )
        return found

    def attention_out(self, layer: int) -> nn.Module:
        """The attention output projection of ``layer`` (a writer into the residual stream)."""
        return self.part(layer, self.spec.attention_out, "attention output projection")

    def position_embeddings(self) -> nn.Module | None:
        """Learned absolute position embeddings (GPT-2's ``wpe``), if the family has them."""
        path = self.spec.position_embeddings
        return get_path(self.model, path) if path else None

    def resolve(self, site: Site | str) -> tuple[nn.Module, HookType]:
        """The module behind ``site`` and how to hook it: ``pre`` (forward pre-hook, first positional
        argument), ``pre_kwargs`` (pre-hook that may find the tensor in ``hidden_states=``) or ``output``
        (forward hook, the output or its first item)."""
        s = parse_site(site)
        if not 0 <= s.layer < self.n_layers:
            raise UnsupportedArchitectureError(
                f"site {s} is outside this model's layers 0..{self.n_layers - 1}"
            )
        if s.kind == "mlp.post":
            return self.down_projs[s.layer], "moe" if self.moe is not None else "pre"
        if s.kind == "resid_pre":
            return self.layers[s.layer], "pre_kwargs"
        if s.kind == "resid_post":
            return self.layers[s.layer], "output"
        if self.spec.attn_write_norm is not None:
            return self.part(s.layer, self.spec.attn_write_norm, "attention write norm"), "output"
        return self.part(s.layer, self.spec.attention, "attention block"), "output"

    def width(self, site: Site | str) -> int:
        """The last dimension of ``site``'s tensor."""
        return self.d_mlp if parse_site(site).kind == "mlp.post" else self.d_model


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


def _bind_moe(model: nn.Module, spec: ArchSpec, layers: nn.ModuleList, path: str) -> Adapter:
    blocks = tuple(get_path(layer, path) for layer in layers)
    layouts = [layout_of(b) if b is not None else None for b in blocks]
    if any(lay is None for lay in layouts) or len(set(layouts)) != 1:
        raise UnsupportedArchitectureError(
            f"{spec.family}: neurogate needs every decoder layer to hold the same sparse block (routed "
            f"experts with fused 3-D weights) at {path!r}; this model mixes dense and sparse layers or "
            "expert shapes (e.g. mlp_only_layers or decoder_sparse_step > 1), which is not supported"
        )
    layout = layouts[0]
    assert layout is not None
    experts: Any = blocks[0].experts if blocks[0] is not None else None
    d_model = int(experts.down_proj.shape[1])
    found = tuple(b for b in blocks if b is not None)
    return Adapter(spec, model, layers, found, layout.width, d_model, moe=layout)


def _bind(model: nn.Module, spec: ArchSpec) -> Adapter | None:
    for path in spec.layers:
        layers = get_path(model, path)
        if isinstance(layers, nn.ModuleList) and len(layers) > 0:
            if spec.moe_block is not None:
                return _bind_moe(model, spec, layers, spec.moe_block)
            downs = tuple(get_path(layer, spec.down_proj) for layer in layers)
            if any(d is None for d in downs):
                return None
            found = tuple(d for d in downs if d is not None)
            d_mlp, d_model = _widths(found[0], spec.layout)
            return Adapter(spec, model, layers, found, d_mlp, d_model)
    return None


def _unsupported(model_type: str) -> UnsupportedArchitectureError:
    return UnsupportedArchitectureError(
        f"neurogate has no adapter for model_type {model_type!r}, and the model has no "
        "`layers[i].mlp.down_proj` to fall back on. Supported families: "
        + ", ".join(supported_families())
        + ". To add one, append an ArchSpec to neurogate.models.architectures.ARCHITECTURES naming the "
        "paths to the decoder layers and to each layer's MLP down-projection and attention parts."
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
    adapter = _bind(model, GENERIC)
    if adapter is None:
        raise _unsupported(model_type)
    return adapter
