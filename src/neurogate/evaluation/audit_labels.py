"""Audit labels: the append-only label file, labels made elsewhere, agreement and adjudication.

``RUN_DIR/audit/labels.jsonl`` holds one record per label: annotator, UTC time, rule version, item id,
the hash of the reply it was given for, the label, and whether it is an adjudication. A new label is
appended by writing the whole file again beside it and renaming it into place, under a lock, so a crash
never leaves half a line and two annotators labelling at once never lose each other's work. An
annotator's latest label of an item counts; a label whose reply hash no longer matches the item (the run
was generated again) does not.

An item's **resolved** label: the latest adjudication when there is one; else the class every annotator
gave (``unsure`` labels aside: an item one annotator called unsure and another a class takes the class);
``unsure`` when every label is unsure; unresolved (no label) when annotators disagree on the class.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from itertools import combinations
from pathlib import Path

from neurogate.atomic import write_text_atomic
from neurogate.errors import ConfigError, NeurogateError
from neurogate.evaluation.audit import LABELS, RULE_VERSION, UNSURE, Sample, audit_dir
from neurogate.evaluation.paired import cohen_kappa

LABELS_FILE = "labels.jsonl"
MAX_PROBLEMS = 5


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Label:
    """One label of one item by one annotator."""

    item: str
    annotator: str
    label: str
    reply_sha256: str
    time: str
    rule: str = RULE_VERSION
    adjudicated: bool = False
    source: str = "terminal"


class LabelStore:
    """The label file of a run's audit folder."""

    def __init__(self, run_dir: str | Path) -> None:
        self.path = audit_dir(run_dir) / LABELS_FILE
        self._lock = self.path.parent / ".labels-lock"

    def read(self) -> list[Label]:
        """Every record, in the order written (a damaged line is an error naming it)."""
        if not self.path.is_file():
            return []
        out = []
        for n, line in enumerate(self.path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                out.append(Label(**json.loads(line)))
            except (json.JSONDecodeError, TypeError) as exc:
                raise NeurogateError(f"{self.path} line {n} is not a label record ({exc})") from exc
        return out

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """An exclusive lock on the label file for one read-append-replace (POSIX; elsewhere none)."""
        self._lock.parent.mkdir(parents=True, exist_ok=True)
        try:
            import fcntl
        except ImportError:
            yield
            return
        with self._lock.open("a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def append(self, labels: Sequence[Label]) -> None:
        """Add records at the end of the file, atomically."""
        if not labels:
            return
        text = "".join(json.dumps(asdict(lab), ensure_ascii=False) + "\n" for lab in labels)
        with self._locked():
            old = self.path.read_text(encoding="utf-8") if self.path.is_file() else ""
            if old and not old.endswith("\n"):
                old += "\n"
            write_text_atomic(self.path, old + text)


def valid(labels: Sequence[Label], sample: Sample) -> tuple[list[Label], list[Label]]:
    """(labels that count, labels whose item is gone or whose reply changed since they were given)."""
    by_id = {it.id: it for it in sample.items}
    good: list[Label] = []
    stale: list[Label] = []
    for lab in labels:
        item = by_id.get(lab.item)
        (good if item is not None and item.sha256 == lab.reply_sha256 else stale).append(lab)
    return good, stale


def stale_message(stale: Sequence[Label]) -> str | None:
    """One line about labels that no longer count, or ``None``."""
    if not stale:
        return None
    items = len({lab.item for lab in stale})
    return (
        f"{len(stale)} label(s) of {items} item(s) no longer count: the reply changed since they were given "
        "(the run was generated again) or the item left the sample; those items are shown again"
    )


def latest(labels: Sequence[Label], *, adjudicated: bool = False) -> dict[tuple[str, str], Label]:
    """``(annotator, item) -> label``: each annotator's latest label of each item (adjudications apart)."""
    out: dict[tuple[str, str], Label] = {}
    for lab in labels:
        if lab.adjudicated == adjudicated:
            out[(lab.annotator, lab.item)] = lab
    return out


@dataclass(frozen=True)
class Resolution:
    """An item's resolved label (``None``: annotators disagree, no adjudication yet)."""

    label: str | None
    adjudicated: bool
    labels: dict[str, str]


def resolve(labels: Sequence[Label], sample: Sample) -> dict[str, Resolution]:
    """The resolved label of every labelled item (the rule in the module docstring)."""
    good, _ = valid(labels, sample)
    per_item: dict[str, dict[str, str]] = {}
    for (annotator, item), lab in latest(good).items():
        per_item.setdefault(item, {})[annotator] = lab.label
    final = {item: lab.label for (_, item), lab in latest(good, adjudicated=True).items()}
    out = {}
    for item in {*per_item, *final}:
        given = per_item.get(item, {})
        if item in final:
            out[item] = Resolution(final[item], True, given)
            continue
        classes = {v for v in given.values() if v != UNSURE}
        label = classes.pop() if len(classes) == 1 else (UNSURE if not classes else None)
        out[item] = Resolution(label, False, given)
    return out


@dataclass(frozen=True)
class PairAgreement:
    """Two annotators on the items both labelled: Cohen's kappa (``None`` where undefined) overall and per
    condition, with the number of items."""

    a: str
    b: str
    n: int
    agreement: float
    kappa: float | None
    per_condition: dict[str, tuple[int, float | None]]


@dataclass(frozen=True)
class Disagreement:
    """An item the annotators labelled differently, with each one's label and the adjudication (if any)."""

    item: str
    labels: dict[str, str]
    adjudicated: str | None


@dataclass
class Agreement:
    annotators: list[str]
    pairs: list[PairAgreement] = field(default_factory=list)
    disagreements: list[Disagreement] = field(default_factory=list)


def _kappa(a: list[str], b: list[str]) -> float | None:
    if not a:
        return None
    k = cohen_kappa(a, b)
    return None if math.isnan(k) else k


def agreement(labels: Sequence[Label], sample: Sample) -> Agreement:
    """Pairwise Cohen's kappa (``unsure`` is a label of its own) and the disagreements, in sample order."""
    good, _ = valid(labels, sample)
    mine = latest(good)
    annotators = sorted({a for a, _ in mine})
    out = Agreement(annotators)
    for a, b in combinations(annotators, 2):
        both = [it.id for it in sample.items if (a, it.id) in mine and (b, it.id) in mine]
        la = [mine[(a, i)].label for i in both]
        lb = [mine[(b, i)].label for i in both]
        per: dict[str, tuple[int, float | None]] = {}
        for key in sample.conditions:
            idx = [n for n, i in enumerate(both) if sample.hidden[i].condition == key]
            if idx:
                per[key] = (len(idx), _kappa([la[n] for n in idx], [lb[n] for n in idx]))
        same = sum(x == y for x, y in zip(la, lb, strict=True))
        out.pairs.append(
            PairAgreement(a, b, len(both), same / len(both) if both else 0.0, _kappa(la, lb), per)
        )
    resolved = resolve(labels, sample)
    for it in sample.items:
        res = resolved.get(it.id)
        if res is not None and len(set(res.labels.values())) > 1:
            out.disagreements.append(Disagreement(it.id, res.labels, res.label if res.adjudicated else None))
    return out


def read_import(
    path: str | Path, sample: Sample, annotator: str | None, rule: str = RULE_VERSION
) -> list[Label]:
    """Labels made elsewhere, checked against the sample: a JSONL file of records (``item`` or ``id``,
    ``label``, ``reply_sha256`` or ``sha256``, optional ``annotator``, ``time``, ``rule``, ``adjudicated``)
    or a CSV file with those columns. Every problem is collected; any problem refuses the whole file."""
    src = Path(path)
    try:
        text = src.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise NeurogateError(f"cannot read {src} ({exc})") from exc
    return parse_import(text, str(src), sample, annotator, rule)


def parse_import(
    text: str, source: str, sample: Sample, annotator: str | None, rule: str = RULE_VERSION
) -> list[Label]:
    """The labels in ``text``, the content of the file named ``source`` (a path or a file name: a ``.csv``
    name reads as CSV, any other as JSONL), checked as :func:`read_import` says; the explorer's upload
    comes here with its file name."""
    src = Path(source)
    rows: list[tuple[int, dict[str, object]]] = []
    problems: list[str] = []
    if src.suffix.lower() == ".csv":
        rows = [(n, dict(r)) for n, r in enumerate(csv.DictReader(text.splitlines()), 2)]
    else:
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as exc:
                    problems.append(f"line {n}: not JSON ({exc.msg})")
                    continue
                if isinstance(rec, dict):
                    rows.append((n, rec))
                else:
                    problems.append(f"line {n}: not a JSON object")
    by_id = {it.id: it for it in sample.items}
    out = []
    for n, rec in rows:
        item_id = str(rec.get("item") or rec.get("id") or "")
        label = str(rec.get("label") or "").strip().lower()
        digest = str(rec.get("reply_sha256") or rec.get("sha256") or "")
        who = str(rec.get("annotator") or annotator or "")
        item = by_id.get(item_id)
        if item is None:
            problems.append(f"line {n}: unknown item id {item_id!r}")
        elif label not in LABELS:
            problems.append(f"line {n}: label {label!r} is not one of {', '.join(LABELS)}")
        elif digest != item.sha256:
            problems.append(
                f"line {n}: item {item_id}: reply hash {digest[:12] or '(none)'} does not match the sample's "
                f"{item.sha256[:12]} (labelled from another version of the reply)"
            )
        elif not who:
            problems.append(f"line {n}: no annotator (add an annotator column or give an annotator name)")
        else:
            adjudicated = str(rec.get("adjudicated", "")).lower() in ("true", "1", "yes")
            out.append(
                Label(
                    item_id,
                    who,
                    label,
                    digest,
                    str(rec.get("time") or now()),
                    str(rec.get("rule") or rule),
                    adjudicated,
                    f"import:{src.name}",
                )
            )
    if not rows and not problems:
        problems.append("no label records")
    if problems:
        shown = "; ".join(problems[:MAX_PROBLEMS])
        more = f" (and {len(problems) - MAX_PROBLEMS} more)" if len(problems) > MAX_PROBLEMS else ""
        raise ConfigError(f"{source}: nothing imported: {shown}{more}")
    return out


def import_labels(run_dir: str | Path, path: str | Path, sample: Sample, annotator: str | None) -> int:
    """Add the labels of ``path`` (see :func:`read_import`) to the run's label file (see
    :func:`add_labels`). Returns the number added."""
    return add_labels(run_dir, read_import(path, sample, annotator))


def add_labels(run_dir: str | Path, labels: Sequence[Label]) -> int:
    """Add checked labels (:func:`read_import`, :func:`parse_import`) to the run's label file. A record that
    repeats what its annotator's latest label of the item already says is not added again (importing a
    file twice changes nothing). Returns the number added."""
    store = LabelStore(run_dir)
    have = store.read()
    current: dict[tuple[str, ...], Label] = {k: v for k, v in latest(have).items()}
    current.update({(a, i, "adjudicated"): lab for (a, i), lab in latest(have, adjudicated=True).items()})
    new = []
    for lab in labels:
        key = (lab.annotator, lab.item, "adjudicated") if lab.adjudicated else (lab.annotator, lab.item)
        old = current.get(key)
        if old is None or (old.label, old.reply_sha256) != (lab.label, lab.reply_sha256):
            new.append(lab)
            current[key] = lab
    store.append(new)
    return len(new)
