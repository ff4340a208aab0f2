"""The whole study as stages: prompt sets -> model -> statistics -> ranking -> controls -> directions ->
conditions -> matched CAA -> capability -> comparisons, results and report. Each stage's output is stored
under ``out/<run id>/`` as it finishes (:func:`load_or_compute`), so a rerun of the same settings reads it
back and only computes what is missing.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import torch
import transformers

from neurogate import prompts, settings
from neurogate.atomic import write_json_atomic
from neurogate.discovery.circuit import Circuit
from neurogate.discovery.discover import discover, gather_evidence
from neurogate.discovery.scoring import Evidence
from neurogate.errors import ConfigError
from neurogate.evaluation.conditions import Condition, plan_sweep
from neurogate.evaluation.engine import Evaluator
from neurogate.evaluation.results import ConditionResult, ResultStore
from neurogate.models import zoo
from neurogate.models.inputs import format_prompt
from neurogate.models.loading import LoadedModel, load_model
from neurogate.steering.controls import magnitude_matched_circuit
from neurogate.steering.registry import get_kind
from neurogate.study import analysis
from neurogate.study.config import StudyConfig
from neurogate.study.experiments import LayerProfile, sparsity_conditions, sparsity_sizes
from neurogate.study.front_plan import OFF, PRESETS
from neurogate.study.fronts import run_fronts
from neurogate.study.report import write_reports
from neurogate.study.results import PAPER, CircuitSummary, GivenCircuit, SparsityPoint, StudyResults
from neurogate.study.stages import (
    Baselines,
    Given,
    MatchedCondition,
    StageFiles,
    baselines,
    caa_match,
    capability,
    corpus,
    given_circuits,
)
from neurogate.version import __version__

Event = Callable[[str, dict[str, Any]], None]
T = TypeVar("T")


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
        self.sets = config.prompts.load()
        given = {f"circuit:{path}": settings.file_digest(path) for path in config.circuits}
        self.run_id = config.run_id({**self.sets.digests(), **given})
        self.dir = Path(out) / self.run_id
        self.files = StageFiles(self.dir)
        if lm is not None and lm.spec != config.model:
            raise ConfigError(f"the model given ({lm.spec}) is not the configured one ({config.model})")
        self._lm = lm

    def emit(self, kind: str, **info: Any) -> None:
        if self.on_event is not None:
            self.on_event(kind, info)

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

    def evidence(self) -> Evidence:
        """The discovery statistics of both sets (the forward passes), stored for reuse."""

        def compute() -> Evidence:
            self.emit("stage", name="discovery statistics")
            return gather_evidence(
                self.lm, self.sets.positive, self.sets.negative, self.config.discovery, False
            )

        return self.files.load_or_compute("stats.safetensors", compute, Evidence.load, Evidence.save)

    def ranking(self, evidence: Evidence) -> Circuit:
        """One ranking at the largest size; the main circuit and the sparsity sizes are its prefixes."""
        k_main, sizes = self.sizes()

        def compute() -> Circuit:
            self.emit("stage", name="discovery")
            cfg = replace(
                self.config.discovery, fraction=None, top_k=max([k_main, *sizes, *self.front_sizes()])
            )
            return discover(
                self.lm, self.sets.positive, self.sets.negative, cfg, progress=False, evidence=evidence
            )

        ranking = self.files.load_or_compute("circuit-ranking.json", compute, Circuit.load, Circuit.save)
        ranking.check_model(self.lm)
        return ranking

    def front_sizes(self) -> list[int]:
        """The CNA front's circuit sizes (prefixes of the one ranking; none with fronts off)."""
        if self.config.fronts == OFF:
            return []
        n = self.lm.adapter.n_neurons
        return [max(1, round(f * n)) for f in PRESETS[self.config.fronts].cna_sizes]

    def control_circuits(self, circuit: Circuit, evidence: Evidence) -> dict[str, Circuit]:
        """Equal-size circuits of unrelated battery contrasts, and magnitude-matched random circuits."""
        k_main, _ = self.sizes()
        contrasts = {name: (pos, neg) for name, pos, neg in prompts.battery()}
        unknown = [c for c in self.config.controls if c not in contrasts]
        if unknown:
            raise ConfigError(
                f"unknown control contrast(s) {unknown}; the battery has: {', '.join(contrasts)}"
            )
        out: dict[str, Circuit] = {}
        cfg = replace(self.config.discovery, fraction=None, top_k=k_main, universal_filter=False)
        for name in self.config.controls:

            def compute(name: str = name) -> Circuit:
                self.emit("stage", name=f"control circuit: {name}")
                return discover(self.lm, *contrasts[name], cfg, progress=False)

            out[name] = self.files.load_or_compute(
                f"control-{name}.json", compute, Circuit.load, Circuit.save
            )
        magnitude = (evidence.positive["mlp.post"].abs_mean + evidence.negative["mlp.post"].abs_mean) / 2
        for seed in self.config.random_seeds:
            matched = magnitude_matched_circuit(circuit, magnitude.cpu(), seed=int(seed))
            out[f"matched-{seed}"] = matched
            matched.save(self.dir / f"control-matched-{seed}.json")
        return out

    def paper_circuit(self, evidence: Evidence) -> Given | None:
        """The paper's circuit at the main size when the study selects neurons another way, so the report
        always shows the paper's rule beside it (from the same statistics when they read the same tokens)."""
        cfg = self.config.discovery
        if cfg.is_paper_rule():
            return None
        k_main, _ = self.sizes()
        rule = replace(cfg.paper_rule(), fraction=None, top_k=k_main)
        same = evidence if rule.positions == cfg.positions else None

        def compute() -> Circuit:
            self.emit("stage", name="the paper's circuit")
            return discover(
                self.lm, self.sets.positive, self.sets.negative, rule, progress=False, evidence=same
            )

        circuit = self.files.load_or_compute(f"{PAPER}-circuit.json", compute, Circuit.load, Circuit.save)
        path = self.dir / f"{PAPER}-circuit.json"
        cond = Condition("cna", 0.0, group="given", circuit=PAPER)
        return Given(PAPER, str(path), settings.file_digest(path), circuit, cond)

    def plan(self, controls: dict[str, Circuit]) -> tuple[list[Condition], list[Condition], list[Condition]]:
        """(sweep, sparsity, control) conditions; neuron kinds use the main circuit's size."""
        c = self.config
        k_main, sizes = self.sizes()
        # with match_caa, CAA is evaluated at the matched strength (added later), not also at the sweep's
        kinds = [k for k in c.methods if not (k == "caa" and c.match_caa)]
        sweep = [
            replace(cond, size=k_main) if cond.scale and get_kind(cond.kind).source == "circuit" else cond
            for cond in plan_sweep(kinds, {"multiplier": c.multipliers, "strength": c.strengths})
        ]
        if not any(cond.kind == "cna" and cond.value == 0.0 for cond in sweep):
            sweep.append(Condition("cna", 0.0, size=k_main))
        sparse = sparsity_conditions([s for s in sizes if s != k_main])
        # controls are read for refusal, KL and quality: no benign generation (KL needs none)
        control = [Condition("cna", 0.0, benign=False, group="control", circuit=name) for name in controls]
        return sweep, sparse, control

    def conditions(self, evaluator: Evaluator, plan: list[Condition]) -> dict[str, ConditionResult]:
        unique = list({cond.key: cond for cond in plan}.values())
        self.emit("plan", total=len(unique) + (1 if self.config.match_caa else 0))
        self.emit("stage", name="conditions")

        def progress(cond: Condition, result: ConditionResult, cached: bool) -> None:
            # a sparsity point shares its label with the main circuit's condition: the size tells them apart
            size = f", {result.n_neurons} neurons" if cond.group == "sparsity" and result.n_neurons else ""
            self.emit("condition", key=cond.key, label=cond.label + size, cached=cached, result=result)

        return {r.key: r for r in evaluator.run_all(unique, progress)}

    def run(self) -> StudyResults:
        self.dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.dir / "config.json", self.config.to_dict())
        evidence = self.evidence()
        ranking = self.ranking(evidence)
        k_main, _ = self.sizes()
        circuit = ranking.top(k_main)
        circuit.save(self.dir / "circuit.json")
        controls = self.control_circuits(circuit, evidence)
        paper = self.paper_circuit(evidence)
        given = [*([paper] if paper else []), *given_circuits(self)]
        dirs = baselines(self, self.config)
        evaluator = Evaluator(
            self.lm,
            self.sets.eval.prompts,
            self.sets.benign.prompts,
            circuit=ranking,
            circuits={**controls, **{g.name: g.circuit for g in given}},
            directions=dirs.caa,
            directions_by_kind={"ablation": dirs.ablation} if dirs.ablation else None,
            settings=self.config.evaluation,
            store=ResultStore(self.dir / "conditions"),
            corpus=corpus(self.config.corpus),
        )
        sweep, sparse, control = self.plan(controls)
        results = self.conditions(evaluator, [*sweep, *sparse, *control, *(g.condition for g in given)])
        main_key = Condition("cna", 0.0, size=k_main).key
        match = caa_match(self, evaluator, results, main_key, sweep)
        fronts = run_fronts(self, evaluator, results, given, match)
        assembled = self.assemble(
            circuit, controls, dirs, evaluator, results, (sweep, sparse, control), match, given
        )
        assembled.fronts = fronts
        self.emit("stage", name="report")
        write_json_atomic(self.dir / "results.json", assembled.to_dict())
        write_reports(assembled, self.dir)
        return assembled

    def layers(self, circuit: Circuit, controls: dict[str, Circuit]) -> list[LayerProfile]:
        profiles = [LayerProfile.of("refusal", circuit)]
        return profiles + [
            LayerProfile.of(name, c) for name, c in controls.items() if name in self.config.controls
        ]

    def assemble(
        self,
        circuit: Circuit,
        controls: dict[str, Circuit],
        dirs: Baselines,
        evaluator: Evaluator,
        results: dict[str, ConditionResult],
        plan: tuple[list[Condition], list[Condition], list[Condition]],
        match: MatchedCondition | None,
        given: list[Given],
    ) -> StudyResults:
        sweep, sparse, control = plan
        lm, judges, margin = self.lm, evaluator.classifier.names, self.config.equivalence_margin
        main = next(c for c in sweep if c.kind == "cna" and c.value == 0.0)
        named = [(c.key, _control_type(c, self.config), str(c.circuit)) for c in control]
        sparsity = (
            [SparsityPoint(int(c.size or 0), c.key) for c in [*sparse, main]] if self.config.sparsity else []
        )
        ev = self.config.evaluation
        return StudyResults(
            run_id=self.run_id,
            created=datetime.now(UTC).isoformat(timespec="seconds"),
            config=self.config.to_dict(),
            versions=versions(),
            model=_model_record(lm),
            prompts=self.sets.describe(),
            leakage=self.sets.leakage_record(),
            prompt_format=format_prompt(
                lm, self.sets.eval.prompts[0], system_prompt=ev.system_prompt, chat=ev.chat
            ),
            circuit=_summary(circuit, lm.adapter.n_neurons),
            directions=dirs.record(),
            judges=judges,
            sweep=[c.key for c in sweep] + ([match.key] if match and match.key != "baseline" else []),
            sparsity=sorted(sparsity, key=lambda p: p.size),
            controls=analysis.controls(results, main.key, named, judges[0], margin),
            caa_match=match.match if match else None,
            direction_selection=dirs.selection,
            caa_selection=dirs.caa_selection,
            paired=analysis.paired_vs_baseline(results, judges, margin),
            agreement=analysis.agreement(results, judges),
            layers=self.layers(circuit, controls),
            capability=capability(self, evaluator),
            conditions=results,
            seconds=time.perf_counter() - self.started,
            given_circuits=[self.given_summary(g, results, main.key, judges[0]) for g in given],
            extra={"judge_settings": evaluator.classifier.descriptions(self.sets.eval.prompts)},
        )

    def given_summary(
        self, given: Given, results: dict[str, ConditionResult], main_key: str, judge: str
    ) -> GivenCircuit:
        """A given circuit's record: what it is, how it was applied, and its refusal against the
        discovered circuit's on the same prompts."""
        c, key = given.circuit, given.condition.key
        vs = analysis.compare(results[main_key], results[key], judge, self.config.equivalence_margin)
        return GivenCircuit(
            given.name,
            given.path,
            given.sha256,
            key,
            {"kind": given.condition.kind, "multiplier": given.condition.number},
            _summary(c, self.lm.adapter.n_neurons),
            vs,
        )


def _summary(circuit: Circuit, n_neurons: int) -> CircuitSummary:
    return CircuitSummary(
        len(circuit),
        len(circuit) / n_neurons,
        circuit.per_layer(),
        circuit.late_share(),
        circuit.method,
        circuit.summary(),
    )


def _control_type(cond: Condition, config: StudyConfig) -> str:
    return "contrast" if cond.circuit in config.controls else "magnitude-matched"


def _model_record(lm: LoadedModel) -> dict[str, Any]:
    record: dict[str, Any] = {
        "spec": lm.spec,
        "source": lm.source,
        "shape": lm.shape,
        "n_neurons": lm.adapter.n_neurons,
        "dtype": str(lm.dtype).removeprefix("torch."),
        "parameters": sum(p.numel() for p in lm.model.parameters()),
    }
    if lm.spec.startswith("zoo:"):
        entry = zoo.get(lm.spec.removeprefix("zoo:"))
        record["served_as"] = (
            f"{entry.description}; the GGUF file {entry.gguf_name}, dequantised to {record['dtype']} by "
            "neurogate"
        )
    return record


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
    ``condition`` (key, label, cached, result), and ``front`` (the same, for a front point).
    """
    return Study(config, out, lm, on_event).run()


def study_dir(config: StudyConfig, out: str | Path = "runs") -> Path:
    """Where ``config``'s run lives (its prompt sets are read to compute the run id)."""
    return Study(config, out, None, None).dir
