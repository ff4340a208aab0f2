"""The evaluation engine: one generation pass per condition, every metric read from those replies, each
finished condition saved as it finishes so an interrupted run resumes where it stopped.

The baseline (no intervention) is generated once; its benign replies are the reference for KL.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

from neurogate.discovery.circuit import Circuit
from neurogate.discovery.directions import ResidualDirections
from neurogate.errors import ConfigError
from neurogate.evaluation.conditions import BASELINE, Condition, baseline
from neurogate.evaluation.judges import Judge, get_judge
from neurogate.evaluation.metrics import kl_divergence, mean_quality, perplexity
from neurogate.evaluation.results import ConditionResult, Reply, ResultStore
from neurogate.evaluation.settings import EvalSettings
from neurogate.evaluation.statistics import rate_of
from neurogate.models.generation import Generation, generate
from neurogate.models.loading import LoadedModel
from neurogate.steering.base import Intervention
from neurogate.steering.registry import get_kind, make

Progress = Callable[[Condition, ConditionResult, bool], None]


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


class Evaluator:
    """Runs conditions on one model and prompt sets, storing each result as it finishes.

    ``harmful``: the prompts whose refusal is measured; ``benign``: prompts for over-refusal and KL;
    ``circuit`` for neuron kinds, ``directions`` for residual kinds; ``judge``: defaults to the settings'
    judge; ``store``: where finished conditions go (a rerun reads them back instead of generating again).
    """

    def __init__(
        self,
        lm: LoadedModel,
        harmful: Sequence[str],
        benign: Sequence[str],
        *,
        circuit: Circuit | None = None,
        directions: ResidualDirections | None = None,
        judge: Judge | None = None,
        settings: EvalSettings | None = None,
        store: ResultStore | None = None,
    ) -> None:
        if not harmful:
            raise ConfigError("the evaluation needs at least one harmful prompt")
        self.lm = lm
        self.harmful = list(harmful)
        self.benign = list(benign)
        self.circuit = circuit
        self.directions = directions
        self.settings = settings or EvalSettings()
        self.judge = judge or get_judge(self.settings.judge, **self.settings.judge_options())
        self.store = store
        self._baseline: ConditionResult | None = None

    def intervention(self, cond: Condition) -> Intervention | None:
        """The intervention for a condition (``None`` for the baseline), built by the steering registry."""
        if cond.is_baseline:
            return None
        if get_kind(cond.kind).source == "circuit":
            if self.circuit is None:
                raise ConfigError(f"method {cond.kind!r} needs a circuit: pass --circuit or run discovery")
            source: Any = self.circuit if cond.size is None else self.circuit.top(cond.size)
            options: dict[str, Any] = {"seed": cond.seed} if "seed" in get_kind(cond.kind).options else {}
            return make(cond.kind, self.lm, source, cond.number, **options)
        if self.directions is None:
            raise ConfigError(
                f"method {cond.kind!r} needs residual directions; they are computed from the discovery "
                "prompt sets (pass --positive/--negative) or left out by dropping the method"
            )
        return make(cond.kind, self.lm, self.directions, cond.number)

    def _generate(
        self, prompts: Sequence[str], steering: Intervention | None
    ) -> tuple[list[Generation], float]:
        s = self.settings
        start = time.perf_counter()
        out = generate(
            self.lm,
            prompts,
            intervention=steering,
            max_new_tokens=s.max_new_tokens,
            batch_size=s.batch_size,
            system_prompt=s.system_prompt,
            chat=s.chat,
        )
        return out, time.perf_counter() - start

    def _replies(self, prompts: Sequence[str], gens: Sequence[Generation]) -> list[Reply]:
        scores = self.judge.score(prompts, [g.text for g in gens])
        return [
            Reply(p, g.text, [int(t) for t in g.token_ids], bool(g.finished), float(sc))
            for p, g, sc in zip(prompts, gens, scores, strict=True)
        ]

    def baseline(self) -> ConditionResult:
        """The unsteered condition (computed once; every KL is measured against its benign replies)."""
        if self._baseline is None:
            self._baseline = self.run(baseline())
        return self._baseline

    def run(self, cond: Condition) -> ConditionResult:
        """Evaluate one condition, or read it back when the store already has it."""
        result = self.store.get(cond.key) if self.store is not None else None
        if result is None:
            result = self._compute(cond)
            if self.store is not None:
                self.store.put(result)
        if cond.is_baseline:
            self._baseline = result
        return result

    def _kl(self, steering: Intervention) -> tuple[float | None, float | None]:
        s = self.settings
        base = self.baseline()
        if not base.benign:
            return None, None
        kl = kl_divergence(
            self.lm,
            [r.prompt for r in base.benign],
            [r.token_ids for r in base.benign],
            steering,
            n_tokens=s.kl_tokens,
            system_prompt=s.system_prompt,
            chat=s.chat,
            batch_size=s.metric_batch_size,
        )
        return _finite(kl.first_token), _finite(kl.mean)

    def _compute(self, cond: Condition) -> ConditionResult:
        s = self.settings
        steering = self.intervention(cond)
        need_benign = (cond.benign or cond.is_baseline) and bool(self.benign)
        started = time.perf_counter()
        gens, gen_s = self._generate(self.harmful, steering)
        harmful = self._replies(self.harmful, gens)
        benign: list[Reply] = []
        if need_benign:
            bgens, bsec = self._generate(self.benign, steering)
            benign = self._replies(self.benign, bgens)
            gen_s += bsec
        tokens = sum(len(r.token_ids) for r in (*harmful, *benign))
        ppl = _finite(
            perplexity(
                self.lm,
                self.harmful,
                [r.token_ids for r in harmful],
                system_prompt=s.system_prompt,
                chat=s.chat,
                batch_size=s.metric_batch_size,
            )
        )
        kl_first, kl_mean = (
            (0.0, 0.0) if steering is None else self._kl(steering) if need_benign else (None, None)
        )
        scale = cond.scale
        return ConditionResult(
            key=cond.key,
            label=cond.label,
            kind=BASELINE if cond.is_baseline else cond.kind,
            scale=None if cond.is_baseline or scale is None else scale.name,
            value=None if cond.is_baseline else cond.number,
            group=cond.group,
            n_neurons=self._n_neurons(cond),
            refusal=rate_of([r.refusal for r in harmful]),
            quality=mean_quality([r.text for r in harmful]),
            perplexity=ppl,
            kl_first=kl_first,
            kl_mean=kl_mean,
            benign_refusal=rate_of([r.refusal for r in benign]) if benign else None,
            benign_quality=mean_quality([r.text for r in benign]) if benign else None,
            tokens_per_s=tokens / gen_s if gen_s > 0 else 0.0,
            seconds=time.perf_counter() - started,
            intervention=steering.describe() if steering is not None else {"kind": "none"},
            harmful=harmful,
            benign=benign,
        )

    def _n_neurons(self, cond: Condition) -> int | None:
        if cond.is_baseline or get_kind(cond.kind).source != "circuit" or self.circuit is None:
            return None
        return cond.size or len(self.circuit)

    def run_all(
        self, conditions: Sequence[Condition], progress: Progress | None = None
    ) -> list[ConditionResult]:
        """Run conditions in order; ``progress(cond, result, cached)`` is called after each."""
        results = []
        for cond in conditions:
            cached = self.store is not None and self.store.get(cond.key) is not None
            result = self.run(cond)
            results.append(result)
            if progress is not None:
                progress(cond, result, cached)
        return results


def format_number(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


TABLE_COLUMNS = (
    "condition",
    "neurons",
    "refusal % [95% CI]",
    "quality",
    "perplexity",
    "KL first",
    "KL mean",
    "benign refusal %",
    "tokens/s",
)


def table_rows(results: Sequence[ConditionResult]) -> list[list[str]]:
    """The results table as strings (one row per condition), shared by the CLI and the report."""
    return [
        [
            r.label,
            "-" if r.n_neurons is None else str(r.n_neurons),
            str(r.refusal),
            format_number(r.quality),
            format_number(r.perplexity, 2),
            format_number(r.kl_first, 4),
            format_number(r.kl_mean, 4),
            "-" if r.benign_refusal is None else str(r.benign_refusal),
            f"{r.tokens_per_s:.1f}",
        ]
        for r in results
    ]
