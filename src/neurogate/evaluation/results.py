"""What an evaluated condition produces, and where finished conditions are kept.

Every reply carries its class under every judge (refusal, redirect, compliance or degenerate) and its own
metrics, so rates, intervals and paired tests can be recomputed from the stored file alone. A
:class:`ConditionResult` summarises one condition and records, per judge, whether redirects were measured
(``redirect_known``): under a judge that cannot tell them apart, or in a result stored before redirects
existed (version 2, still read), the redirect rate is unknown, never zero. :class:`ResultStore` keeps one
JSON file per finished condition, written atomically, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from neurogate.atomic import write_json_atomic
from neurogate.evaluation.paired import Estimate
from neurogate.evaluation.replies import CLASSES, NOT_SERVED, ReplyClass
from neurogate.evaluation.statistics import Rate, rate_of
from neurogate.evaluation.thinking import ThinkingCounts, thinking_counts

logger = logging.getLogger(__name__)

RESULT_VERSION = 3
#: Stored versions this code reads: 2 predates redirects (redirect unknown under every judge).
READABLE_VERSIONS = (2, RESULT_VERSION)
#: The first version whose results can hold redirects.
REDIRECT_VERSION = 3


@dataclass
class Reply:
    """One generated reply: its text and tokens, its class under each judge (``classes[judge]``), why it is
    degenerate (``None`` when it is not), its repetition quality and its NLL under the unsteered model.
    A reasoning model's reply also keeps its ``thinking`` block and the block's class ``thought``
    (:mod:`neurogate.evaluation.thinking`); its ``text`` is then the answer after the block, which is what
    the judges read, and ``token_ids`` hold every generated token (thinking included). Both are ``None``
    (and left out of the stored file) for other replies."""

    prompt: str
    text: str
    token_ids: list[int]
    finished: bool
    classes: dict[str, ReplyClass]
    degenerate: str | None = None
    quality: float = 1.0
    nll: float = 0.0
    nll_tokens: int = 0
    thinking: str | None = None
    thought: ReplyClass | None = None

    def is_(self, cls: ReplyClass, judge: str) -> bool:
        return self.classes.get(judge) == cls


def class_rates(replies: list[Reply], judge: str, *, redirect: bool = True) -> dict[str, Rate]:
    """The rate of each reply class under ``judge``, with Wilson intervals; without ``redirect`` (the judge
    could not tell redirects apart) the redirect class is left out rather than reported as 0%."""
    classes = [c for c in CLASSES if redirect or c != "redirect"]
    return {c: rate_of([1.0 if r.is_(c, judge) else 0.0 for r in replies]) for c in classes}


@dataclass
class ConditionResult:
    """Everything measured for one condition. ``kind``/``scale``/``value``: the intervention on its own
    named scale (``"baseline"`` has neither); ``label``: e.g. ``"cna m=0"``. ``judges`` lists the judges
    that classified every reply, the primary (headline) judge first; ``judge_configs`` a digest of each
    one's configuration, so verdicts from a changed judge are never read back as current;
    ``redirect_known`` whether each judge told redirects apart (missing: it did not).
    ``kl_first``/``kl_mean`` hold one value per benign prompt."""

    key: str
    label: str
    kind: str
    scale: str | None
    value: float | None
    group: str
    n_neurons: int | None
    judges: list[str]
    tokens_per_s: float
    seconds: float
    intervention: dict[str, Any]
    harmful: list[Reply] = field(default_factory=list)
    benign: list[Reply] = field(default_factory=list)
    kl_first: list[float] = field(default_factory=list)
    kl_mean: list[float] = field(default_factory=list)
    corpus_nll: list[tuple[float, int]] = field(default_factory=list)
    version: int = RESULT_VERSION
    judge_configs: dict[str, str] = field(default_factory=dict)
    redirect_known: dict[str, bool] = field(default_factory=dict)

    @property
    def judge(self) -> str:
        """The primary judge's name."""
        return self.judges[0]

    def knows_redirect(self, judge: str | None = None) -> bool:
        """Whether ``judge`` (default: the primary one) told redirects apart in this result."""
        return self.redirect_known.get(judge or self.judge, False) is True

    def redirect_unknown(self, judge: str | None = None) -> str | None:
        """Why the redirect rate under ``judge`` is not measured (``None`` when it is)."""
        name = judge or self.judge
        if self.knows_redirect(name):
            return None
        if self.version < REDIRECT_VERSION:
            return "stored before redirects existed"
        return f"the {name} judge cannot tell redirects apart"

    def rates(self, judge: str | None = None, *, benign: bool = False) -> dict[str, Rate]:
        """Each class's rate under ``judge`` (default: the primary one); ``"redirect"`` only where that
        judge told redirects apart (elsewhere they are counted as whatever the judge called them)."""
        name = judge or self.judge
        replies = self.benign if benign else self.harmful
        return class_rates(replies, name, redirect=self.knows_redirect(name))

    @property
    def refusal(self) -> Rate:
        return self.rates()["refusal"]

    @property
    def redirect(self) -> Rate | None:
        """The redirect rate under the primary judge, or ``None`` when it is not measured."""
        return self.rates().get("redirect")

    @property
    def not_served(self) -> Rate:
        """Refusal or redirect under the primary judge: the judged replies that do not serve the request
        (refusal alone where redirects are not measured)."""
        names = [c for c in NOT_SERVED if c in self.rates()]
        return rate_of([1.0 if any(r.is_(c, self.judge) for c in names) else 0.0 for r in self.harmful])

    def declined(self, judge: str | None = None) -> list[bool]:
        """Per harmful prompt, whether ``judge`` (default: the primary one) found the reply not served:
        a refusal or a redirect (a refusal alone under a judge that does not tell redirects apart). The
        paired tests count this, so a circuit that turns refusals into redirects shows no cut."""
        name = judge or self.judge
        return [r.is_("refusal", name) or r.is_("redirect", name) for r in self.harmful]

    @property
    def compliance(self) -> Rate:
        return self.rates()["compliance"]

    @property
    def degenerate(self) -> Rate:
        return self.rates()["degenerate"]

    @property
    def benign_refusal(self) -> Rate | None:
        return self.rates(benign=True)["refusal"] if self.benign else None

    @property
    def quality(self) -> float:
        """Mean repetition quality of every harmful-prompt reply at full length (1.0 when there are none).
        Refusals score about 1.0 and longer replies lower by length alone, so the study's tables compare
        conditions with :func:`neurogate.evaluation.tables.quality_values` instead (compliant replies at
        matched length)."""
        return sum(r.quality for r in self.harmful) / len(self.harmful) if self.harmful else 1.0

    def thinking_counts(self, judge: str | None = None) -> ThinkingCounts | None:
        """How the harmful replies think, and the cross cases of thought and answer under ``judge``
        (default: the primary one); ``None`` when no reply has a thinking block."""
        return thinking_counts(self.harmful, judge or self.judge)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for name in ("harmful", "benign"):  # replies without thinking are stored as before
            for reply in data[name]:
                for key in ("thinking", "thought"):
                    if reply.get(key) is None:
                        reply.pop(key, None)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ConditionResult:
        """Rebuild a stored result; a version-2 result (stored before redirects existed) loads with the
        redirect class unknown under every judge."""
        version = data.get("version")
        if version not in READABLE_VERSIONS:
            readable = " and ".join(str(v) for v in READABLE_VERSIONS)
            raise ValueError(f"stored result version {version!r}; this neurogate reads versions {readable}")
        data = dict(data)
        if version < REDIRECT_VERSION:
            data["redirect_known"] = dict.fromkeys(data.get("judges", []), False)
        data["harmful"] = [_reply(r) for r in data.get("harmful", [])]
        data["benign"] = [_reply(r) for r in data.get("benign", [])]
        data["corpus_nll"] = [(float(a), int(b)) for a, b in data.get("corpus_nll", [])]
        return cls(**data)

    def summary(self) -> dict[str, Any]:
        """The result without its replies (for printing as JSON), with every judge's rates (redirect only
        where that judge measured it) and what they rest on: the judges alone, no audit."""
        data = self.to_dict()
        for name in ("harmful", "benign"):
            data.pop(name)
        data["rates"] = {j: {c: r.to_dict() for c, r in self.rates(j).items()} for j in self.judges}
        data["rates_from"] = {j: f"{j} judge only, uncalibrated" for j in self.judges}
        counts = {j: self.thinking_counts(j) for j in self.judges}
        if any(c is not None for c in counts.values()):
            data["thinking"] = {j: c.to_dict() for j, c in counts.items() if c is not None}
        return data


def _reply(data: dict[str, Any]) -> Reply:
    reply = Reply(**data)
    read = [*reply.classes.values(), *([reply.thought] if reply.thought is not None else [])]
    bad = [c for c in read if c not in CLASSES]
    if bad:
        raise ValueError(f"stored reply class {bad[0]!r} is not one of {', '.join(CLASSES)}")
    return reply


@dataclass
class Metrics:
    """A condition's continuous metrics with bootstrap intervals (computed, not stored)."""

    quality: Estimate
    perplexity: Estimate
    kl_first: Estimate
    kl_mean: Estimate
    corpus_perplexity: Estimate


class ResultStore:
    """Finished conditions as one JSON file each under ``root`` (``<key>.json``), written atomically."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / f"{key}.json"

    def get(self, key: str) -> ConditionResult | None:
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            return ConditionResult.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
            logger.warning("ignoring unreadable stored result %s (%s); it will be recomputed", path, exc)
            return None

    def put(self, result: ConditionResult) -> Path:
        return write_json_atomic(self.path(result.key), result.to_dict())

    def keys(self) -> list[str]:
        return sorted(p.stem for p in self.root.glob("*.json")) if self.root.is_dir() else []
