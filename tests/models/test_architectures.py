from __future__ import annotations

import pytest
from torch import nn

from neurogate.errors import UnsupportedArchitectureError
from neurogate.models.architectures import resolve_adapter, supported_families
from neurogate.models.tiny import D_MLP, D_MODEL, N_LAYERS, TINY_FAMILIES, TINY_MOE_FAMILIES, tiny_model

EXPECTED_DOWN = {
    "gpt2": "transformer.h.{i}.mlp.c_proj",
    "gpt_neox": "gpt_neox.layers.{i}.mlp.dense_4h_to_h",
}


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_adapter_finds_down_projection_and_width(family: str) -> None:
    model = tiny_model(family)
    adapter = resolve_adapter(model)
    assert adapter.family == family
    assert adapter.n_layers == N_LAYERS
    assert adapter.d_mlp == D_MLP
    assert adapter.d_model == D_MODEL
    names = {id(m): n for n, m in model.named_modules()}
    for i in range(N_LAYERS):
        expected = EXPECTED_DOWN.get(family, "model.layers.{i}.mlp.down_proj").format(i=i)
        assert names[id(adapter.down_proj(i))] == expected


def test_every_supported_family_has_a_tiny_model() -> None:
    assert set(supported_families()) == set(TINY_FAMILIES) | set(TINY_MOE_FAMILIES)


class _Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.mlp = nn.Module()
        self.mlp.down_proj = nn.Linear(12, 5)


class _Inner(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList([_Block(), _Block()])


class _Custom(nn.Module):
    def __init__(self, with_mlp: bool = True) -> None:
        super().__init__()
        self.config = type("Cfg", (), {"model_type": "my-custom-lm"})()
        self.model = _Inner() if with_mlp else nn.Linear(2, 2)


def test_generic_fallback_for_unknown_model_type() -> None:
    adapter = resolve_adapter(_Custom())
    assert adapter.family == "generic"
    assert (adapter.n_layers, adapter.d_mlp, adapter.d_model) == (2, 12, 5)


def test_unsupported_model_lists_families_and_how_to_add() -> None:
    with pytest.raises(UnsupportedArchitectureError) as info:
        resolve_adapter(_Custom(with_mlp=False))
    message = str(info.value)
    assert "my-custom-lm" in message
    assert "llama" in message and "gpt_neox" in message
    assert "ArchSpec" in message
