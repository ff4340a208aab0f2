"""`neurogate run`: the whole study in one resumable pipeline.

discovery -> residual directions -> the four-method sweep -> sparsity -> random control -> layer
localisation -> ``results.json``, ``report.md`` and ``report.html`` under ``<out>/<run id>/``.

The run id is a hash of the configuration, so a changed configuration starts a new run. Each finished
condition is written atomically to ``conditions/<key>.json``; a rerun of the same configuration reads them
back and only computes what is missing, so an interrupted run loses nothing it had finished.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
import platform
import re
import time
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from neurogate.atomic import write_json_atomic
from neurogate.circuit import Circuit
from neurogate.errors import ConfigError
from neurogate.experiments import (
    LayerProfile,
    check_held_out,
    random_conditions,
    sparsity_conditions,
    sparsity_sizes,
    within_ci,
)
from neurogate.judges import get_judge
from neurogate.loading import LoadedModel
from neurogate.sweep import (
    METHODS,
    Condition,
    ConditionResult,
    EvalSettings,
    Evaluator,
    ResultStore,
    circuit_prefix,
    plan_sweep,
)
from neurogate.zoo import DEFAULT_MODEL

logger = logging.getLogger(__name__)

Event = Callable[[str, dict[str, Any]], None]


@dataclass(frozen=True)
class StudyConfig:
    """Everything that decides a study's numbers (and so its run id). Defaults fit the 30-minute CPU
    budget on the default model: 100 harmful + 40 benign evaluation prompts, 32-token greedy replies,
    strengths 0 and 1, circuit sizes of 0.01%, 0.1% and 1% of the neurons."""

    model: str = f"zoo:{DEFAULT_MODEL}"
    dtype: str = "auto"
    device: str = "auto"
    positive: str = "builtin:harmful"
    negative: str = "builtin:benign"
    eval: str = "builtin:harmful-eval"
    benign: str = "builtin:benign-eval"
    n_discovery: int | None = None
    n_eval: int | None = 100
    n_benign: int | None = 40
    fraction: float = 0.001
    universal_filter: bool = True
    methods: tuple[str, ...] = METHODS
    strengths: tuple[float, ...] = (0.0, 1.0)
    sparsity: tuple[float, ...] = (0.0001, 0.001, 0.01)
    random_seeds: tuple[int, ...] = (0,)
    layer_contrasts: int = 2
    max_new_tokens: int = 32
    kl_tokens: int = 16
    batch_size: int | None = None
    judge: str = "keyword"
    system_prompt: str | None = None
    chat: bool = True
    examples: int = 4
    capability: tuple[str, ...] = ()
    capability_limit: int = 20

    def __post_init__(self) -> None:
        for name in ("methods", "strengths", "sparsity", "random_seeds", "capability"):
            value = getattr(self, name)
            if isinstance(value, str) or not isinstance(value, tuple | list):
                raise ConfigError(f"{name} must be a list, got {value!r}")
            object.__setattr__(self, name, tuple(value))
        bad = [m for m in self.methods if m not in METHODS]
        if bad:
            raise ConfigError(f"unknown method(s) {bad}; choose from {', '.join(METHODS)}")
        if not 0 < self.fraction <= 1:
            raise ConfigError(f"fraction must be in (0, 1], got {self.fraction}")
        for name in ("n_discovery", "n_eval", "n_benign", "batch_size"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"{name} must be a positive integer (or omitted), got {value!r}")
        if self.max_new_tokens < 1 or self.kl_tokens < 1 or self.layer_contrasts < 0 or self.examples < 0:
            raise ConfigError("max_new_tokens and kl_tokens must be >= 1; layer_contrasts and examples >= 0")

    @classmethod
    def quick(cls, **overrides: Any) -> StudyConfig:
        """A reduced study for demos, sized for 15-20 minutes on the default model on an idle 2-core CPU."""
        base: dict[str, Any] = {
            "n_eval": 48, "n_benign": 24, "layer_contrasts": 1, "kl_tokens": 8,
        }
        return cls(**{**base, **overrides})

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, base: StudyConfig | None = None) -> StudyConfig:
        """Build from a mapping (e.g. a TOML table), rejecting unknown keys with a "did you mean"."""
        known = {f.name for f in fields(cls)}
        for key in data:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ConfigError(f"unknown study setting {key!r}{hint}; known: {', '.join(sorted(known))}")
        start = asdict(base) if base is not None else {}
        try:
            return cls(**{**start, **data})
        except TypeError as exc:
            raise ConfigError(f"invalid study settings: {exc}") from exc

    @classmethod
    def from_toml(cls, path: str | Path, *, base: StudyConfig | None = None) -> StudyConfig:
        """Read settings from a TOML file (top level or a ``[study]`` table)."""
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {str(p)!r} does not exist")
        try:
            data = tomllib.loads(p.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{p} is not valid TOML ({exc})") from exc
        return cls.from_mapping(data.get("study", data), base=base)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def run_id(self) -> str:
        """``<model slug>-<hash of the settings>``: the same settings always map to the same run."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        slug = re.sub(r"[^a-zA-Z0-9.]+", "-", self.model.split("/")[-1].removeprefix("zoo:")).strip("-")
        return f"{slug[:40]}-{hashlib.sha256(blob).hexdigest()[:10]}"

    def eval_settings(self) -> EvalSettings:
        return EvalSettings(
            max_new_tokens=self.max_new_tokens,
            batch_size=self.batch_size or "auto",
            system_prompt=self.system_prompt,
            chat=self.chat,
            kl_tokens=self.kl_tokens,
        )


def versions() -> dict[str, str]:
    """Versions of everything that can change the numbers."""
    import torch
    import transformers

    from neurogate import __version__

    return {
        "neurogate": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


@dataclass
class StudyResult:
    """Where a study's files are and its assembled results."""

    run_dir: Path
    results: dict[str, Any] = field(default_factory=dict)

    @property
    def results_path(self) -> Path:
        return self.run_dir / "results.json"


def _emit(on_event: Event | None, kind: str, **info: Any) -> None:
    if on_event is not None:
        on_event(kind, info)


def _load_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def run_study(
    config: StudyConfig,
    out: str | Path = "runs",
    *,
    lm: LoadedModel | None = None,
    on_event: Event | None = None,
) -> StudyResult:
    """Run (or resume) the study described by ``config`` under ``out/<run id>/``.

    ``lm``: an already-loaded model to use instead of loading ``config.model`` (its spec must match).
    ``on_event(kind, info)``: progress callback; kinds are ``stage`` (name), ``plan`` (total conditions),
    and ``condition`` (key, cached, result).
    """
    from neurogate import prompts
    from neurogate.discovery import discover
    from neurogate.loading import load_model
    from neurogate.report import write_reports

    started = time.perf_counter()
    run_dir = Path(out) / config.run_id()
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(run_dir / "config.json", config.to_dict())

    _emit(on_event, "stage", name="prompt sets")
    pos = prompts.load(config.positive, limit=config.n_discovery)
    neg = prompts.load(config.negative, limit=config.n_discovery)
    harmful = prompts.load(config.eval, limit=config.n_eval)
    benign = prompts.load(config.benign, limit=config.n_benign)
    held_out = check_held_out([pos, neg], harmful)
    prompts.check_leakage([pos, neg], benign)

    if lm is None:
        _emit(on_event, "stage", name=f"loading {config.model}")
        lm = load_model(config.model, dtype=config.dtype, device=config.device)
    elif lm.spec != config.model:
        raise ConfigError(f"the model given ({lm.spec}) is not the configured one ({config.model})")
    discover_opts: dict[str, Any] = {
        "batch_size": config.batch_size or "auto", "system_prompt": config.system_prompt, "chat": config.chat,
        "progress": False,
    }

    # one ranking, discovered at the largest size; the main circuit and the sparsity sizes are its prefixes
    n_total = lm.adapter.n_neurons
    k_main = max(1, round(config.fraction * n_total))
    sizes = sparsity_sizes(n_total, config.sparsity) if config.sparsity else []
    ranking_path = run_dir / "circuit-ranking.json"
    if ranking_path.is_file():
        ranking = Circuit.load(ranking_path)
        ranking.check_model(lm)
    else:
        _emit(on_event, "stage", name="discovery")
        ranking = discover(
            lm, pos, neg, top_k=max([k_main, *sizes]), universal_filter=config.universal_filter,
            **discover_opts,
        )
        ranking.save(ranking_path)
    circuit = circuit_prefix(ranking, k_main)
    circuit.save(run_dir / "circuit.json")

    directions = None
    if {"caa", "ablation"} & set(config.methods):
        from neurogate.directions import ResidualDirections, compute_directions

        dir_path = run_dir / "directions.safetensors"
        if dir_path.is_file():
            directions = ResidualDirections.load(dir_path)
        else:
            _emit(on_event, "stage", name="residual directions")
            directions = compute_directions(
                lm, pos.prompts, neg.prompts, batch_size=config.batch_size or "auto",
                system_prompt=config.system_prompt, chat=config.chat,
            )
            directions.save(dir_path)

    judge = get_judge(config.judge)
    evaluator = Evaluator(
        lm, harmful.prompts, benign.prompts, circuit=ranking, directions=directions, judge=judge,
        settings=config.eval_settings(), store=ResultStore(run_dir / "conditions"),
    )
    sweep_plan = [
        replace(c, size=k_main) if c.method in ("cna", "random") else c
        for c in plan_sweep(config.methods, config.strengths)
    ]
    sparse_plan = sparsity_conditions([s for s in sizes if s != k_main])
    random_plan = [replace(c, size=k_main) for c in random_conditions(config.random_seeds)]
    plan: list[Condition] = []
    for cond in [*sweep_plan, *sparse_plan, *random_plan]:
        if cond.key not in {c.key for c in plan}:
            plan.append(cond)
    _emit(on_event, "plan", total=len(plan))
    _emit(on_event, "stage", name="conditions")

    def progress(cond: Condition, result: ConditionResult, cached: bool) -> None:
        _emit(on_event, "condition", key=cond.key, cached=cached, result=result)

    results = {r.key: r for r in evaluator.run_all(plan, progress)}

    layers_path = run_dir / "layers.json"
    stored_layers = _load_json(layers_path)
    if stored_layers is not None:
        profiles = [LayerProfile.from_dict(d) for d in stored_layers]
    else:
        from neurogate.prompts import battery

        profiles = [LayerProfile.of("refusal", circuit)]
        contrasts = battery()[: config.layer_contrasts] if config.layer_contrasts else []
        for name, cpos, cneg in contrasts:
            _emit(on_event, "stage", name=f"layer localisation: {name}")
            found = discover(lm, cpos, cneg, top_k=k_main, universal_filter=False, **discover_opts)
            profiles.append(LayerProfile.of(name, found))
        write_json_atomic(layers_path, [p.to_dict() for p in profiles])

    capability = _capability(config, lm, evaluator, k_main, on_event) if config.capability else None
    baseline = results["baseline"]
    assembled = {
        "kind": "neurogate.study",
        "run_id": config.run_id(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": config.to_dict(),
        "versions": versions(),
        "model": {
            "spec": lm.spec, "fingerprint": lm.fingerprint, "n_neurons": n_total, "dtype": str(lm.dtype),
        },
        "prompts": {
            "positive": pos.describe(), "negative": neg.describe(),
            "eval": harmful.describe(), "benign": benign.describe(),
        },
        "held_out": held_out,
        "circuit": {
            "n_neurons": len(circuit), "fraction": len(circuit) / n_total, "per_layer": circuit.per_layer(),
            "late_share": circuit.late_share(), "method": circuit.method, "summary": circuit.summary(),
        },
        "directions": None if directions is None else {
            "best_layer": directions.best_layer, "separation": directions.separation,
        },
        "sweep": [results[c.key].key for c in sweep_plan],
        "sparsity": _sparsity_rows(len(circuit), sweep_plan, sparse_plan) if config.sparsity else [],
        "random_control": [
            {"key": c.key, "seed": c.seed, "within_baseline_ci": within_ci(baseline, results[c.key])}
            for c in random_plan
        ],
        "layers": [p.to_dict() for p in profiles],
        "capability": capability,
        "conditions": {k: r.to_dict() for k, r in results.items()},
        "seconds": time.perf_counter() - started,
    }
    _emit(on_event, "stage", name="report")
    write_json_atomic(run_dir / "results.json", assembled)
    write_reports(assembled, run_dir)
    return StudyResult(run_dir, assembled)


def _capability(
    config: StudyConfig, lm: LoadedModel, evaluator: Evaluator, k_main: int, on_event: Event | None
) -> dict[str, Any]:
    """lm-eval scores, unsteered and with the main circuit ablated (a message instead without lm-eval)."""
    from neurogate.metrics import capability

    _emit(on_event, "stage", name="capability (lm-eval)")
    out: dict[str, Any] = {"tasks": list(config.capability), "limit": config.capability_limit}
    for label, cond in (("baseline", None), ("cna", Condition("cna", 1.0, size=k_main))):
        steering = evaluator.intervention(cond) if cond is not None else None
        result = capability(lm, steering, tasks=config.capability, limit=config.capability_limit)
        out[label] = result.scores
        out["skipped"] = result.skipped
        if result.skipped:
            break
    return out


def _sparsity_rows(
    k_main: int, sweep_plan: list[Condition], sparse_plan: list[Condition]
) -> list[dict[str, Any]]:
    """Sparsity points by size: the extra sizes, plus the main circuit's full-strength CNA from the sweep."""
    rows: list[dict[str, Any]] = [{"size": c.size, "key": c.key} for c in sparse_plan]
    rows += [{"size": k_main, "key": c.key} for c in sweep_plan if c.method == "cna" and c.strength == 1.0]
    return sorted(rows, key=lambda d: int(d["size"]))
