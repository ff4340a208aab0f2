"""The search: an Optuna study over circuits, stored in SQLite so it resumes after Ctrl-C and can be watched
while it runs. Every trial reads cached statistics (one capture pass per position mode, stored on disk),
selects its circuit with tensor operations, and pays only for generation on the tuning prompts.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import optuna
import torch

from neurogate import prompts
from neurogate.discovery.circuit import Circuit
from neurogate.discovery.config import DiscoverConfig
from neurogate.discovery.directions import ResidualDirections
from neurogate.discovery.discover import gather_evidence
from neurogate.discovery.scoring import Evidence
from neurogate.discovery.selection import DEFAULT_FRACTION
from neurogate.discovery.universal import universal_neurons
from neurogate.evaluation.conditions import Condition
from neurogate.evaluation.engine import Evaluator
from neurogate.evaluation.results import ConditionResult, ResultStore
from neurogate.models.loading import LoadedModel
from neurogate.prompts.leakage import without_leaks
from neurogate.prompts.sets import PromptSet
from neurogate.tuning.batch import optimize_batched
from neurogate.tuning.config import TuneConfig
from neurogate.tuning.quick import QUICK_ATTR, QuickScreen, quick_out, quick_points
from neurogate.tuning.scores import Scores, objective_judge
from neurogate.tuning.screen import (
    REASON_ATTR,
    SCREEN_ATTR,
    SEED_ATTR,
    ScreenScores,
    full_screens,
    screen_evaluator,
    screen_out,
)
from neurogate.tuning.space import Point, circuit_at, paper_point, paper_size, suggest

logger = logging.getLogger(__name__)
Event = Callable[[str, dict[str, Any]], None]
OBJECTIVES = ("compliance", "benign KL", "benign refusal")
_NATIVE_CONSTRAINTS = hasattr(optuna.trial.Trial, "set_constraint")


class Search:
    """One tuning run under ``root``: cached statistics, the baseline, and the Optuna study."""

    def __init__(
        self, lm: LoadedModel, config: TuneConfig, root: Path, on_event: Event | None = None
    ) -> None:
        self.lm, self.config, self.root, self.on_event = lm, config, root, on_event
        root.mkdir(parents=True, exist_ok=True)
        self.positive = prompts.load(config.positive)
        self.negative = prompts.load(config.negative)
        self.harmful = prompts.load(config.harmful, limit=config.n_tune)
        self.benign = prompts.load(config.benign, limit=config.n_benign)
        self.confirm = confirm_prompts(config)
        self.final_harmful, self.final_benign, self.final_dropped = held_out(
            config, [self.positive, self.negative, self.harmful, self.benign, self.confirm]
        )
        self._evidence: dict[str, Evidence] = {}
        self._universal: set[tuple[int, int]] | None = None
        self.direction = ablation_direction(lm, config)
        settings = replace(config.evaluation, max_new_tokens=config.search_tokens)
        self.evaluator = Evaluator(
            lm,
            self.harmful.prompts,
            self.benign.prompts,
            settings=settings,
            store=ResultStore(root / "trials"),
        )
        self.screen = (
            screen_evaluator(lm, config, root, self.harmful.prompts, self.benign.prompts, self.evaluator)
            if config.screening
            else None
        )
        self._quick: QuickScreen | None = None
        self._quick_built = False

    def emit(self, kind: str, **info: Any) -> None:
        if self.on_event is not None:
            self.on_event(kind, info)

    def evidence(self, positions: str) -> Evidence:
        """Discovery statistics at ``positions``, computed once and stored (both residual and neuron sites,
        so every scorer can read them)."""
        if positions not in self._evidence:
            path = self.root / f"stats-{positions}.safetensors"
            if path.is_file():
                self._evidence[positions] = Evidence.load(path)
            else:
                self.emit("stage", name=f"statistics ({positions})")
                cfg = DiscoverConfig(score="direction", positions=positions)  # type: ignore[arg-type]
                evidence = gather_evidence(self.lm, self.positive, self.negative, cfg, progress=False)
                evidence.save(path)
                self._evidence[positions] = evidence
        return self._evidence[positions]

    def universal(self) -> set[tuple[int, int]]:
        if self._universal is None:
            self._universal = (
                # universal as discovery defines it (top 0.1%), whatever the largest size searched: at a
                # 1% cap, "top 1% of most unrelated contrasts" would drop neurons small circuits need
                universal_neurons(self.lm, fraction=min(self.config.cap, DEFAULT_FRACTION))
                if self.config.universal_filter
                else set()
            )
        return self._universal

    def circuit(self, point: Point) -> Circuit:
        spec = {"positive": self.positive.describe(), "negative": self.negative.describe()}
        evidence = self.evidence(point.positions)
        return circuit_at(self.lm, point, evidence, self.universal(), spec, direction=self.direction)

    def measure(
        self, name: str, point: Point, evaluator: Evaluator | None = None, *, benign: bool = True
    ) -> ConditionResult:
        """Evaluate ``point`` as the circuit ``name`` (stored, so a rerun reads it back); ``benign``: also
        generate benign replies (for benign refusal; KL is measured either way)."""
        ev = evaluator or self.evaluator
        return ev.run(self.condition(ev, name, point, benign=benign))

    def condition(self, ev: Evaluator, name: str, point: Point, *, benign: bool) -> Condition:
        """The condition that evaluates ``point`` on ``ev`` as the circuit ``name`` (registered there)."""
        ev.circuits[name] = self.circuit(point)
        return Condition(point.intervention, point.condition_multiplier, circuit=name, benign=benign)

    def screen_many(self, trials: list[optuna.Trial], points: list[Point]) -> list[ConditionResult]:
        """The screens of several trials at once (one batched generation where their kinds allow it, each
        trial's replies those it gets alone), stored like :meth:`screen_trial`'s."""
        assert self.screen is not None
        ev = self.screen
        conds = [
            self.condition(ev, f"trial-{t.number}", p, benign=False)
            for t, p in zip(trials, points, strict=True)
        ]
        return ev.run_many(conds)

    def baseline(self) -> Scores:
        return Scores.of(self.evaluator.baseline())

    def objective(self, trial: optuna.Trial) -> tuple[float, float, float]:
        """Compliance (refusals, redirects and degenerate replies are failures, under
        :func:`objective_judge`), mean benign KL and benign refusal of one suggested point."""
        point = self.suggest(trial)
        self.quick_trial(trial, point)
        if self.screen is not None:
            self.screen_trial(trial, point)
        return self.complete(trial, point)

    def suggest(self, trial: optuna.Trial) -> Point:
        """The point the sampler proposes for ``trial``."""
        return suggest(trial, self.config, self.lm.adapter.n_layers)

    def complete(self, trial: optuna.Trial, point: Point) -> tuple[float, float, float]:
        """Measure ``point`` in full as ``trial`` and store its scores; the objective values."""
        result = self.measure(f"trial-{trial.number}", point)
        scores = Scores.of(result)
        trial.set_user_attr("scores", scores.to_dict())
        trial.set_user_attr("point", point.to_dict())
        constraint = [scores.degenerate - self.config.max_degenerate]
        trial.set_user_attr("constraint", constraint)
        if _NATIVE_CONSTRAINTS:
            trial.set_constraint("degenerate", constraint[0])
        self.emit("trial", number=trial.number, point=point, scores=scores, judge=objective_judge(result))
        return scores.compliance, scores.kl, scores.benign_refusal

    def quick_screen(self) -> QuickScreen | None:
        """The quick screen, built once from the baseline's replies (``None`` when it is off, when the
        baseline refuses none of its prompts, or when the model thinks before it answers: there is then no
        refusal opening to watch)."""
        if not self._quick_built:
            self._quick_built = True
            thinks = self.evaluator.thinking is not None and self.evaluator.thinking.active
            if self.config.quick and thinks:
                # the reply opens with its thinking, not with the answer a refusal is read from
                logger.warning("the quick screen is off: %s thinks before it answers", self.lm.spec)
            elif self.config.quick:
                base = self.evaluator.baseline()
                self._quick = QuickScreen.from_baseline(
                    self.lm,
                    base,
                    objective_judge(base),
                    prompts=self.config.quick_prompts,
                    benign=self.config.quick_benign,
                    tokens=self.config.quick_tokens,
                    settings=self.evaluator.settings,
                )
                if self._quick is None:
                    logger.warning(
                        "the quick screen is off: the unsteered model refuses none of the first %d tuning "
                        "prompts (under the %s judge), so there is no refusal opening to watch",
                        self.config.quick_prompts,
                        objective_judge(base),
                    )
        return self._quick

    def quick_trial(self, trial: optuna.Trial, point: Point) -> None:
        """Take ``point`` through the quick screen (when there is one) and store its scores; raise
        :class:`optuna.TrialPruned` when it stops there (never a seeded point)."""
        quick = self.quick_screen()
        if quick is None:
            return
        cond = self.condition(self.evaluator, f"trial-{trial.number}", point, benign=False)
        steering = self.evaluator.intervention(cond)
        assert steering is not None  # a trial's condition always steers
        scores = quick.scores(steering)
        earlier = quick_points(trial.study)
        reason = None if trial.user_attrs.get(SEED_ATTR) else quick_out(scores, earlier, self.config)
        trial.set_user_attr(QUICK_ATTR, scores.to_dict())
        self.emit("quick", number=trial.number, point=point, scores=scores, reason=reason)
        if reason is not None:
            trial.set_user_attr("point", point.to_dict())
            trial.set_user_attr(REASON_ATTR, reason)
            raise optuna.TrialPruned(reason)

    def screen_trial(self, trial: optuna.Trial, point: Point, result: ConditionResult | None = None) -> None:
        """Measure ``point`` on the screen (unless its screen ``result`` is given) and store its scores;
        raise :class:`optuna.TrialPruned` when it is screened out (never a seeded point, which is measured
        in full whatever its screen)."""
        assert self.screen is not None
        if result is None:
            result = self.measure(f"trial-{trial.number}", point, evaluator=self.screen, benign=False)
        screened = ScreenScores.of(result, objective_judge(result))
        trial.set_user_attr(SCREEN_ATTR, screened.to_dict())
        reason = (
            None
            if trial.user_attrs.get(SEED_ATTR)
            else screen_out(screened, full_screens(trial.study), self.config)
        )
        self.emit("screen", number=trial.number, point=point, scores=screened, reason=reason)
        if reason is not None:
            trial.set_user_attr("point", point.to_dict())
            trial.set_user_attr(REASON_ATTR, reason)
            raise optuna.TrialPruned(reason)

    def study(self) -> optuna.Study:
        options: dict[str, Any] = {"seed": self.config.seed, "n_startup_trials": 8}
        if not _NATIVE_CONSTRAINTS:  # Optuna < 5 reads constraints through a callback
            options["constraints_func"] = lambda t: t.user_attrs.get("constraint", [1.0])
        sampler = optuna.samplers.TPESampler(**options)
        study = optuna.create_study(
            study_name="neurogate-tune",
            storage=f"sqlite:///{self.root / 'study.db'}",
            sampler=sampler,
            directions=["maximize", "minimize", "minimize"],
            load_if_exists=True,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(list(OBJECTIVES))
        if not study.trials:
            profiles = self.config.slopes[0] < self.config.slopes[1]  # else slope is not a parameter
            for point in seed_points(self.lm.adapter.n_layers, self.config):
                params = {k: v for k, v in point.to_dict().items() if k != "slope" or profiles}
                study.enqueue_trial(params, user_attrs={SEED_ATTR: True})
        return study

    def run(self) -> optuna.Study:
        """Search until the budget, the trial cap or Ctrl-C (finished trials stay in the study)."""
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.emit("stage", name="baseline")
        self.baseline()
        self.quick_screen()
        study = self.study()
        # screened-out trials count as trials: a rerun with the same cap measures nothing again
        finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        done = len([t for t in study.trials if t.state in finished])
        left = max(0, self.config.max_trials - done)
        started = time.perf_counter()
        self.emit("stage", name=f"search ({done} trials so far)")
        screened = self.screen is not None or self.quick_screen() is not None
        if left and screened and self.config.screen_batch > 1:
            optimize_batched(self, study, left, self.config.budget)
        elif left:
            study.optimize(self.objective, n_trials=left, timeout=self.config.budget, catch=())
        logger.info("searched %d trials in %.0f s", len(study.trials) - done, time.perf_counter() - started)
        return study


def ablation_direction(lm: LoadedModel, config: TuneConfig) -> torch.Tensor | None:
    """The residual direction the ``ablation-direction`` scorer ranks along: the chosen row of
    ``config.ablation_direction`` (a directions file, such as the study's ``ablation-direction.safetensors``)
    when given, else ``None`` (the scorer then reads the difference of means off the tuning statistics)."""
    if config.ablation_direction is None:
        return None
    directions = ResidualDirections.load(config.ablation_direction)
    directions.check_model(lm)
    return directions.unit().to(torch.float64)


def confirm_prompts(config: TuneConfig) -> PromptSet:
    """The confirmation prompts: up to ``n_confirm`` of ``harmful`` after the first ``n_tune`` (none when
    the set has no more; the chosen point is then the search's own best)."""
    full = prompts.load(config.harmful)
    rest = full.prompts[config.n_tune : config.n_tune + config.n_confirm]
    if not rest and config.n_confirm:
        logger.warning(
            "%s has no prompts after the first %d (the search's), so the best trials are not confirmed on "
            "further prompts; give a larger tuning set or lower --n-tune",
            config.harmful,
            config.n_tune,
        )
    return PromptSet(f"{full.name} (confirmation)", rest, full.source)


def held_out(config: TuneConfig, seen: list[PromptSet]) -> tuple[PromptSet, PromptSet, dict[str, int]]:
    """The final check's prompts, read before the search so that a problem with them stops the run at once.
    Prompts that match or nearly duplicate one the run has seen (discovery, tuning or confirmation) are left
    out, as the study leaves them out; how many is returned per set."""
    out, dropped = [], {}
    for name, spec, limit in (
        ("harmful", config.final_harmful, config.n_final),
        ("benign", config.final_benign, config.n_final_benign),
    ):
        kept, leaks = without_leaks(seen, prompts.load(spec), "drop")
        if leaks:
            logger.warning(
                "left %d of the final %s prompts out: they match or nearly duplicate a discovery, tuning or "
                "confirmation prompt (e.g. %r ~ %r)",
                len(leaks),
                name,
                leaks[0].prompt,
                leaks[0].twin,
            )
        dropped[name] = len(leaks)
        out.append(kept.first(limit))
    return out[0], out[1], dropped


def seed_points(n_layers: int, config: TuneConfig) -> list[Point]:
    """Points tried first: the paper's rule, and each scorer at the paper's size (0.1%, or the cap when
    smaller) with ablation."""
    size = paper_size(config.cap, config.min_fraction)
    points = [paper_point(n_layers, config.cap, config.min_fraction)]
    for scorer in config.scorers:
        if scorer != "mean-diff":
            points.append(Point(scorer, "both", "last", size, 0, n_layers - 1, "cna", 0.0))
    # the best point of earlier searches on the default model: the direction scorer over the template's
    # post-instruction tokens (docs/results.md)
    points.append(Point("direction", "both", "post-mean", size, 0, n_layers - 1, "cna", 0.0))
    # and the region where those searches found their best points: that scorer's positive neurons in the
    # middle of the network, at a fifth of the default cap, pushed past their benign mean
    small = max(config.min_fraction, min(config.cap, 0.0002))
    middle = (round(0.35 * (n_layers - 1)), round(0.75 * (n_layers - 1)))
    points.append(Point("direction", "positive", "post-mean", small, *middle, "mean", -1.0))
    lo, hi = config.multipliers
    s_lo, s_hi = config.slopes
    return [
        p
        for p in points
        if p.scorer in config.scorers
        and p.sign in config.signs
        and p.positions in config.positions
        and p.intervention in config.interventions
        and p.weights in config.weights
        and lo <= p.multiplier <= hi
        and s_lo <= p.slope <= s_hi
    ]


def feasible(scores: Scores, base: Scores, config: TuneConfig) -> list[str]:
    """The constraints a point breaks (empty when it meets them all)."""
    broken = []
    if scores.degenerate > config.max_degenerate:
        broken.append(f"degenerate {100 * scores.degenerate:.0f}% > {100 * config.max_degenerate:.0f}%")
    if scores.kl > config.max_kl:
        broken.append(f"benign KL {scores.kl:.3f} > {config.max_kl}")
    if scores.kl_first > config.max_first_kl:  # NaN (not recorded) compares false: not held against it
        broken.append(f"first-token KL {scores.kl_first:.3f} > {config.max_first_kl}")
    if scores.benign_refusal > base.benign_refusal + config.max_benign_increase + 1e-9:
        broken.append(f"benign refusal up {100 * (scores.benign_refusal - base.benign_refusal):.0f} points")
    return broken


def pareto(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The non-dominated completed trials that meet the degenerate-reply constraint."""
    return [t for t in study.best_trials if t.user_attrs.get("constraint", [1.0])[0] <= 0]


def choose(
    study: optuna.Study, base: Scores, config: TuneConfig
) -> tuple[optuna.trial.FrozenTrial, list[str]]:
    """The most compliant completed trial inside every constraint (fewer neurons break ties); when none
    is, among those inside the degenerate constraint, the one that breaks the fewest constraints (then the
    most compliant), with the constraints it breaks."""
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not done:
        raise RuntimeError("no finished trial to choose from")
    ok = ranked_feasible(study, base, config)
    if ok:
        return ok[0], []
    fallback = [t for t in done if t.user_attrs.get("constraint", [1.0])[0] <= 0] or done
    broken = {t.number: feasible(Scores(**t.user_attrs["scores"]), base, config) for t in fallback}
    best = min(fallback, key=lambda t: (len(broken[t.number]), *_rank(t)))
    return best, broken[best.number]


def _rank(t: optuna.trial.FrozenTrial) -> tuple[float, float]:
    """Most compliant first, then fewer neurons."""
    s = t.user_attrs["scores"]
    return (-s["compliance"], s["neurons"])


def ranked_feasible(study: optuna.Study, base: Scores, config: TuneConfig) -> list[optuna.trial.FrozenTrial]:
    """The completed trials inside every constraint, most compliant first (fewer neurons break ties)."""
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    ok = [t for t in done if not feasible(Scores(**t.user_attrs["scores"]), base, config)]
    return sorted(ok, key=_rank)


def point_of(trial: optuna.trial.FrozenTrial) -> Point:
    """The point a trial ran (as it recorded it; trials stored before that: from its parameters, a missing
    slope read as 0)."""
    stored = trial.user_attrs.get("point")
    if isinstance(stored, dict):
        return Point(**{k: v for k, v in stored.items() if k in Point.__dataclass_fields__})
    return Point(**{name: trial.params[name] for name in Point.__dataclass_fields__ if name in trial.params})
