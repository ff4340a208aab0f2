"""Evaluating interventions: one generation pass per condition, every metric read from those replies,
each finished condition saved atomically so an interrupted sweep resumes where it stopped.

A *condition* is one intervention (method, strength, circuit size, seed). Strength 0 of any method is the
shared *baseline* (no intervention), generated once; its benign replies are the reference for KL.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

from neurogate.atomic import write_json_atomic
from neurogate.circuit import Circuit
from neurogate.errors import ConfigError
from neurogate.judges import Judge, KeywordJudge
from neurogate.loading import LoadedModel
from neurogate.metrics import Rate, kl_divergence, mean_quality, perplexity, rate_of

if TYPE_CHECKING:
    from neurogate.directions import ResidualDirections
    from neurogate.interventions import Kind
    from neurogate.interventions.base import Intervention

logger = logging.getLogger(__name__)

METHODS = ("cna", "caa", "ablation", "random")
BASELINE = "baseline"


@dataclass(frozen=True)
class EvalSettings:
    """How replies are generated and measured (shared by every condition of a run)."""

    max_new_tokens: int = 64
    batch_size: int | Literal["auto"] = "auto"
    system_prompt: str | None = None
    chat: bool = True
    kl_tokens: int = 16
    metric_batch_size: int = 8

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if self.kl_tokens < 1 or self.metric_batch_size < 1:
            raise ConfigError("kl_tokens and metric_batch_size must be at least 1")


@dataclass(frozen=True)
class Condition:
    """One intervention to evaluate. ``size``: keep only the circuit's top ``size`` neurons (sparsity);
    ``benign``: also generate on the benign prompts (over-refusal and KL); ``group``: which experiment."""

    method: str
    strength: float = 1.0
    size: int | None = None
    seed: int = 0
    benign: bool = True
    group: str = "sweep"

    def __post_init__(self) -> None:
        if self.method not in (*METHODS, BASELINE):
            raise ConfigError(f"unknown method {self.method!r}; choose from {', '.join(METHODS)}")
        if not math.isfinite(self.strength):
            raise ConfigError(f"strength must be a finite number, got {self.strength}")
        if self.size is not None and self.size < 1:
            raise ConfigError(f"circuit size must be at least 1, got {self.size}")

    @property
    def is_baseline(self) -> bool:
        return self.method == BASELINE or self.strength == 0

    @property
    def key(self) -> str:
        """A file-name-safe identifier; equal conditions share it (and so share stored results)."""
        if self.is_baseline:
            return BASELINE
        key = f"{self.method}-s{self.strength:g}"
        if self.size is not None:
            key += f"-n{self.size}"
        if self.method == "random":
            key += f"-seed{self.seed}"
        return key


def baseline_condition() -> Condition:
    return Condition(BASELINE, 0.0)


def plan_sweep(methods: Iterable[str], strengths: Iterable[float]) -> list[Condition]:
    """The baseline once, then every method at every non-zero strength."""
    methods = list(methods)
    for m in methods:
        if m not in METHODS:
            raise ConfigError(f"unknown method {m!r}; choose from {', '.join(METHODS)}")
    plan = [baseline_condition()]
    plan += [Condition(m, float(s)) for m in methods for s in strengths if float(s) != 0]
    return plan


@dataclass
class Reply:
    """One generated reply and its judge score (1.0 = refusal)."""

    prompt: str
    text: str
    token_ids: list[int]
    finished: bool
    refusal: float


@dataclass
class ConditionResult:
    """Everything measured for one condition, with every reply it was computed from."""

    key: str
    method: str
    strength: float
    group: str
    n_neurons: int | None
    refusal: Rate
    quality: float
    perplexity: float | None
    kl_first: float | None
    kl_mean: float | None
    benign_refusal: Rate | None
    benign_quality: float | None
    tokens_per_s: float
    seconds: float
    intervention: dict[str, Any]
    harmful: list[Reply] = field(default_factory=list)
    benign: list[Reply] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["refusal"] = self.refusal.to_dict()
        data["benign_refusal"] = self.benign_refusal.to_dict() if self.benign_refusal else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ConditionResult:
        data = dict(data)
        data["refusal"] = Rate.from_dict(data["refusal"])
        benign_rate = data.get("benign_refusal")
        data["benign_refusal"] = Rate.from_dict(benign_rate) if benign_rate else None
        data["harmful"] = [Reply(**r) for r in data.get("harmful", [])]
        data["benign"] = [Reply(**r) for r in data.get("benign", [])]
        return cls(**data)


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


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
            return ConditionResult.from_dict(json.loads(path.read_text()))
        except (ValueError, KeyError, TypeError) as exc:
            logger.warning("ignoring unreadable stored result %s (%s); it will be recomputed", path, exc)
            return None

    def put(self, result: ConditionResult) -> Path:
        return write_json_atomic(self.path(result.key), result.to_dict())

    def keys(self) -> list[str]:
        return sorted(p.stem for p in self.root.glob("*.json")) if self.root.is_dir() else []


def circuit_prefix(circuit: Circuit, size: int) -> Circuit:
    """The circuit's ``size`` highest-scoring neurons (a smaller circuit from the same ranking)."""
    if size > len(circuit):
        raise ConfigError(f"asked for the top {size} neurons of a circuit of {len(circuit)}")
    ranked = sorted(circuit.neurons, key=lambda n: -n.score)[:size]
    return replace(circuit, neurons=ranked, method={**circuit.method, "prefix_of": len(circuit)})


Progress = Callable[[Condition, ConditionResult, bool], None]


class Evaluator:
    """Runs conditions on one model and prompt sets, storing each result as it finishes.

    ``harmful``: the prompts whose refusal is measured; ``benign``: prompts for over-refusal and KL;
    ``circuit`` for cna/random, ``directions`` for caa/ablation; ``store``: where finished conditions go
    (a rerun reads them back instead of generating again).
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
        self.judge = judge or KeywordJudge()
        self.settings = settings or EvalSettings()
        self.store = store
        self._baseline: ConditionResult | None = None

    # -- interventions ------------------------------------------------------------------------------------

    def intervention(self, cond: Condition) -> Intervention | None:
        """The intervention for a condition (``None`` for the baseline)."""
        if cond.is_baseline:
            return None
        from neurogate.interventions import make

        if cond.method in ("cna", "random"):
            if self.circuit is None:
                raise ConfigError(f"method {cond.method!r} needs a circuit: pass --circuit or run discovery")
            source: Any = self.circuit if cond.size is None else circuit_prefix(self.circuit, cond.size)
            opts: dict[str, Any] = {"seed": cond.seed} if cond.method == "random" else {}
            return make(cast("Kind", cond.method), self.lm, source, cond.strength, **opts)
        if self.directions is None:
            raise ConfigError(
                f"method {cond.method!r} needs residual directions; they are computed from the discovery "
                "prompt sets (pass --positive/--negative) or left out by dropping the method"
            )
        return make(cast("Kind", cond.method), self.lm, self.directions, cond.strength)

    def _n_neurons(self, cond: Condition) -> int | None:
        if cond.method not in ("cna", "random") or cond.is_baseline or self.circuit is None:
            return None
        return cond.size or len(self.circuit)

    # -- generation and metrics ---------------------------------------------------------------------------

    def _generate(self, prompts: Sequence[str], steering: Intervention | None) -> tuple[list[Any], float]:
        from neurogate.generation import generate

        s = self.settings
        start = time.perf_counter()
        out = generate(
            self.lm,
            prompts,
            intervention=steering,
            max_new_tokens=s.max_new_tokens,
            batch_size=s.batch_size,
            greedy=True,
            system_prompt=s.system_prompt,
            chat=s.chat,
            progress=False,
        )
        return out, time.perf_counter() - start

    def _replies(self, prompts: Sequence[str], gens: Sequence[Any]) -> list[Reply]:
        scores = self.judge.score(prompts, [g.text for g in gens])
        return [
            Reply(p, g.text, [int(t) for t in g.token_ids], bool(g.finished), float(sc))
            for p, g, sc in zip(prompts, gens, scores, strict=True)
        ]

    def baseline(self) -> ConditionResult:
        """The unsteered condition (computed once; every KL is measured against its benign replies)."""
        if self._baseline is None:
            self._baseline = self.run(baseline_condition())
        return self._baseline

    def run(self, cond: Condition) -> ConditionResult:
        """Evaluate one condition, or read it back when the store already has it."""
        if self.store is not None:
            stored = self.store.get(cond.key)
            if stored is not None:
                if cond.is_baseline:
                    self._baseline = stored
                return stored
        result = self._compute(cond)
        if self.store is not None:
            self.store.put(result)
        if cond.is_baseline:
            self._baseline = result
        return result

    def _compute(self, cond: Condition) -> ConditionResult:
        s = self.settings
        steering = self.intervention(cond)
        need_benign = (cond.benign or cond.is_baseline) and bool(self.benign)
        base = None if cond.is_baseline or not need_benign else self.baseline()
        started = time.perf_counter()
        gens, gen_s = self._generate(self.harmful, steering)
        harmful = self._replies(self.harmful, gens)
        tokens = sum(len(r.token_ids) for r in harmful)
        benign: list[Reply] = []
        if need_benign:
            bgens, bsec = self._generate(self.benign, steering)
            benign = self._replies(self.benign, bgens)
            tokens += sum(len(r.token_ids) for r in benign)
            gen_s += bsec
        ppl = kl_first = kl_mean = None
        if steering is not None:
            ppl = _finite(
                perplexity(
                    self.lm, self.harmful, [r.token_ids for r in harmful], system_prompt=s.system_prompt,
                    chat=s.chat, batch_size=s.metric_batch_size,
                )
            )
            if base is not None and base.benign:
                kl = kl_divergence(
                    self.lm, [r.prompt for r in base.benign], [r.token_ids for r in base.benign], steering,
                    n_tokens=s.kl_tokens, system_prompt=s.system_prompt, chat=s.chat,
                    batch_size=s.metric_batch_size,
                )
                kl_first, kl_mean = _finite(kl.first_token), _finite(kl.mean)
        elif cond.is_baseline:
            ppl = _finite(
                perplexity(
                    self.lm, self.harmful, [r.token_ids for r in harmful], system_prompt=s.system_prompt,
                    chat=s.chat, batch_size=s.metric_batch_size,
                )
            )
            kl_first = kl_mean = 0.0
        return ConditionResult(
            key=cond.key,
            method=BASELINE if cond.is_baseline else cond.method,
            strength=0.0 if cond.is_baseline else cond.strength,
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

    def run_all(
        self, conditions: Sequence[Condition], progress: Progress | None = None
    ) -> list[ConditionResult]:
        """Run conditions in order (the baseline first when any needs it); ``progress(cond, result,
        cached)`` is called after each."""
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


TABLE_COLUMNS = ("condition", "neurons", "refusal % [95% CI]", "quality", "perplexity", "KL first", "KL mean",
                 "benign refusal %", "tokens/s")


def table_rows(results: Iterable[ConditionResult]) -> list[list[str]]:
    """The sweep table as strings (one row per condition), shared by the CLI and the report."""
    rows = []
    for r in results:
        rows.append([
            r.key,
            "-" if r.n_neurons is None else str(r.n_neurons),
            str(r.refusal),
            format_number(r.quality),
            format_number(r.perplexity, 2),
            format_number(r.kl_first, 4),
            format_number(r.kl_mean, 4),
            "-" if r.benign_refusal is None else str(r.benign_refusal),
            f"{r.tokens_per_s:.1f}",
        ])
    return rows
