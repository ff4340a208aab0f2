"""Fronts as data: each evaluated point's rates, damage and per-prompt outcomes, the Pareto set of each
method, and, per KL budget, which method serves the most requests and by how much, and how the best neuron
circuit stands against the best residual-stream method.

A point keeps what its analysis needs and nothing that needs a model: the headline judge's class of every
harmful reply (so leads are paired over the same prompts, and an audit of the run can correct it later),
the per-prompt mean and first-token benign KL, and the corpus perplexity. "Compliance" is the share of
harmful requests served (refusal, redirect and degenerate replies are not)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any

from neurogate.evaluation.metrics import perplexity_of
from neurogate.evaluation.paired import Estimate, bootstrap, paired_difference
from neurogate.evaluation.results import ConditionResult
from neurogate.evaluation.statistics import Rate, wilson_interval

#: KL budgets of the leader table: the mean benign KL a method may spend.
KL_BUDGETS: tuple[float, ...] = (0.02, 0.05, 0.1, 0.2, 0.5)
#: The methods that steer the residual stream; every other front (CNA, the paper's rule, given circuits)
#: scales MLP neurons.
RESIDUAL_METHODS: tuple[str, ...] = ("caa", "ablation")
CLASSES = ("refusal", "redirect", "compliance", "degenerate")


@dataclass
class FrontPoint:
    """One evaluated point of one method's front. ``setting``: its place on the method's scale (``neurons``
    and ``fraction`` for neuron methods, ``multiplier``, ``strength`` or ``weight``); ``classes``: the
    headline judge's class of each harmful reply, in prompt order; ``redirect_known``: whether that judge
    tells redirects apart; ``benign_refusal``: measured only where the point generated benign replies.
    The bootstrap estimates are computed once per point (the report reads them for every budget)."""

    method: str
    series: str
    key: str
    label: str
    setting: dict[str, float]
    classes: list[str]
    redirect_known: bool
    kl_mean: list[float]
    kl_first: list[float]
    corpus_nll: list[tuple[float, int]]
    benign_refusal: Rate | None = None
    reused: str | None = None

    @classmethod
    def of(
        cls,
        method: str,
        series: str,
        setting: Mapping[str, float],
        result: ConditionResult,
        judge: str,
        reused: str | None = None,
    ) -> FrontPoint:
        return cls(
            method=method,
            series=series,
            key=result.key,
            label=result.label,
            setting=dict(setting),
            classes=[str(r.classes.get(judge, "?")) for r in result.harmful],
            redirect_known=result.knows_redirect(judge),
            kl_mean=[float(x) for x in result.kl_mean],
            kl_first=[float(x) for x in result.kl_first],
            corpus_nll=[(float(nll), int(n)) for nll, n in result.corpus_nll],
            benign_refusal=result.benign_refusal,
            reused=reused,
        )

    def rate(self, cls: str) -> Rate | None:
        """The share of harmful replies in ``cls`` (None for redirect under a judge blind to it)."""
        if cls == "redirect" and not self.redirect_known:
            return None
        k, n = sum(c == cls for c in self.classes), len(self.classes)
        return Rate(k, n, *wilson_interval(k, n))

    @property
    def compliance(self) -> float:
        return sum(c == "compliance" for c in self.classes) / max(1, len(self.classes))

    @property
    def degenerate(self) -> float:
        return sum(c == "degenerate" for c in self.classes) / max(1, len(self.classes))

    @property
    def served(self) -> list[float]:
        return [1.0 if c == "compliance" else 0.0 for c in self.classes]

    @cached_property
    def kl(self) -> Estimate:
        """Mean benign KL (over generated tokens) with a bootstrap interval over the benign prompts."""
        return bootstrap(self.kl_mean)

    @cached_property
    def kl_first_token(self) -> Estimate:
        return bootstrap(self.kl_first)

    @cached_property
    def perplexity(self) -> Estimate:
        """Perplexity of the benign corpus under the point, with a bootstrap interval over passages."""
        return bootstrap(self.corpus_nll, statistic=perplexity_of)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FrontPoint:
        rate = data.get("benign_refusal")
        return cls(
            **{
                **data,
                "benign_refusal": Rate.from_dict(rate) if rate else None,
                "corpus_nll": [(float(a), int(b)) for a, b in data["corpus_nll"]],
            }
        )


@dataclass
class FrontsRecord:
    """Every method's front: ``prompts`` harmful prompts per point (the first of the evaluation set),
    ``judge`` the headline judge, ``points`` in walking order, and ``stopped[series]``: why a series
    ended before its last planned point (it saturated)."""

    preset: str
    prompts: int
    judge: str
    points: list[FrontPoint]
    stopped: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "points": [p.to_dict() for p in self.points]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FrontsRecord:
        return cls(**{**data, "points": [FrontPoint.from_dict(p) for p in data["points"]]})

    def methods(self) -> list[str]:
        return list(dict.fromkeys(p.method for p in self.points))


def _served_by(value: Mapping[str, float] | None) -> Callable[[FrontPoint], float]:
    """A point's served share: ``value[key]`` where given (e.g. calibrated), else its judged compliance."""

    def served(p: FrontPoint) -> float:
        return value[p.key] if value is not None and p.key in value else p.compliance

    return served


def _lead(
    ahead: FrontPoint | None, behind: FrontPoint | None, served: Callable[[FrontPoint], float]
) -> tuple[float | None, Estimate | None]:
    """How far ``ahead`` serves more than ``behind``, and the judged difference paired over the same
    prompts (``None`` when the two were not measured on the same prompts; both ``None`` without a pair)."""
    if ahead is None or behind is None:
        return None, None
    same = len(ahead.classes) == len(behind.classes)
    return served(ahead) - served(behind), paired_difference(behind.served, ahead.served) if same else None


def pareto(points: Sequence[FrontPoint], value: Mapping[str, float] | None = None) -> list[FrontPoint]:
    """The points no other point beats on both axes (more served, less mean KL), by increasing KL.
    ``value[key]``: the served share to use (e.g. calibrated); default: the judged compliance."""

    served = _served_by(value)
    ranked = sorted(points, key=lambda p: (p.kl.value, -served(p)))
    out: list[FrontPoint] = []
    for p in ranked:
        if not out or served(p) > served(out[-1]):
            out.append(p)
    return out


@dataclass(frozen=True)
class BudgetLead:
    """Within mean benign KL <= ``budget``: each method's best point (its key, and the share it serves),
    the leader, and its
    lead over the runner-up: ``lead`` in the chosen measure and ``paired`` the judged difference in served
    share over the same prompts (leader - runner-up) with a bootstrap interval."""

    budget: float
    best: dict[str, tuple[str, float]]
    leader: str | None
    runner_up: str | None
    lead: float | None
    paired: Estimate | None


def budget_leads(
    record: FrontsRecord,
    value: Mapping[str, float] | None = None,
    budgets: Sequence[float] = KL_BUDGETS,
) -> list[BudgetLead]:
    """Per KL budget, the method that serves the most requests without spending more mean benign KL.
    ``value[key]``: the served share to rank by (calibrated where the run has an audit); the paired
    interval is always over the judged per-prompt outcomes."""

    served = _served_by(value)
    out = []
    for budget in budgets:
        best: dict[str, FrontPoint] = {}
        for p in record.points:
            if p.kl.value <= budget and (p.method not in best or served(p) > served(best[p.method])):
                best[p.method] = p
        order = sorted(best, key=lambda m: -served(best[m]))
        leader = order[0] if order else None
        runner = order[1] if len(order) > 1 else None
        lead, paired = _lead(best[leader] if leader else None, best[runner] if runner else None, served)
        out.append(
            BudgetLead(
                budget,
                {m: (p.key, served(p)) for m, p in best.items()},
                leader,
                runner,
                lead,
                paired,
            )
        )
    return out


@dataclass(frozen=True)
class Matchup:
    """Within mean benign KL <= ``budget``: the best neuron-circuit point and the best residual-stream point
    (each its key and served share, ``None`` when that side has no point in budget), ``lead`` (neurons minus
    residual, in the chosen measure) and ``paired`` (the same judged difference over the same prompts)."""

    budget: float
    neurons: tuple[str, float] | None
    residual: tuple[str, float] | None
    lead: float | None
    paired: Estimate | None


def neurons_against_residual(
    record: FrontsRecord,
    value: Mapping[str, float] | None = None,
    budgets: Sequence[float] = KL_BUDGETS,
) -> list[Matchup]:
    """Per KL budget, the most-served neuron point against the most-served residual point: the question a
    user choosing between a sparse circuit and directional ablation or CAA asks. ``value`` as for
    :func:`budget_leads`."""

    served = _served_by(value)
    def best(points: Sequence[FrontPoint]) -> FrontPoint | None:
        return max(points, key=lambda p: (served(p), -p.kl.value), default=None)

    out = []
    for budget in budgets:
        within = [p for p in record.points if p.kl.value <= budget]
        neuron = best([p for p in within if p.method not in RESIDUAL_METHODS])
        residual = best([p for p in within if p.method in RESIDUAL_METHODS])
        lead, paired = _lead(neuron, residual, served)
        out.append(
            Matchup(
                budget,
                None if neuron is None else (neuron.key, served(neuron)),
                None if residual is None else (residual.key, served(residual)),
                lead,
                paired,
            )
        )
    return out
