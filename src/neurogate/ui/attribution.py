"""The explorer's attribution endpoint: which neurons carry a prompt's next token, on the live model.

``POST /api/attribute`` with ``{"prompt", "target"?, "top_k"?, "circuit"?}`` runs
:func:`neurogate.discovery.attribution.attribute` and its ablation self-check on the explorer's model, in
its turn (never on top of a live generation, whose hooks it would disturb), and answers the ranking, the
self-check and, given a circuit id from the catalog, the comparison with that circuit. POST, so the
server's Origin check covers it; bad input is a 400 with ``{"error": ...}``.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from neurogate.discovery.attribution import AttributionConfig, attribute
from neurogate.discovery.attribution_check import compare, self_check
from neurogate.errors import ConfigError, NeurogateError
from neurogate.models.loading import LoadedModel
from neurogate.ui.catalog import Catalog
from neurogate.ui.live import MAX_PROMPT_CHARS, LiveSteering

MAX_TOP_K = 200
MAX_TARGET_CHARS = 200


class AttributeBody(BaseModel):
    """The request as the page sends it: the prompt, an optional continuation (else the model's greedy
    next token), how many neurons to return, and an optional catalog circuit to compare with."""

    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    target: str | None = Field(default=None, max_length=MAX_TARGET_CHARS)
    top_k: int = Field(default=20, ge=1, le=MAX_TOP_K)
    circuit: str | None = None


def _model(live: LiveSteering) -> LoadedModel:
    """The explorer's model once loaded; a clear error when there is none."""
    if live.state == "off":
        raise ConfigError("attribution needs a model: start the explorer with --model")
    live.wait_ready()
    if live.lm is None:
        raise NeurogateError(f"the model could not be loaded: {live.error}")
    return live.lm


def attribution_view(live: LiveSteering, catalog: Catalog, body: AttributeBody) -> dict[str, Any]:
    """Attribute on the live model in its turn; the ranking, the self-check and any comparison as JSON."""
    if not body.prompt.strip():
        raise ConfigError("type a prompt first")
    target = body.target if body.target else None  # an empty box means the greedy next token
    with live.turns.turn():
        lm = _model(live)
        reference = catalog.circuit(body.circuit) if body.circuit else None
        if reference is not None:
            reference.check_model(lm)
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
    }


def register(app: FastAPI, live: LiveSteering, catalog: Catalog) -> None:
    """Add ``POST /api/attribute`` to ``app``."""

    @app.post("/api/attribute")
    async def attribute_prompt(body: AttributeBody) -> dict[str, Any]:
        return await run_in_threadpool(attribution_view, live, catalog, body)
