"""The whole study as stages: prompt sets -> model -> ranking -> directions -> conditions -> layers ->
capability -> results and report. Each stage's output is stored under ``out/<run id>/`` as it finishes
(:func:`load_or_compute`), so a rerun of the same settings reads it back and only computes what is missing.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import torch
import transformers

from neurogate import prompts
from neurogate.atomic import write_json_atomic
from neurogate.discovery.circuit import Circuit
from neurogate.discovery.directions import ResidualDirections, compute_directions
from neurogate.discovery.discover import discover
from neurogate.errors import ConfigError
from neurogate.evaluation.capability import capability
from neurogate.evaluation.conditions import Condition, plan_sweep
from neurogate.evaluation.engine import Evaluator
from neurogate.evaluation.experiments import (
    LayerProfile,
    held_out_record,
    random_conditions,
    sparsity_conditions,
    sparsity_sizes,
    within_ci,
)
from neurogate.evaluation.results import ConditionResult, ResultStore
from neurogate.models.loading import LoadedModel, load_model
from neurogate.prompts.sources import PromptSets
from neurogate.steering.registry import get_kind
from neurogate.study.config import StudyConfig
from neurogate.study.report import write_reports
from neurogate.study.results import CircuitSummary, RandomCheck, SparsityPoint, StudyResults
from neurogate.version import __version__

Event = Callable[[str, dict[str, Any]], None]
T = TypeVar("T")


def load_or_compute(
    path: Path, compute: Callable[[], T], load: Callable[[Path], T], save: Callable[[T, Path], Any]
) -> T:
    """``load(path)`` when the stage's file exists, else ``compute()`` and ``save`` it there (atomically,
    by the artifact's own writer) before returning it."""
    if path.is_file():
        return load(path)
    value = compute()
    save(value, path)
    return value


def versions() -> dict[str, str]:
    """Versions of everything that can change the numbers."""
    return {
        "neurogate": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


class Study:
    """One study run; each stage is a method, called in order by :meth:`run`."""

    def __init__(self, config: StudyConfig, out: str | Path, lm: LoadedModel | None, on_event: Event | None):
        self.config = config
        self.on_event = on_event
        self.started = time.perf_counter()
        self.sets = self._prompt_sets()
        self.run_id = config.run_id(self.sets.digests())
        self.dir = Path(out) / self.run_id
        if lm is not None and lm.spec != config.model:
            raise ConfigError(f"the model given ({lm.spec}) is not the configured one ({config.model})")
        self._lm = lm

    def emit(self, kind: str, **info: Any) -> None:
        if self.on_event is not None:
            self.on_event(kind, info)

    def _prompt_sets(self) -> PromptSets:
        sets = self.config.prompts.load()
        self.held_out = held_out_record([sets.positive, sets.negative], sets.eval)
        return sets

    @property
    def lm(self) -> LoadedModel:
        if self._lm is None:
            self.emit("stage", name=f"loading {self.config.model}")
            self._lm = load_model(self.config.model, dtype=self.config.dtype, device=self.config.device)
        return self._lm

    def sizes(self) -> tuple[int, list[int]]:
        """The main circuit's size and the sparsity curve's sizes."""
        n = self.lm.adapter.n_neurons
        k_main = self.config.discovery.k(n)
        return k_main, sparsity_sizes(n, self.config.sparsity) if self.config.sparsity else []

    def ranking(self) -> Circuit:
        """One ranking, discovered at the largest size; the main circuit and sparsity sizes are prefixes."""
        k_main, sizes = self.sizes()

        def compute() -> Circuit:
            self.emit("stage", name="discovery")
            cfg = replace(self.config.discovery, fraction=None, top_k=max([k_main, *sizes]))
            return discover(self.lm, self.sets.positive, self.sets.negative, cfg, progress=False)

        ranking = load_or_compute(self.dir / "circuit-ranking.json", compute, Circuit.load, Circuit.save)
        ranking.check_model(self.lm)
        return ranking

    def directions(self) -> ResidualDirections | None:
        if not any(get_kind(m).source == "directions" for m in self.config.methods):
            return None

        def compute() -> ResidualDirections:
            self.emit("stage", name="residual directions")
            opts = self.config.discovery.capture(progress=False)
            return compute_directions(
                self.lm, self.sets.positive.prompts, self.sets.negative.prompts, options=opts
            )

        return load_or_compute(
            self.dir / "directions.safetensors", compute, ResidualDirections.load, ResidualDirections.save
        )

    def plan(self) -> tuple[list[Condition], list[Condition], list[Condition]]:
        """(sweep, sparsity, random-control) conditions; neuron kinds use the main circuit's size."""
        c = self.config
        k_main, sizes = self.sizes()
        sweep = [
            replace(cond, size=k_main)
            if cond.scale is not None and get_kind(cond.kind).source == "circuit"
            else cond
            for cond in plan_sweep(c.methods, {"multiplier": c.multipliers, "strength": c.strengths})
        ]
        sparse = sparsity_conditions([s for s in sizes if s != k_main])
        randoms = [replace(cond, size=k_main) for cond in random_conditions(c.random_seeds)]
        return sweep, sparse, randoms

    def conditions(self, evaluator: Evaluator, plan: list[Condition]) -> dict[str, ConditionResult]:
        unique = list({cond.key: cond for cond in plan}.values())
        self.emit("plan", total=len(unique))
        self.emit("stage", name="conditions")

        def progress(cond: Condition, result: ConditionResult, cached: bool) -> None:
            self.emit("condition", key=cond.key, label=cond.label, cached=cached, result=result)

        return {r.key: r for r in evaluator.run_all(unique, progress)}

    def layers(self, circuit: Circuit) -> list[LayerProfile]:
        k_main, _ = self.sizes()

        def compute() -> list[LayerProfile]:
            profiles = [LayerProfile.of("refusal", circuit)]
            contrasts = prompts.battery()[: self.config.layer_contrasts]
            cfg = replace(self.config.discovery, fraction=None, top_k=k_main, universal_filter=False)
            for name, cpos, cneg in contrasts:
                self.emit("stage", name=f"layer localisation: {name}")
                profiles.append(LayerProfile.of(name, discover(self.lm, cpos, cneg, cfg, progress=False)))
            return profiles

        def load(path: Path) -> list[LayerProfile]:
            return [LayerProfile.from_dict(d) for d in json.loads(path.read_text())]

        def save(profiles: list[LayerProfile], path: Path) -> None:
            write_json_atomic(path, [p.to_dict() for p in profiles])

        return load_or_compute(self.dir / "layers.json", compute, load, save)

    def capability(self, evaluator: Evaluator) -> dict[str, Any] | None:
        """lm-eval scores, unsteered and with the main circuit ablated (a message instead without lm-eval)."""
        c = self.config
        if not c.capability:
            return None
        self.emit("stage", name="capability (lm-eval)")
        k_main, _ = self.sizes()
        out: dict[str, Any] = {"tasks": list(c.capability), "limit": c.capability_limit}
        for label, cond in (("baseline", None), ("cna", Condition("cna", 0.0, size=k_main))):
            steering = evaluator.intervention(cond) if cond is not None else None
            result = capability(self.lm, steering, tasks=c.capability, limit=c.capability_limit)
            out[label], out["skipped"] = result.scores, result.skipped
            if result.skipped:
                break
        return out

    def run(self) -> StudyResults:
        self.dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.dir / "config.json", self.config.to_dict())
        ranking = self.ranking()
        k_main, _ = self.sizes()
        circuit = ranking.top(k_main)
        circuit.save(self.dir / "circuit.json")
        evaluator = Evaluator(
            self.lm,
            self.sets.eval.prompts,
            self.sets.benign.prompts,
            circuit=ranking,
            directions=self.directions(),
            settings=self.config.evaluation,
            store=ResultStore(self.dir / "conditions"),
        )
        sweep, sparse, randoms = self.plan()
        results = self.conditions(evaluator, [*sweep, *sparse, *randoms])
        assembled = self.assemble(circuit, evaluator, results, (sweep, sparse, randoms))
        self.emit("stage", name="report")
        write_json_atomic(self.dir / "results.json", assembled.to_dict())
        write_reports(assembled, self.dir)
        return assembled

    def assemble(
        self,
        circuit: Circuit,
        evaluator: Evaluator,
        results: dict[str, ConditionResult],
        plan: tuple[list[Condition], list[Condition], list[Condition]],
    ) -> StudyResults:
        sweep, sparse, randoms = plan
        lm, base = self.lm, results["baseline"]
        directions = evaluator.directions
        main = [c for c in sweep if c.kind == "cna" and c.value == 0.0]
        return StudyResults(
            run_id=self.run_id,
            created=datetime.now(UTC).isoformat(timespec="seconds"),
            config=self.config.to_dict(),
            versions=versions(),
            model={
                "spec": lm.spec,
                "shape": lm.shape,
                "n_neurons": lm.adapter.n_neurons,
                "dtype": str(lm.dtype),
            },
            prompts=self.sets.describe(),
            held_out=self.held_out,
            circuit=CircuitSummary(
                len(circuit),
                len(circuit) / lm.adapter.n_neurons,
                circuit.per_layer(),
                circuit.late_share(),
                circuit.method,
                circuit.summary(),
            ),
            directions=None
            if directions is None
            else {
                "best_layer": directions.best_layer,
                "separation": directions.separation,
            },
            sweep=[c.key for c in sweep],
            sparsity=sorted(
                [SparsityPoint(int(c.size or 0), c.key) for c in [*sparse, *main]], key=lambda p: p.size
            )
            if self.config.sparsity
            else [],
            random_control=[RandomCheck(c.key, c.seed, within_ci(base, results[c.key])) for c in randoms],
            layers=self.layers(circuit),
            capability=self.capability(evaluator),
            conditions=results,
            seconds=time.perf_counter() - self.started,
        )


def run_study(
    config: StudyConfig,
    out: str | Path = "runs",
    *,
    lm: LoadedModel | None = None,
    on_event: Event | None = None,
) -> StudyResults:
    """Run (or resume) the study described by ``config`` under ``out/<run id>/``.

    ``lm``: an already-loaded model to use instead of loading ``config.model`` (its spec must match).
    ``on_event(kind, info)``: progress callback; kinds are ``stage`` (name), ``plan`` (total conditions),
    and ``condition`` (key, label, cached, result).
    """
    return Study(config, out, lm, on_event).run()


def study_dir(config: StudyConfig, out: str | Path = "runs") -> Path:
    """Where ``config``'s run lives (its prompt sets are read to compute the run id)."""
    return Study(config, out, None, None).dir
