"""The quick screen: the search's first rung, with no generation at all.

A trial's circuit is steered through one teacher-forced pass over a few tuning prompts and benign prompts,
each followed by the first ``quick_tokens`` tokens of the unsteered model's own reply. On the harmful
prompts whose unsteered reply the trials' judge calls a refusal, it reads the probability that the steered
model opens its reply with the same tokens (by default two: "I'm"); on the benign prompts, the KL from the
unsteered model at those positions. A circuit that leaves the refusal's opening as likely as before will not
comply, so it stops here for a few percent of a full measurement's cost; what passes goes on to the
generated screen and the full measurement, which judge real replies (redirects included).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import optuna
import torch

from neurogate.evaluation.metrics import Steering, continuation_logits, log_probs, token_kl
from neurogate.evaluation.results import ConditionResult
from neurogate.evaluation.settings import EvalSettings
from neurogate.models.loading import LoadedModel
from neurogate.tuning.config import TuneConfig

QUICK_ATTR = "quick"
"""The user attribute holding a trial's quick-screen scores."""


@dataclass
class QuickScores:
    """A trial's quick screen: ``opener``, the mean probability (over the quick prompts) that the steered
    reply opens with the unsteered refusal's first tokens; ``kl``/``kl_first``: mean KL over the first
    quick positions of the benign replies, and at their first position (0 without benign prompts)."""

    opener: float
    kl: float
    kl_first: float

    @property
    def cleared(self) -> float:
        """How much of the refusal's opening the steering removed: ``1 - opener`` (higher is better, the
        way compliance is)."""
        return 1.0 - self.opener

    def to_dict(self) -> dict[str, float]:
        return {"opener": self.opener, "kl": self.kl, "kl_first": self.kl_first}


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


class QuickScreen:
    """The quick screen's fixed half, computed once from the unsteered replies: which prompts, which
    opening tokens, and the unsteered logits the benign KL compares against."""

    def __init__(
        self,
        lm: LoadedModel,
        harmful: Sequence[str],
        openers: Sequence[Sequence[int]],
        benign: Sequence[str],
        benign_replies: Sequence[Sequence[int]],
        settings: EvalSettings,
    ) -> None:
        if not harmful or len(harmful) != len(openers) or any(not o for o in openers):
            raise ValueError(
                "the quick screen needs at least one harmful prompt, each with its opening tokens"
            )
        self.lm, self.settings = lm, settings
        self.harmful, self.openers = list(harmful), [list(o) for o in openers]
        self.benign = list(benign)
        # the KL's positions: the first predicts the reply's first token; each later one reads the reply's
        # tokens before it (a dummy last token makes ``len(reply)`` predicting positions)
        self.benign_conts = [[*list(r)[: self.tokens - 1], 0] for r in benign_replies]
        self.reference = [log_probs(x) for x in self._logits(None, benign_only=True)]

    @property
    def tokens(self) -> int:
        return max(len(o) for o in self.openers)

    @classmethod
    def from_baseline(
        cls,
        lm: LoadedModel,
        baseline: ConditionResult,
        judge: str,
        *,
        prompts: int,
        benign: int,
        tokens: int,
        settings: EvalSettings,
    ) -> QuickScreen | None:
        """The quick screen on the first ``prompts`` harmful replies of ``baseline`` that ``judge`` calls a
        refusal and the first ``benign`` benign ones (``None`` when no such refusal is among them: there is
        no refusal opening to watch)."""
        refused = [r for r in baseline.harmful[:prompts] if r.classes.get(judge) == "refusal" and r.token_ids]
        if not refused:
            return None
        kept = [r for r in baseline.benign[:benign] if r.token_ids]
        return cls(
            lm,
            [r.prompt for r in refused],
            [list(r.token_ids)[:tokens] for r in refused],
            [r.prompt for r in kept],
            [list(r.token_ids) for r in kept],
            settings,
        )

    def _logits(self, steering: Steering | None, *, benign_only: bool = False) -> list[torch.Tensor]:
        prompts = self.benign if benign_only else self.harmful + self.benign
        conts = self.benign_conts if benign_only else self.openers + self.benign_conts
        if not prompts:
            return []
        s = self.settings
        return continuation_logits(
            self.lm,
            prompts,
            conts,
            steering,
            system_prompt=s.system_prompt,
            chat=s.chat,
            batch_size=max(s.metric_batch_size, len(prompts)),
        )

    def scores(self, steering: Steering) -> QuickScores:
        """One teacher-forced pass under ``steering`` (all rows in one batch)."""
        logits = self._logits(steering)
        n = len(self.harmful)
        opener = []
        for x, tokens in zip(logits[:n], self.openers, strict=True):
            lp = log_probs(x)
            opener.append(math.exp(float(lp[torch.arange(len(tokens)), torch.tensor(tokens)].sum())))
        kl, first = [], []
        for x, ref in zip(logits[n:], self.reference, strict=True):
            d = token_kl(ref, log_probs(x))
            kl.append(float(d.mean()))
            first.append(float(d[0]))
        return QuickScores(_mean(opener), _mean(kl), _mean(first))


def front_levels(points: Sequence[tuple[float, float]]) -> list[int]:
    """Each point's non-dominated sorting level (1: on the front; both coordinates lower is better): one
    more than the highest level of the points that dominate it, the length of the longest chain of ever
    better points ending at it. In two dimensions, sorted by the first coordinate, only earlier points can
    dominate a later one."""
    order = sorted(range(len(points)), key=lambda i: points[i])
    level = [0] * len(points)
    for k, i in enumerate(order):
        x, y = points[i]
        above = [level[j] for j in order[:k] if points[j][1] <= y and points[j] != (x, y)]
        level[i] = 1 + max(above, default=0)
    return level


def quick_out(scores: QuickScores, earlier: Sequence[tuple[float, float]], config: TuneConfig) -> str | None:
    """Why a trial with these quick scores stops there, or ``None`` when it goes on. ``earlier``: the
    (opener probability, quick benign KL) of every trial quick-screened before it.

    Asynchronous successive halving on two objectives, both lower-is-better: the ``n`` trials so far (this
    one included) are ordered by non-dominated sorting level (:func:`front_levels`), then by opener
    probability, and the first ``ceil(n / quick_eta)`` go on. A circuit that clears the refusal's opening
    at a high KL does not crowd out one that clears a little less at a low one. A first-token benign KL
    above twice ``max_first_kl`` stops a trial whatever its rank (the full measurement would put it outside
    that constraint)."""
    limit = 2 * config.max_first_kl
    if scores.kl_first > limit:
        return f"quick first-token benign KL {scores.kl_first:.2f} > {limit:.2f} (twice the constraint)"
    points = [*earlier, (scores.opener, scores.kl)]
    n, keep = len(points), math.ceil(len(points) / config.quick_eta)
    levels = front_levels(points)
    order = sorted(range(n), key=lambda i: (levels[i], points[i][0], i != n - 1))
    rank = order.index(n - 1)
    if rank < keep:
        return None
    return (
        f"quick screen rank {rank + 1} of {n} (front level {levels[-1]}, refusal opening "
        f"{100 * scores.opener:.2g}%, KL {scores.kl:.3f}); the first {keep} go on"
    )


def quick_points(study: optuna.Study) -> list[tuple[float, float]]:
    """The (opener probability, quick benign KL) of every trial of ``study`` that took the quick screen."""
    return [
        (t.user_attrs[QUICK_ATTR]["opener"], t.user_attrs[QUICK_ATTR]["kl"])
        for t in study.get_trials(deepcopy=False)
        if QUICK_ATTR in t.user_attrs
    ]
