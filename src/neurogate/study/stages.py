"""Study stages besides discovery and the conditions: the residual baselines' directions, CAA at matched
refusal, the capability checks, and the one helper that stores each stage's output as it finishes."""

from __future__ import annotations

import json
import logging
import struct
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Protocol, TypeVar

from safetensors import SafetensorError

from neurogate import settings
from neurogate.atomic import write_json_atomic
from neurogate.discovery.circuit import Circuit
from neurogate.discovery.directions import ResidualDirections, compute_directions
from neurogate.errors import ConfigError, NeurogateError
from neurogate.evaluation.capability import capability as lm_eval_capability
from neurogate.evaluation.conditions import Condition
from neurogate.evaluation.direction_selection import DirectionSelection, select_direction
from neurogate.evaluation.engine import Evaluator
from neurogate.evaluation.matching import Match, match_strength
from neurogate.evaluation.results import ConditionResult
from neurogate.models.loading import LoadedModel
from neurogate.prompts.sources import PromptSets
from neurogate.steering.registry import get_kind
from neurogate.study.config import StudyConfig
from neurogate.study.results import PAPER

T = TypeVar("T")
logger = logging.getLogger(__name__)

UNREADABLE: tuple[type[BaseException], ...] = (
    NeurogateError,
    OSError,
    ValueError,
    KeyError,
    TypeError,
    struct.error,
    SafetensorError,
)
"""What reading back a damaged stage file raises (its loader's own error, JSON, UTF-8, safetensors)."""


class Study(Protocol):
    """What a stage reads from the run it belongs to (``study.pipeline.Study`` provides it); a protocol, so
    the stages do not import the pipeline that calls them."""

    config: StudyConfig
    dir: Path
    sets: PromptSets

    @property
    def files(self) -> StageFiles: ...

    @property
    def lm(self) -> LoadedModel: ...

    def emit(self, kind: str, **info: Any) -> None: ...

    def sizes(self) -> tuple[int, list[int]]: ...


class StageFiles:
    """Where a run's stage outputs live, and the load-or-compute rule every stage follows."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def load_or_compute(
        self, name: str, compute: Callable[[], T], load: Callable[[Path], T], save: Callable[[T, Path], Any]
    ) -> T:
        """``load`` the stage's file when it exists, else ``compute()`` and ``save`` it (atomically, by the
        artifact's own writer) before returning it. A stored file that cannot be read back (damaged by hand
        or by a disk fault: atomic writes never leave half a file) is computed again, with a warning."""
        path = self.root / name
        if path.is_file():
            try:
                return load(path)
            except UNREADABLE as exc:
                logger.warning("the stored stage file %s is unreadable (%s); computing it again", path, exc)
        value = compute()
        save(value, path)
        return value


@dataclass
class Baselines:
    """The residual baselines' directions: CAA's (difference of means at the last prompt token, the
    best-separating layer) and the ablation direction (chosen by its effect, with its selection record)."""

    caa: ResidualDirections | None
    ablation: ResidualDirections | None
    selection: DirectionSelection | None

    def record(self) -> dict[str, Any] | None:
        if self.caa is None and self.ablation is None:
            return None
        out: dict[str, Any] = {}
        if self.caa is not None:
            out["caa_layer"] = self.caa.best_layer
            out["separation"] = self.caa.separation
        if self.ablation is not None:
            out["ablation_layer"] = self.ablation.best_layer
            out["ablation_position"] = self.ablation.model.get("position", -1)
        return out


def baselines(study: Study, config: StudyConfig) -> Baselines:
    """Compute (or read back) the directions the configured residual methods need."""
    kinds = {k for k in config.methods if get_kind(k).source == "directions"}
    if not kinds:
        return Baselines(None, None, None)
    sets, files = study.sets, study.files
    opts = config.discovery.capture(progress=False)

    def caa() -> ResidualDirections:
        study.emit("stage", name="residual directions")
        return compute_directions(study.lm, sets.positive.prompts, sets.negative.prompts, options=opts)

    directions = files.load_or_compute(
        "directions.safetensors", caa, ResidualDirections.load, ResidualDirections.save
    )
    if "ablation" not in kinds or not config.select_direction:
        return Baselines(directions, None, None)
    v = config.validation
    if min(len(sets.positive), len(sets.negative)) < 2 * v:
        raise ConfigError(
            f"direction selection holds out {v} discovery prompts per side; give at least {2 * v}"
        )
    train = (sets.positive.prompts[v:], sets.negative.prompts[v:])
    val = (sets.positive.prompts[:v], sets.negative.prompts[:v])
    path = study.dir / "direction-selection.json"
    stored = _stored(path, lambda p: DirectionSelection.from_dict(json.loads(p.read_text())))
    chosen_file = study.dir / "ablation-direction.safetensors"
    stored_direction = _stored(chosen_file, ResidualDirections.load) if stored is not None else None
    if stored is not None and stored_direction is not None:
        return Baselines(directions, stored_direction, stored)
    study.emit("stage", name="ablation direction (by effect)")
    chosen, selection = select_direction(study.lm, train, val, options=opts)
    chosen.save(study.dir / "ablation-direction.safetensors")
    write_json_atomic(path, selection.to_dict(), allow_nan=True)
    return Baselines(directions, chosen, selection)


@dataclass
class MatchedCondition:
    """CAA at the strength matched to CNA's refusal, and its evaluated condition's key."""

    match: Match
    key: str


def caa_match(
    study: Study,
    evaluator: Evaluator,
    results: dict[str, ConditionResult],
    main_key: str,
    sweep: list[Condition],
) -> MatchedCondition | None:
    """Find CAA's strength at CNA's refusal rate, evaluate CAA there in full, and add it to ``results``."""
    if not study.config.match_caa or "caa" not in study.config.methods or main_key not in results:
        return None
    path = study.dir / "caa-match.json"
    target = results[main_key].refusal.value
    match = _stored(path, lambda p: Match.from_dict(json.loads(p.read_text())))
    if match is None:
        study.emit("stage", name="CAA at matched refusal (bisection)")
        match = match_strength(evaluator, "caa", target)
        write_json_atomic(path, match.to_dict())
    if match.strength == 0.0:
        return MatchedCondition(match, "baseline")
    cond = Condition("caa", match.strength, group="matched")
    results[cond.key] = evaluator.run(cond)
    study.emit(
        "condition", key=cond.key, label=f"{cond.label} (matched)", cached=False, result=results[cond.key]
    )
    return MatchedCondition(match, cond.key)


def corpus(spec: str | None) -> list[str]:
    """The capability corpus: ``builtin`` (shipped benign passages), a text file (one passage a line), or
    none."""
    if spec is None:
        return []
    if spec == "builtin":
        text = resources.files("neurogate.evaluation").joinpath("data/benign-corpus.txt").read_text("utf-8")
    else:
        path = Path(spec).expanduser()
        if not path.is_file():
            raise ConfigError(f"corpus file {spec!r} does not exist; give a text file or 'builtin'")
        text = path.read_text(encoding="utf-8")
    passages = [line.strip() for line in text.splitlines() if line.strip()]
    if not passages:
        raise ConfigError(f"the corpus {spec!r} has no text")
    return passages


def capability(study: Study, evaluator: Evaluator) -> dict[str, Any] | None:
    """lm-eval scores, unsteered and with the main circuit ablated (a message instead without lm-eval)."""
    c = study.config
    if not c.capability:
        return None
    study.emit("stage", name="capability (lm-eval)")
    k_main, _ = study.sizes()
    out: dict[str, Any] = {"tasks": list(c.capability), "limit": c.capability_limit}
    for label, cond in (("baseline", None), ("cna", Condition("cna", 0.0, size=k_main))):
        steering = evaluator.intervention(cond) if cond is not None else None
        result = lm_eval_capability(study.lm, steering, tasks=c.capability, limit=c.capability_limit)
        out[label], out["skipped"] = result.scores, result.skipped
        if result.skipped:
            break
    return out


@dataclass
class Given:
    """A circuit file given to the study, loaded and checked, with the condition that evaluates it."""

    name: str
    path: str
    sha256: str
    circuit: Circuit
    condition: Condition


def given_circuits(study: Study) -> list[Given]:
    """Load each configured circuit file, check it fits the model, and read the intervention it records
    (``method.intervention``, as ``neurogate tune`` writes it; ``cna m=0`` when absent)."""
    out: list[Given] = []
    taken = {PAPER, *study.config.controls, *(f"matched-{s}" for s in study.config.random_seeds)}
    for path in study.config.circuits:
        circuit = Circuit.load(path)
        circuit.check_model(study.lm)
        kind, value = circuit.recorded_intervention() or ("cna", 0.0)
        if get_kind(kind).source != "circuit":
            raise ConfigError(
                f"{path} records the intervention {kind!r}, which does not act on neurons; a given circuit "
                "is evaluated with a neuron kind (cna or mean)"
            )
        name = stem = Path(path).stem
        while name in taken:
            name = f"{stem}-{len(out) + 1}"
        taken.add(name)
        cond = Condition(kind, value, group="given", circuit=name)
        out.append(Given(name, str(path), settings.file_digest(path), circuit, cond))
    return out


def _stored(path: Path, read: Callable[[Path], T]) -> T | None:
    """``read(path)`` when the stage record exists and reads back; None when it is missing, or damaged (then
    with a warning: the stage is computed again, as :meth:`StageFiles.load_or_compute` does)."""
    if not path.is_file():
        return None
    try:
        return read(path)
    except UNREADABLE as exc:
        logger.warning("the stored stage file %s is unreadable (%s); computing it again", path, exc)
        return None
