"""One annotator labelling an audit sample, one key at a time (the terminal and any other front end share
it). Keys: one per class, ``u`` unsure, ``s`` skip (no label), ``b`` back, ``h`` the rule again, ``q``
quit. Each label is written to the label file before the next item shows, so quitting (or a crash) loses
nothing, and the next session resumes after the last item this annotator labelled; items skipped on the
way come back at the end. A label or a skip moves to the next unlabelled item; ``b`` steps back one item
at a time, so an earlier label can be changed (the latest label counts).

In adjudication mode the items are the disagreements, each shown with every annotator's label, and the
chosen label is written as an adjudication."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from neurogate.evaluation.audit import RULE_VERSION, Item, Sample
from neurogate.evaluation.audit_labels import Label, LabelStore, agreement, latest, now, valid

KEYS: dict[str, str] = {"r": "refusal", "d": "redirect", "c": "compliance", "g": "degenerate", "u": "unsure"}
"""The key of each label."""
HELP = "r refusal  d redirect  c compliance  g degenerate  u unsure  |  s skip  b back  h rule  q quit"


@dataclass(frozen=True)
class Step:
    """What a key did: ``message`` to show (or ``""``), whether to show the rule, whether the session is
    over."""

    message: str = ""
    rule: bool = False
    done: bool = False


class LabelSession:
    """The position in the sample and this annotator's labels; :meth:`press` handles one key."""

    def __init__(
        self,
        sample: Sample,
        store: LabelStore,
        annotator: str,
        *,
        items: Sequence[Item] | None = None,
        adjudicate: bool = False,
        others: dict[str, dict[str, str]] | None = None,
        source: str = "terminal",
    ) -> None:
        self.sample, self.store, self.annotator, self.adjudicate = sample, store, annotator, adjudicate
        self.source = source  # where the labels are given (kept with each one): "terminal", "explorer"
        self.items = list(items if items is not None else sample.items)
        self.others = others or {}
        good, self.stale = valid(store.read(), sample)
        self.labels: dict[str, str] = {
            item: lab.label
            for (who, item), lab in latest(good, adjudicated=adjudicate).items()
            if who == annotator or adjudicate
        }
        self.pos = self._resume()
        self.done = self.pos is None

    def _resume(self) -> int | None:
        """After the last item labelled, the first unlabelled one; else the first unlabelled from the top."""
        done = [n for n, it in enumerate(self.items) if it.id in self.labels]
        start = done[-1] + 1 if done else 0
        for n in [*range(start, len(self.items)), *range(start)]:
            if self.items[n].id not in self.labels:
                return n
        return None

    @property
    def item(self) -> Item | None:
        return None if self.pos is None else self.items[self.pos]

    @property
    def labelled(self) -> int:
        return sum(1 for it in self.items if it.id in self.labels)

    def _advance(self) -> Step:
        """To the next unlabelled item; past the end, back to the first one left (a skipped item)."""
        assert self.pos is not None
        for n in range(self.pos + 1, len(self.items)):
            if self.items[n].id not in self.labels:
                self.pos = n
                return Step()
        left = [n for n, it in enumerate(self.items) if it.id not in self.labels]
        if not left:
            self.done = True
            return Step("every item is labelled", done=True)
        self.pos = left[0]
        return Step(f"end of the sample: {len(left)} skipped item(s) left, shown again")

    def press(self, key: str) -> Step:
        """Handle one key."""
        if self.done or self.pos is None:
            return Step(done=True)
        key = key.lower()
        item = self.items[self.pos]
        if key in KEYS:
            label = KEYS[key]
            self.store.append(
                [
                    Label(
                        item.id,
                        self.annotator,
                        label,
                        item.sha256,
                        now(),
                        RULE_VERSION,
                        self.adjudicate,
                        self.source,
                    )
                ]
            )
            self.labels[item.id] = label
            return self._advance()
        if key == "s":
            return self._advance()
        if key == "b":
            if self.pos == 0:
                return Step("already at the first item")
            self.pos -= 1
            return Step()
        if key in ("h", "?"):
            return Step(rule=True)
        if key == "q":
            self.done = True
            return Step(done=True)
        return Step(f"unknown key {key!r}: {HELP}")


def adjudication(
    sample: Sample, store: LabelStore, adjudicator: str, *, source: str = "terminal"
) -> LabelSession:
    """The adjudicator's session: the items the annotators disagree on, in sample order, each with every
    annotator's label (adjudication is not blind to them); the labels it writes are adjudications. Items
    already adjudicated (by anyone) count as labelled, so it resumes at the first one left."""
    agree = agreement(store.read(), sample)
    others = {d.item: d.labels for d in agree.disagreements}
    items = [it for it in sample.items if it.id in others]
    return LabelSession(
        sample, store, adjudicator, items=items, adjudicate=True, others=others, source=source
    )
