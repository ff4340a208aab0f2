"""Independent references for the equivalence tests: each prompt run alone (no padding, no batching, no
prefix cache, full forward pass), read by plain torch hooks rather than neurogate's capture engine."""

from __future__ import annotations

from typing import Any, Literal

import torch

from neurogate.models.inputs import encode
from neurogate.models.loading import LoadedModel


def last_token_reference(
    lm: LoadedModel, prompts: list[str], where: Literal["neurons", "layers"]
) -> torch.Tensor:
    """``[n_prompts, n_layers, width]`` float32 at each prompt's last token: ``"neurons"`` reads every
    down-projection's input, ``"layers"`` every decoder layer's output (the residual stream after it)."""
    rows = []
    n = lm.adapter.n_layers
    for seq in encode(lm, prompts):
        seen: dict[int, torch.Tensor] = {}

        def keep(i: int, seen: dict[int, torch.Tensor] = seen) -> Any:
            def pre(_m: torch.nn.Module, args: tuple[Any, ...]) -> None:
                seen[i] = args[0][0, -1].float().clone()

            def post(_m: torch.nn.Module, _args: object, out: Any) -> None:
                hidden = out[0] if isinstance(out, tuple) else out
                seen[i] = hidden[0, -1].float().clone()

            return pre if where == "neurons" else post

        if where == "neurons":
            handles = [lm.adapter.down_proj(i).register_forward_pre_hook(keep(i)) for i in range(n)]
        else:
            handles = [lm.adapter.layer(i).register_forward_hook(keep(i)) for i in range(n)]
        try:
            with torch.no_grad():
                lm.model(torch.tensor([seq]))
        finally:
            for h in handles:
                h.remove()
        rows.append(torch.stack([seen[i] for i in range(n)]))
    return torch.stack(rows)
