"""The explorer's attribution endpoint: which neurons carry a prompt's next token, on the live model.

``POST /api/attribute`` with ``{"prompt", "target"?, "target_tokens"?, "top_k"?, "circuit"?, "neuron"?}`` runs
:func:`neurogate.discovery.attribution.attribute` and its ablation self-check on the explorer's model, in
its turn (never on top of a live generation, whose hooks it would disturb), and answers the ranking, the
self-check and, given a circuit id from the catalog, the comparison with that circuit. POST, so the
server's Origin check covers it; bad input is a 400 with ``{"error": ...}``.

``target_tokens`` keeps the target's first tokens only (the page's "Attribute this reply" sends a reply and
8); ``neuron`` (``{"layer", "index"}``) also answers that neuron's rank and attribution among all neurons
(the neuron view's "attribution on a prompt").
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from neurogate.discovery.attribution import Attribution, AttributionConfig, attribute, decode, rank_key
from neurogate.errors import ConfigError, NeurogateError
from neurogate.evaluation.attribution_check import compare, self_check
from neurogate.models.loading import LoadedModel
from neurogate.ui.catalog import Catalog
from neurogate.ui.live import MAX_PROMPT_CHARS, LiveSteering

MAX_TOP_K = 200
MAX_TARGET_CHARS = 200
MAX_TARGET_TOKENS = 32


class NeuronRef(BaseModel):
    """One neuron whose place in the ranking the page asks for."""

    layer: int = Field(ge=0)
    index: int = Field(ge=0)


class AttributeBody(BaseModel):
    """The request as the page sends it: the prompt, an optional continuation (else the model's greedy
    next token) and how many of its first tokens to keep, how many neurons to return, an optional catalog
    circuit to compare with, and an optional neuron to place in the ranking."""

    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    target: str | None = Field(default=None, max_length=MAX_TARGET_CHARS)
    target_tokens: int | None = Field(default=None, ge=1, le=MAX_TARGET_TOKENS)
    top_k: int = Field(default=20, ge=1, le=MAX_TOP_K)
    circuit: str | None = None
    neuron: NeuronRef | None = None


def _model(live: LiveSteering) -> LoadedModel:
    """The explorer's model once loaded; a clear error when there is none."""
    if live.state == "off":
        raise ConfigError("attribution needs a model: start the explorer with --model")
    live.wait_ready()
    if live.lm is None:
        raise NeurogateError(f"the model could not be loaded: {live.error}")
    return live.lm


def first_tokens(lm: LoadedModel, text: str, n: int | None) -> str:
    """``text`` cut to its first ``n`` tokens (all of it for ``None``), as text for the target."""
    if n is None:
        return text
    ids = list(lm.tokenizer(text, add_special_tokens=False)["input_ids"])
    return text if len(ids) <= n else decode(lm, ids[:n])


def neuron_place(result: Attribution, layer: int, index: int) -> dict[str, Any]:
    """One neuron's attribution, activation and rank among all neurons (by the attribution's own ranking;
    rank 1 is the top), or a clear error when the model has no such neuron."""
    n_layers, d_mlp = result.scores.shape
    if layer >= n_layers or index >= d_mlp:
        raise ConfigError(
            f"neuron (layer {layer}, index {index}) is not in this model ({n_layers} layers of {d_mlp} "
            "neurons): choose a circuit found on the explorer's model"
        )
    key = rank_key(result.scores, result.config.rank)
    return {
        "layer": layer,
        "index": index,
        "attribution": float(result.scores[layer, index]),
        "activation": float(result.activations[layer, index]),
        "rank": int((key > key[layer, index]).sum()) + 1,
        "of": n_layers * d_mlp,
    }


def attribution_view(live: LiveSteering, catalog: Catalog, body: AttributeBody) -> dict[str, Any]:
    """Attribute on the live model in its turn; the ranking, the self-check and any comparison as JSON."""
    if not body.prompt.strip():
        raise ConfigError("type a prompt first")
    target = body.target if body.target else None  # an empty box means the greedy next token
    if body.target_tokens is not None and target is None:
        raise ConfigError("target_tokens cuts a target: give the target text too")
    with live.turns.turn():
        lm = _model(live)
        reference = catalog.circuit(body.circuit) if body.circuit else None
        if reference is not None:
            reference.check_model(lm)
        if target is not None:
            target = first_tokens(lm, target, body.target_tokens)
        result = attribute(lm, body.prompt, target, AttributionConfig(top_k=body.top_k))
        check = self_check(lm, result)
    return {
        "model": lm.spec,
        "target": result.target.to_dict(),
        "logprob": result.logprob,
        "position": result.config.position,
        "rank": result.config.rank,
        "total": result.total,
        "neurons": result.ranking(),
        "self_check": {**check.to_dict(), "line": check.line()},
        "comparison": compare(result, reference).to_dict() if reference is not None else None,
        "target_tokens": body.target_tokens,
        "neuron": neuron_place(result, body.neuron.layer, body.neuron.index) if body.neuron else None,
    }


def register(app: FastAPI, live: LiveSteering, catalog: Catalog) -> None:
    """Add ``POST /api/attribute`` to ``app``."""

    @app.post("/api/attribute")
    async def attribute_prompt(body: AttributeBody) -> dict[str, Any]:
        return await run_in_threadpool(attribution_view, live, catalog, body)
