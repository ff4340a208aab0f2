"""Room for mean-ablation's constant in a saved model.

Mean-ablation folds a constant write ``(1 - m) * W_down[:, i] * mean_neg`` into the down-projection's bias.
In memory any layer can get one, but a saved model keeps it only if its configuration declares MLP
biases: GPT-2 and GPT-NeoX always have them, and Llama has the ``mlp_bias`` switch (which gives the gate,
up and down projections a bias each, so the others get zeros). Other families cannot carry the constant.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from neurogate.discovery.circuit import Circuit
from neurogate.errors import ConfigError
from neurogate.models.loading import LoadedModel

MLP_PARTS = ("gate_proj", "up_proj", "down_proj")


def _has_bias(module: torch.nn.Module) -> bool:
    return isinstance(getattr(module, "bias", None), torch.Tensor)


@contextmanager
def savable_mlp_bias(lm: LoadedModel, circuit: Circuit) -> Iterator[None]:
    """While the block runs, the model saves a bias for every down-projection the circuit touches: nothing
    to do when they already have one; for a config with ``mlp_bias``, zero biases on every MLP projection
    and the switch on (both undone on exit); otherwise a :class:`ConfigError` that says what to do."""
    layers = list(circuit.per_layer())
    if all(_has_bias(lm.adapter.down_proj(layer)) for layer in layers):
        yield
        return
    config = lm.model.config
    if not hasattr(config, "mlp_bias"):
        raise ConfigError(
            f"a mean-ablation export needs a bias in each MLP down-projection, and {lm.adapter.family} "
            "models have none that a saved model keeps; export --kind cna (multiply toward zero), or apply "
            "mean-ablation with hooks (neurogate steer/chat --method mean)"
        )
    added: list[torch.nn.Module] = []
    try:
        for layer in range(lm.adapter.n_layers):
            mlp = lm.adapter.layer(layer).mlp
            for name in MLP_PARTS:
                proj = getattr(mlp, name)
                if not _has_bias(proj):
                    zeros = torch.zeros(proj.out_features, dtype=proj.weight.dtype, device=proj.weight.device)
                    proj.bias = torch.nn.Parameter(zeros, requires_grad=False)
                    added.append(proj)
        previous, config.mlp_bias = config.mlp_bias, True
        try:
            yield
        finally:
            config.mlp_bias = previous
    finally:
        for proj in added:
            proj.register_parameter("bias", None)
