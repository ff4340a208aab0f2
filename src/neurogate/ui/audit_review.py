"""The Audit page's adjudication and import, on the same library as ``neurogate audit --adjudicate`` and
``--import``: nothing here labels, checks or stores on its own.

- Adjudication: ``POST /api/audit/adjudicate`` opens (or continues) the adjudicator's session over the
  disagreements (:func:`neurogate.evaluation.audit_session.adjudication`, kept by the
  :class:`~neurogate.ui.audit.AuditDesk` like a labelling session); its keys go to ``/api/audit/key`` with
  ``"adjudicate": true``, and each one is written to the label file, flagged as an adjudication, before the
  answer shows the next disagreement.
- Import: ``POST /api/audit/import?run=ID&name=FILE[&annotator=NAME]`` with the file's bytes as the body (a
  JSONL or CSV file of labels made elsewhere from ``audit/items.jsonl``), checked by
  :func:`~neurogate.evaluation.audit_labels.parse_import` and added by
  :func:`~neurogate.evaluation.audit_labels.add_labels`, as ``--import`` does. A file with any problem is
  refused whole, with each problem named; a file over :data:`MAX_IMPORT_BYTES` is refused unread.

Both are POST, so the server's Host and Origin checks (:mod:`neurogate.ui.security`) cover them."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from neurogate.errors import ConfigError, NeurogateError
from neurogate.evaluation.audit import SAMPLE_FILE, audit_dir, prepare_audit
from neurogate.evaluation.audit_labels import add_labels, parse_import
from neurogate.ui.audit import AuditDesk, _body, _text, check_annotator

MAX_IMPORT_BYTES = 16 * 1024 * 1024
"""The largest label file the page may upload (larger ones: ``neurogate audit RUN_DIR --import FILE``)."""
MAX_NAME = 200


class UploadTooLarge(ConfigError):
    """An upload over :data:`MAX_IMPORT_BYTES` (answered with 413)."""


def upload_name(name: str) -> str:
    """The uploaded file's name without any folder part: it names the file in messages, says whether it is
    CSV (``.csv``) or JSONL (anything else), and is kept with each label as ``import:NAME``."""
    base = re.split(r"[\\/]", name)[-1].strip()
    if not base:
        raise ConfigError("give name=FILE, the uploaded file's name (a .jsonl or .csv file)")
    if len(base) > MAX_NAME or any(not c.isprintable() for c in base):
        raise ConfigError(f"the file name {base[:MAX_NAME]!r} is not a plain file name; rename the file")
    return base


async def read_upload(request: Request, limit: int = MAX_IMPORT_BYTES) -> bytes:
    """The request body, refused as soon as it is larger than ``limit`` bytes (declared or sent)."""
    too_large = UploadTooLarge(
        f"the file is larger than {limit // (1024 * 1024)} MiB; import it on the command line: "
        "neurogate audit RUN_DIR --import FILE --annotator NAME"
    )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def import_upload(
    desk: AuditDesk, run_id: str, name: str, data: bytes, annotator: str | None
) -> dict[str, Any]:
    """Check the uploaded labels against the run's sample (brought up to date first, as the terminal
    does) and add the new ones to its label file; the answer says how many were added and how many repeat
    labels already there."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{name}: nothing imported: the file is not UTF-8 text (byte {exc.start}); save it as UTF-8 "
            "JSONL or CSV and upload it again"
        ) from exc
    folder = desk.catalog.run_folder(run_id)
    with desk.lock:
        if not (audit_dir(folder) / SAMPLE_FILE).is_file():
            raise NeurogateError(
                "this run has no audit sample yet, so no labels can match it: start one (choose the run "
                "and press Start), then label audit/items.jsonl elsewhere"
            )
        labels = parse_import(text, name, prepare_audit(folder).sample, annotator)
        added = add_labels(folder, labels)
    repeated = len(labels) - added
    who = Counter(lab.annotator for lab in labels)
    message = f"imported {added} label(s) from {name} (" + ", ".join(f"{a} {n}" for a, n in who.items()) + ")"
    if repeated:
        message += f"; {repeated} not added again: the label file already holds them"
    return {
        "run": run_id,
        "file": name,
        "records": len(labels),
        "imported": added,
        "repeated": repeated,
        "annotators": dict(who),
        "message": message,
    }


def register(app: FastAPI, desk: AuditDesk) -> None:
    """Add the adjudication and import routes to ``app`` (bad input: a 400 with ``{"error": ...}``; an
    upload over the limit: a 413)."""

    @app.post("/api/audit/adjudicate")
    async def audit_adjudicate(request: Request) -> dict[str, Any]:
        data = await _body(request)
        run_id, adjudicator = _text(data, "run"), check_annotator(data.get("annotator"))
        return await run_in_threadpool(desk.start_adjudication, run_id, adjudicator)

    @app.post("/api/audit/import", response_model=None)
    async def audit_import(
        request: Request, run: str = "", name: str = "", annotator: str = ""
    ) -> dict[str, Any] | JSONResponse:
        if not run:
            raise ConfigError("give run=ID (one of /api/audit/runs)")
        file_name = upload_name(name)
        who = check_annotator(annotator) if annotator.strip() else None
        try:
            data = await read_upload(request)
        except UploadTooLarge as exc:
            return JSONResponse({"error": str(exc)}, status_code=413)
        if not data.strip():
            raise ConfigError(f"{file_name}: nothing imported: the file is empty")
        return await run_in_threadpool(import_upload, desk, run, file_name, data, who)
