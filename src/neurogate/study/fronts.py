"""The study's fronts: every method walked over its own scale on the same prompts, so the report can show
compliance against damage for each, not one matched point.

Points (:mod:`neurogate.study.front_plan`): the default circuit rule at several sizes (prefixes of the
study's one ranking) and multipliers; the paper's rule at several sizes (prefixes of its own ranking); the
circuits given to the study at shares of their recorded intervention; CAA over strengths (plus its matched
strength) and directional ablation over a weight in [0, 1], where the study runs them. Each point is
evaluated on the first ``front_prompts`` harmful evaluation prompts, with KL and corpus perplexity as
every condition has them and no benign generation (benign refusal is shown where the study measured it).
A point the study already evaluated is reused (its first ``front_prompts`` replies, copied into the
fronts' store). A series is walked from its gentlest point and stops once the headline judge finds
``front_saturation`` of the replies served, or half of them degenerate (and a quarter more than
unsteered): a stronger point could only add damage. Finished points are stored under ``fronts/`` as
they finish."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace

from neurogate.discovery.circuit import Circuit
from neurogate.discovery.discover import discover
from neurogate.evaluation.conditions import Condition, baseline
from neurogate.evaluation.engine import Evaluator
from neurogate.evaluation.results import ConditionResult, ResultStore
from neurogate.study.front_analysis import FrontPoint, FrontsRecord
from neurogate.study.front_plan import OFF, PRESETS, FrontPlan
from neurogate.study.results import PAPER
from neurogate.study.stages import Given, MatchedCondition, Study

logger = logging.getLogger(__name__)

#: The name the paper rule's ranking takes among the evaluator's circuits.
PAPER_RANKING = "paper-rule"


@dataclass(frozen=True)
class FrontSpec:
    """One planned point: its method and series, the condition that evaluates it, its place on the scale,
    and the key of the study's own condition with the same intervention (reused when given)."""

    method: str
    series: str
    condition: Condition
    setting: dict[str, float]
    reuse: str | None = None


def _size(fraction: float, n_neurons: int) -> int:
    return max(1, round(fraction * n_neurons))


def plan_fronts(
    plan: FrontPlan,
    n_neurons: int,
    k_main: int,
    *,
    paper: int,
    paper_reuse: str | None,
    ranked: int,
    given: list[Given],
    matched: MatchedCondition | None,
    residual: tuple[str, ...] = ("caa", "ablation"),
    done: Collection[str] = (),
) -> list[FrontSpec]:
    """Every method's points in walking order (gentlest first within a series). ``paper``: how many
    neurons the paper rule's ranking holds (0: the paper's rule is not a method of its own, as when it is
    the study's rule); ``paper_reuse``: the key of the study's paper condition when its circuit is
    this ranking's prefix at the main size (``None``: not); ``ranked``: how many neurons the study's
    ranking holds (a size beyond a ranking is not planned); ``residual``: the residual methods the study
    runs (each has a front only then); ``done``: the keys of the study's own conditions. A point whose
    condition has one of those keys is the same intervention on the same model, and reuses its replies
    (the main circuit's size at m = 0, a sparsity size, CAA's matched strength, ablation at w = 1, a given
    circuit's recorded point)."""

    def reused(cond: Condition) -> str | None:
        return cond.key if cond.key in done else None

    specs: list[FrontSpec] = []
    for m in sorted(plan.cna_multipliers, key=lambda m: abs(1.0 - m)):
        for size in sorted({_size(f, n_neurons) for f in plan.cna_sizes} & set(range(1, ranked + 1))):
            cond = Condition("cna", m, size=size, benign=False, group="front")
            setting = {"neurons": size, "fraction": size / n_neurons, "multiplier": m}
            specs.append(FrontSpec("cna", f"cna m={m:g}", cond, setting, reused(cond)))
    if paper:
        for size in sorted({_size(f, n_neurons) for f in plan.paper_sizes} & set(range(1, paper + 1))):
            cond = Condition("cna", 0.0, size=size, benign=False, group="front", circuit=PAPER_RANKING)
            reuse = paper_reuse if size == k_main else None
            setting = {"neurons": size, "fraction": size / n_neurons, "multiplier": 0.0}
            specs.append(FrontSpec("paper", "paper m=0", cond, setting, reuse))
    for g in given:
        recorded = 0.0 if g.condition.value is None else g.condition.value
        for f in sorted(plan.given_scales):
            m = recorded if f == 1.0 else 1.0 + f * (recorded - 1.0)
            cond = replace(g.condition, value=m, benign=False, group="front")
            setting = {"neurons": float(len(g.circuit)), "fraction": len(g.circuit) / n_neurons}
            setting |= {"multiplier": m, "scale": f}
            specs.append(FrontSpec(g.name, g.name, cond, setting, reused(cond)))
    strengths = set(plan.caa_strengths) if "caa" in residual else set()
    if matched is not None and matched.key != "baseline":
        strengths.add(float(matched.match.strength))
    for s in sorted(strengths):
        cond = Condition("caa", s, benign=False, group="front")
        specs.append(FrontSpec("caa", "caa", cond, {"strength": s}, reused(cond)))
    for w in sorted(plan.ablation_weights) if "ablation" in residual else []:
        cond = Condition("ablation", w, benign=False, group="front")
        specs.append(FrontSpec("ablation", "ablation", cond, {"weight": w}, reused(cond)))
    return specs


def paper_ranking(study: Study, plan: FrontPlan) -> Circuit | None:
    """The paper rule's ranking at its largest front size (its smaller points are prefixes), stored."""
    cfg = study.config.discovery
    if cfg.is_paper_rule() or not plan.paper_sizes:
        return None
    n = study.lm.adapter.n_neurons
    top = max(_size(f, n) for f in plan.paper_sizes)
    rule = replace(cfg.paper_rule(), fraction=None, top_k=top)

    def compute() -> Circuit:
        study.emit("stage", name="the paper rule's ranking (fronts)")
        return discover(study.lm, study.sets.positive, study.sets.negative, rule, progress=False)

    ranking = study.files.load_or_compute("paper-ranking.json", compute, Circuit.load, Circuit.save)
    ranking.check_model(study.lm)
    return ranking


def _subset(result: ConditionResult, n: int, key: str) -> ConditionResult:
    """A study condition's first ``n`` harmful replies under the front point's key (benign replies, KL and
    corpus perplexity are the same measurement)."""
    return dataclasses.replace(result, key=key, harmful=result.harmful[:n])


def front_evaluator(study: Study, main: Evaluator, circuits: Mapping[str, Circuit]) -> Evaluator:
    """The evaluator of the front points: the first ``front_prompts`` harmful prompts (all with
    ``None``), its own store (``fronts/``), and the study's model, judges, generator and directions."""
    n = study.config.front_prompts
    return Evaluator(
        main.lm,
        main.harmful if n is None else main.harmful[:n],
        main.benign,
        circuit=main.circuit,
        circuits={**main.circuits, **circuits},
        directions=main.directions,
        directions_by_kind=main.directions_by_kind,
        judges=main.classifier.judges,
        settings=main.settings,
        store=ResultStore(study.dir / "fronts"),
        corpus=main.corpus,
        generator=main.generator,
    )


def saturated(point: FrontPoint, saturation: float, base_degenerate: float) -> str | None:
    """Why a series ends at ``point`` (None: walk on): it serves ``saturation`` of the requests, or half
    of its replies are degenerate and a quarter more than unsteered (a model that is degenerate unsteered
    does not stop a front)."""
    if point.compliance >= saturation:
        return f"saturated at {point.label}: {point.compliance:.0%} served"
    if point.degenerate >= max(0.5, base_degenerate + 0.25):
        return f"stopped at {point.label}: {point.degenerate:.0%} degenerate"
    return None


def run_fronts(
    study: Study,
    main: Evaluator,
    results: Mapping[str, ConditionResult],
    given: list[Given],
    matched: MatchedCondition | None,
) -> FrontsRecord | None:
    """Evaluate (or read back) every front point the configuration plans, walking each series until it
    saturates; ``None`` with ``fronts = "off"``."""
    config = study.config
    if config.fronts == OFF:
        return None
    plan = PRESETS[config.fronts]
    n_neurons = study.lm.adapter.n_neurons
    k_main, _ = study.sizes()
    ranking = paper_ranking(study, plan)
    paper_given = next((g for g in given if g.name == PAPER), None)
    same_paper = (
        ranking is not None
        and paper_given is not None
        and len(ranking) >= k_main
        and {(x.layer, x.index) for x in ranking.top(k_main).neurons}
        == {(x.layer, x.index) for x in paper_given.circuit.neurons}
    )
    specs = plan_fronts(
        plan,
        n_neurons,
        k_main,
        paper=0 if ranking is None else len(ranking),
        paper_reuse=paper_given.condition.key if same_paper and paper_given is not None else None,
        ranked=len(main.circuit) if main.circuit is not None else 0,
        given=[g for g in given if g.name != PAPER],
        matched=matched,
        residual=tuple(
            k
            for k in ("caa", "ablation")
            if k in config.methods and (main.directions_by_kind.get(k) or main.directions) is not None
        ),
        done=results.keys(),
    )
    evaluator = front_evaluator(study, main, {PAPER_RANKING: ranking} if ranking is not None else {})
    n = len(evaluator.harmful)
    if evaluator.store is not None:
        for key, cond in [("baseline", baseline()), *((s.reuse, s.condition) for s in specs if s.reuse)]:
            if key in results and evaluator.store.get(cond.key) is None:
                evaluator.store.put(_subset(results[key], n, cond.key))
    judge = main.classifier.names[0]
    study.emit("plan", total=len(specs))
    study.emit("stage", name=f"fronts ({config.fronts}, {n} prompts a point)")
    points: list[FrontPoint] = []
    stopped: dict[str, str] = {}
    base = evaluator.baseline()
    base_degenerate = base.degenerate.value if base.harmful else 0.0
    for spec in specs:
        if spec.series in stopped:
            continue
        cached = evaluator.store is not None and evaluator.store.get(spec.condition.key) is not None
        result = evaluator.run(spec.condition)
        size = f", {result.n_neurons} neurons" if result.n_neurons else ""
        label = f"{spec.method} front: {result.label}{size}"
        study.emit("front", key=result.key, label=label, cached=cached, result=result)
        point = FrontPoint.of(spec.method, spec.series, spec.setting, result, judge, spec.reuse)
        points.append(point)
        why = saturated(point, config.front_saturation, base_degenerate)
        if why is not None:
            stopped[spec.series] = why
    return FrontsRecord(config.fronts, n, judge, points, stopped)
