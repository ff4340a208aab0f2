"""The explorer's web app (FastAPI on uvicorn): the page and its static files, a read-only JSON API over
circuits and runs, and one state-changing endpoint that streams live steering as JSON lines."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import threading
from collections.abc import AsyncIterator
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from neurogate.errors import NeurogateError
from neurogate.steering.registry import INTERVENTIONS
from neurogate.tuning import TuneResults
from neurogate.ui import attribution as attribution_views
from neurogate.ui import audit as audit_views
from neurogate.ui import audit_review
from neurogate.ui import circuits as circuit_views
from neurogate.ui import runs as run_views
from neurogate.ui.catalog import Catalog
from neurogate.ui.live import MAX_PROMPT_CHARS, LiveSteering, Loader, SteerRequest
from neurogate.ui.security import PathNotAllowed, allowed_hosts, guard
from neurogate.ui.settings import MAX_NEW_TOKENS, UISettings
from neurogate.version import __version__

logger = logging.getLogger(__name__)

STATIC = Path(str(resources.files("neurogate.ui") / "static"))


class SteerBody(BaseModel):
    """The live steering request as the page sends it."""

    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    method: str
    value: float
    circuit: str | None = None
    max_new_tokens: int | None = Field(default=None, ge=1, le=MAX_NEW_TOKENS)


def create_app(settings: UISettings, *, loader: Loader | None = None, start: bool = True) -> FastAPI:
    """The app for ``settings``. ``loader`` replaces loading ``settings.model`` (tests pass a tiny model);
    ``start=False`` leaves the model unloaded until :meth:`LiveSteering.start` is called."""
    # Longer than most functions: each route is a few lines closing over ``catalog`` and ``live``, and
    # keeping them together shows the whole HTTP surface in one place.
    catalog = Catalog(settings)
    live = LiveSteering(settings, catalog, loader)
    app = FastAPI(title="neurogate explorer", version=__version__, docs_url=None, redoc_url=None)
    app.state.settings, app.state.catalog, app.state.live = settings, catalog, live
    app.middleware("http")(guard(allowed_hosts(settings.host, settings.loopback_only)))
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(NeurogateError)
    async def neurogate_error(request: Request, exc: NeurogateError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=404 if isinstance(exc, PathNotAllowed) else 400)

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/api/status")
    def status() -> dict[str, Any]:
        return {
            "version": __version__,
            "live": live.status(),
            "has_runs": settings.runs is not None,
            "methods": [
                {
                    "kind": k,
                    "source": c.source,
                    "scale": c.scale.name,
                    "symbol": c.scale.symbol,
                    "neutral": c.scale.neutral,
                    "summary": c.summary,
                }
                for k, c in INTERVENTIONS.items()
            ],
        }

    @app.get("/api/circuits")
    def circuits() -> list[dict[str, Any]]:
        return catalog.circuits()

    @app.get("/api/circuit")
    def circuit(id: str) -> dict[str, Any]:
        return {"id": id, **circuit_views.circuit_map(catalog.circuit(id))}

    @app.get("/api/neuron")
    def neuron(id: str, layer: int, index: int) -> dict[str, Any]:
        return circuit_views.neuron_detail(catalog.circuit(id), layer, index)

    @app.get("/api/overlay")
    def overlay(a: str, b: str) -> dict[str, Any]:
        return circuit_views.overlay(catalog.circuit(a), catalog.circuit(b))

    @app.get("/api/runs")
    def runs() -> list[dict[str, Any]]:
        return catalog.runs()

    @app.get("/api/run")
    def run(id: str) -> dict[str, Any]:
        results, name = catalog.run(id), catalog.run_folder(id).name
        if isinstance(results, TuneResults):
            return {"id": id, **run_views.tune_view(results, name)}
        return {"id": id, **run_views.run_view(results, name)}

    @app.get("/api/replies")
    def replies(id: str, key: str, set: str = Query("harmful"), cls: str | None = None) -> dict[str, Any]:
        results = catalog.run(id)
        conditions = results.final if isinstance(results, TuneResults) else results.conditions
        return run_views.replies_view(conditions, key, set, cls)

    @app.post("/api/steer")
    async def steer(body: SteerBody) -> StreamingResponse:
        req = SteerRequest(**body.model_dump())
        return StreamingResponse(_events(live, req), media_type="application/x-ndjson")

    desk = audit_views.register(app, catalog)  # the Audit page: blind labelling, agreement, calibrated rates
    audit_review.register(app, desk)  # ... and adjudication, labels made elsewhere
    attribution_views.register(app, live, catalog)  # which neurons carry a prompt's next token

    if start:
        live.start()
    return app


async def _events(live: LiveSteering, req: SteerRequest) -> AsyncIterator[bytes]:
    """Run the request in a worker thread and pass its events on as JSON lines; if the page goes away,
    the generation is told to stop."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    cancel = threading.Event()

    def emit(event: dict[str, Any]) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, event)

    threading.Thread(
        target=live.run, args=(req, emit, cancel), name="neurogate-ui-steer", daemon=True
    ).start()
    try:
        while True:
            event = await queue.get()
            yield (json.dumps(_clean(event), allow_nan=False) + "\n").encode()
            if event["event"] == "end":
                return
    finally:
        cancel.set()


def _clean(value: Any) -> Any:
    """Non-finite floats (a KL over no tokens) become ``null``: JSON has no NaN."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    return value
