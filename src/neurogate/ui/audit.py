"""The explorer's Audit page, server side: blind labelling of a run's replies as JSON, on the same library
as ``neurogate audit`` (the sample of :mod:`neurogate.evaluation.audit`, the label file of
:mod:`~neurogate.evaluation.audit_labels`, the key handling of :mod:`~neurogate.evaluation.audit_session`
and the rates of :mod:`~neurogate.evaluation.calibration`); nothing here samples, stores or estimates on
its own.

While labelling, the page receives an item's opaque id, its request and reply, and the annotator's own
label of it, never its condition, intervention, multiplier or a judge's verdict. Agreement between
annotators and the calibrated rates, which do name conditions, come from a separate route; so does
adjudication (:mod:`neurogate.ui.audit_review`), whose items show every annotator's label.

Each annotator of each run has one open :class:`LabelSession`, so reloading the page continues at the
same item; the session is rebuilt from the files when the sample or the label file changes underneath it
(another annotator, the terminal, an import), and after a restart it resumes as the terminal does, after
the last item this annotator labelled."""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from starlette.concurrency import run_in_threadpool

from neurogate.errors import ConfigError, NeurogateError
from neurogate.evaluation.audit import (
    AUDIT_CLASSES,
    PER_CONDITION,
    RULE,
    RULE_VERSION,
    SAMPLE_FILE,
    audit_dir,
    load_run,
    load_sample,
    prepare_audit,
)
from neurogate.evaluation.audit_labels import LabelStore, agreement, latest, stale_message, valid
from neurogate.evaluation.audit_session import KEYS, LabelSession, adjudication
from neurogate.evaluation.calibration import UNCALIBRATED, CalibratedRates, calibrated_rates
from neurogate.evaluation.statistics import Rate
from neurogate.ui.catalog import Catalog

SOURCE = "explorer"
"""What the label file records as where the page's labels were given."""
MOVES: dict[str, str] = {"s": "skip", "b": "back"}
"""The keys that move without labelling (the label keys are :data:`KEYS`)."""
MAX_PER_CONDITION = 1000
MAX_ANNOTATOR = 64
ANNOTATOR = re.compile(r"\w[\w .@+-]*")

Signature = tuple[int, int] | None


def _signature(path: Path) -> Signature:
    """A file's (mtime in ns, size), or ``None`` when it does not exist: how an open session notices that
    the file changed on disk."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_mtime_ns, st.st_size


def check_annotator(name: object) -> str:
    """The annotator's name, trimmed; a clear error when it is missing or not a plain name."""
    if not isinstance(name, str) or not name.strip():
        raise ConfigError("give an annotator name: every label records who gave it")
    name = name.strip()
    if len(name) > MAX_ANNOTATOR or not ANNOTATOR.fullmatch(name):
        raise ConfigError(
            f"annotator {name[:MAX_ANNOTATOR]!r} is not a plain name: up to {MAX_ANNOTATOR} letters, digits, "
            "spaces and . _ @ + -, starting with a letter or digit"
        )
    return name


def check_per_condition(value: object) -> int | None:
    """Replies to draw per condition: ``None`` (the sample's own, or the default) or a whole number."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"per_condition must be a whole number, got {value!r}")
    if not 1 <= value <= MAX_PER_CONDITION:
        raise ConfigError(f"per_condition must be between 1 and {MAX_PER_CONDITION}, got {value}")
    return value


def _text(data: dict[str, Any], name: str) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"give {name} as a non-empty string")
    return value


async def _body(request: Request) -> dict[str, Any]:
    """The request's JSON object (a clear error for anything else)."""
    raw = await request.body()
    try:
        data = json.loads(raw or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"the request body is not JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ConfigError("the request body must be a JSON object")
    return data


@dataclass
class _Open:
    """One annotator's open session on one run, and the files' signatures it was built from."""

    session: LabelSession
    sample_sig: Signature
    labels_sig: Signature


class AuditDesk:
    """The open labelling sessions (one per run folder, annotator and mode: labelling or adjudicating),
    serialised by one lock: a key is a read, one appended line and a reply, so queueing them costs nothing
    noticeable."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self._open: dict[tuple[Path, str, bool], _Open] = {}
        self.lock = threading.Lock()

    # -- the runs -------------------------------------------------------------------------------------

    def runs(self) -> list[dict[str, Any]]:
        """The runs the explorer knows, each with its audit so far: items drawn, per condition, and how
        many items each annotator has labelled (labels of changed replies left out)."""
        out = []
        for entry in self.catalog.runs():
            row: dict[str, Any] = {
                "id": entry["id"],
                "name": entry["name"],
                "kind": entry.get("kind"),
                "model": entry.get("model"),
                "items": 0,
                "per_condition": None,
                "annotators": {},
            }
            try:
                folder = self.catalog.run_folder(entry["id"])
                if (audit_dir(folder) / SAMPLE_FILE).is_file():
                    sample = load_sample(folder)
                    good, _ = valid(LabelStore(folder).read(), sample)
                    counts: dict[str, int] = {}
                    for who, _item in latest(good):
                        counts[who] = counts.get(who, 0) + 1
                    row.update(items=len(sample.items), per_condition=sample.per_condition, annotators=counts)
            except NeurogateError as exc:  # one damaged audit must not hide the other runs
                row["error"] = str(exc)
            out.append(row)
        return out

    # -- labelling ------------------------------------------------------------------------------------

    def _session(self, folder: Path, annotator: str, adjudicate: bool = False) -> LabelSession:
        """The open session, rebuilt from the files when they changed since (the item on screen stays on
        screen when it is still in the sample). ``adjudicate``: the adjudicator's session over the
        disagreements, as ``neurogate audit --adjudicate`` opens it. Call with the lock held."""
        sample_sig = _signature(audit_dir(folder) / SAMPLE_FILE)
        if sample_sig is None:
            raise NeurogateError(
                "this run has no audit sample yet: start one (choose the run and press Start)"
            )
        store = LabelStore(folder)
        labels_sig = _signature(store.path)
        key = (folder, annotator, adjudicate)
        have = self._open.get(key)
        if have is not None and (have.sample_sig, have.labels_sig) == (sample_sig, labels_sig):
            return have.session
        sample = have.session.sample if have is not None and have.sample_sig == sample_sig else None
        sample = sample or load_sample(folder)
        session = (
            adjudication(sample, store, annotator, source=SOURCE)
            if adjudicate
            else LabelSession(sample, store, annotator, source=SOURCE)
        )
        shown = have.session.item if have is not None and not have.session.done else None
        if shown is not None:
            self._go_to(session, shown.id)
        self._open[key] = _Open(session, sample_sig, labels_sig)
        return session

    @staticmethod
    def _go_to(session: LabelSession, item_id: str) -> bool:
        """Put the session on ``item_id``; ``False`` when it is not in the sample."""
        for n, item in enumerate(session.items):
            if item.id == item_id:
                session.pos, session.done = n, False
                return True
        return False

    def _state(self, run_id: str, session: LabelSession, message: str = "") -> dict[str, Any]:
        """What the page shows: blind (see the module docstring), except to an adjudicator, who sees every
        annotator's label of the item, as on the terminal."""
        item = None if session.done else session.item
        state: dict[str, Any] = {
            "run": run_id,
            "annotator": session.annotator,
            "rule_version": RULE_VERSION,
            "total": len(session.items),
            "labelled": session.labelled,
            "position": None if item is None or session.pos is None else session.pos + 1,
            "done": item is None,
            "message": message,
            "stale": stale_message(session.stale),
            "item": None
            if item is None
            else {
                "id": item.id,
                "prompt": item.prompt,
                "reply": item.reply,
                "label": session.labels.get(item.id),
            },
        }
        if session.adjudicate:
            state["adjudicate"] = True
            if item is not None:
                state["item"]["labels"] = dict(sorted(session.others.get(item.id, {}).items()))
        return state

    def start(self, run_id: str, annotator: str, per_condition: int | None) -> dict[str, Any]:
        """Draw the run's sample, or bring it up to date (a larger ``per_condition`` extends it), and open
        (or continue) the annotator's session."""
        folder = self.catalog.run_folder(run_id)
        with self.lock:
            prep = prepare_audit(folder, per_condition)
            session = self._session(folder, annotator)
            notes = [f"{len(prep.added)} replies added to the sample"] if prep.added else []
            if prep.changed or prep.dropped:
                notes.append(
                    f"{len(prep.changed)} sampled replies changed and {len(prep.dropped)} are gone since the "
                    "sample was drawn (the run was generated again)"
                )
            return self._state(run_id, session, "; ".join(notes))

    def start_adjudication(self, run_id: str, adjudicator: str) -> dict[str, Any]:
        """Bring the sample up to date (as the terminal does first) and open (or continue) the
        adjudicator's session over the disagreements."""
        folder = self.catalog.run_folder(run_id)
        with self.lock:
            if _signature(audit_dir(folder) / SAMPLE_FILE) is not None:
                prepare_audit(folder)
            session = self._session(folder, adjudicator, adjudicate=True)
            return self._state(run_id, session, "" if session.items else "no disagreements to adjudicate")

    def state(self, run_id: str, annotator: str, adjudicate: bool = False) -> dict[str, Any]:
        """Where the annotator (or adjudicator) is (resuming after a reload or a restart)."""
        folder = self.catalog.run_folder(run_id)
        with self.lock:
            return self._state(run_id, self._session(folder, annotator, adjudicate))

    def press(
        self, run_id: str, annotator: str, key: str, item_id: str | None, adjudicate: bool = False
    ) -> dict[str, Any]:
        """One key: a label (written to the label file before the reply), skip or back. ``item_id``: the
        item the page showed when the key was pressed, so a label always goes to the reply that was read."""
        key = key.lower()
        if key not in KEYS and key not in MOVES:
            keys = ", ".join(f"{k} {v}" for k, v in {**KEYS, **MOVES}.items())
            raise ConfigError(f"unknown key {key!r}: give one of {keys}")
        folder = self.catalog.run_folder(run_id)
        with self.lock:
            session = self._session(folder, annotator, adjudicate)
            if item_id is not None and not self._go_to(session, item_id):
                where = "disagreements" if adjudicate else "audit sample"
                raise NeurogateError(f"item {item_id!r} is not in this run's {where}; reload the page")
            if key == "b" and session.done and session.items:  # back from the end: the last item
                session.pos, session.done = len(session.items) - 1, False
                step_message = ""
            else:
                step_message = session.press(key).message
            if key in KEYS:  # the label file changed by this session's own hand
                self._open[(folder, annotator, adjudicate)].labels_sig = _signature(session.store.path)
            return self._state(run_id, session, step_message)

    # -- agreement and rates --------------------------------------------------------------------------

    def agreement(self, run_id: str, judge: str | None) -> dict[str, Any]:
        """Cohen's kappa for every pair of annotators (overall and per condition), the disagreements, and
        the calibrated rates of every condition with audit labels under ``judge`` (default: each
        condition's own)."""
        folder = self.catalog.run_folder(run_id)
        sample = load_sample(folder)
        conditions, _ = load_run(folder)
        if judge is not None and not any(judge in c.judges for c in conditions.values()):
            judges = sorted({j for c in conditions.values() for j in c.judges})
            raise ConfigError(
                f"no condition of this run was judged by {judge!r}; its judges: {', '.join(judges)}"
            )
        labels = LabelStore(folder).read()
        agree = agreement(labels, sample)
        names = {k: str(v.get("label", k)) for k, v in sample.conditions.items()}
        by_id = {it.id: it for it in sample.items}
        rates = calibrated_rates(folder, conditions, judge)
        return {
            "run": run_id,
            "annotators": agree.annotators,
            "pairs": [
                {
                    "a": p.a,
                    "b": p.b,
                    "n": p.n,
                    "agreement": p.agreement,
                    "kappa": p.kappa,
                    "per_condition": [
                        {"key": k, "label": names.get(k, k), "n": n, "kappa": kappa}
                        for k, (n, kappa) in p.per_condition.items()
                    ],
                }
                for p in agree.pairs
            ],
            "disagreements": [
                {
                    "item": d.item,
                    "prompt": by_id[d.item].prompt,
                    "reply": by_id[d.item].reply,
                    "labels": d.labels,
                    "adjudicated": d.adjudicated,
                }
                for d in agree.disagreements
            ],
            "classes": list(AUDIT_CLASSES),
            "rates": [_rates(r) for r in rates.values()],
            "uncalibrated": [c.label for k, c in conditions.items() if k not in rates],
            "uncalibrated_note": UNCALIBRATED,
        }


def _rate(rate: Rate | None) -> dict[str, Any] | None:
    if rate is None:
        return None
    return {"k": rate.k, "n": rate.n, "value": rate.value, "low": rate.low, "high": rate.high}


def _rates(r: CalibratedRates) -> dict[str, Any]:
    """One condition's calibrated rates: per class the judged rate (``None`` where the judge cannot give
    the class), the audited rate with its Wilson interval and the corrected estimate with its interval."""
    return {
        "key": r.key,
        "label": r.label,
        "judge": r.judge,
        "n_replies": r.n_replies,
        "n_audited": r.n_audited,
        "n_unsure": r.n_unsure,
        "n_unresolved": r.n_unresolved,
        "classes": {
            c: {
                "judged": _rate(cr.judged),
                "audited": _rate(cr.audited),
                "corrected": {
                    "value": cr.corrected.value,
                    "low": cr.corrected.low,
                    "high": cr.corrected.high,
                },
            }
            for c, cr in r.classes.items()
        },
    }


def register(app: FastAPI, catalog: Catalog) -> AuditDesk:
    """Add the Audit page's routes to ``app`` (state-changing ones are POST, so the server's Origin check
    covers them); bad input is a 400 with ``{"error": ...}`` through the app's :class:`NeurogateError`
    handler."""
    desk = AuditDesk(catalog)
    app.state.audit = desk

    @app.get("/api/audit/rule")
    def audit_rule() -> dict[str, Any]:
        return {
            "version": RULE_VERSION,
            "text": RULE,
            "keys": {**KEYS, **MOVES},
            "per_condition": PER_CONDITION,
        }

    @app.get("/api/audit/runs")
    def audit_runs() -> list[dict[str, Any]]:
        return desk.runs()

    @app.post("/api/audit/start")
    async def audit_start(request: Request) -> dict[str, Any]:
        data = await _body(request)
        run_id, annotator = _text(data, "run"), check_annotator(data.get("annotator"))
        per_condition = check_per_condition(data.get("per_condition"))
        return await run_in_threadpool(desk.start, run_id, annotator, per_condition)

    @app.get("/api/audit/item")
    def audit_item(run: str = "", annotator: str = "", adjudicate: bool = False) -> dict[str, Any]:
        if not run:
            raise ConfigError("give run=ID (one of /api/audit/runs)")
        return desk.state(run, check_annotator(annotator), adjudicate)

    @app.post("/api/audit/key")
    async def audit_key(request: Request) -> dict[str, Any]:
        data = await _body(request)
        run_id, annotator, key = (
            _text(data, "run"),
            check_annotator(data.get("annotator")),
            _text(data, "key"),
        )
        item, adjudicate = data.get("item"), data.get("adjudicate", False)
        if item is not None and not isinstance(item, str):
            raise ConfigError(f"item must be an item id (a string), got {item!r}")
        if not isinstance(adjudicate, bool):
            raise ConfigError(f"adjudicate must be true or false, got {adjudicate!r}")
        return await run_in_threadpool(desk.press, run_id, annotator, key, item, adjudicate)

    @app.get("/api/audit/agreement")
    def audit_agreement(run: str = "", judge: str | None = None) -> dict[str, Any]:
        if not run:
            raise ConfigError("give run=ID (one of /api/audit/runs)")
        return desk.agreement(run, judge or None)

    return desk
