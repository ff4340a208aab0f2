"""Study stages besides discovery and the conditions: the residual baselines' directions, CAA at matched
refusal, the capability checks, and the one helper that stores each stage's output as it finishes.

The two residual baselines get equal care: with ``select_direction`` both the ablation direction and CAA's
vector are chosen by their effect among the same candidates, on the same held-out validation prompts
(:mod:`neurogate.study.direction_selection`), and CAA's strength is then matched to CNA's refusal on
those validation prompts, never on the evaluation prompts that report it (:func:`caa_match`)."""

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
from neurogate.evaluation.engine import Evaluator
from neurogate.evaluation.matching import Match, match_strength, refusal_on
from neurogate.evaluation.results import ConditionResult
from neurogate.models.loading import LoadedModel
from neurogate.prompts.sources import PromptSets
from neurogate.steering.registry import get_kind
from neurogate.study.config import StudyConfig
from neurogate.study.direction_selection import (
    METHODS,
    DirectionSelection,
    candidate_directions,
    select_direction,
)
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
    """The residual baselines' directions: CAA's and the ablation direction. Each is chosen by its effect
    (with its selection record) when the study selects directions, else CAA's is the difference of means at
    the last prompt token at the best-separating layer (and ablation uses the same)."""

    caa: ResidualDirections | None
    ablation: ResidualDirections | None
    selection: DirectionSelection | None
    caa_selection: DirectionSelection | None = None

    def record(self) -> dict[str, Any] | None:
        if self.caa is None and self.ablation is None:
            return None
        out: dict[str, Any] = {}
        if self.caa is not None:
            out["caa_layer"] = self.caa.best_layer
            if self.caa_selection is not None:
                out["caa_position"] = self.caa.model.get("position", -1)
                out["caa_chosen_by"] = "effect"
            else:
                out["separation"] = self.caa.separation
                out["caa_chosen_by"] = "separation"
        if self.ablation is not None:
            out["ablation_layer"] = self.ablation.best_layer
            out["ablation_position"] = self.ablation.model.get("position", -1)
        return out


#: The run's residual directions: CAA's vector (chosen by effect, or by separation where directions are
#: not selected); the explorer reads it from a run folder.
DIRECTIONS = "directions.safetensors"
#: Where each method's chosen direction and its selection record are stored (ablation's names predate
#: CAA's selection, and stored runs keep them).
SELECTION_FILES = {
    "ablation": ("ablation-direction.safetensors", "direction-selection.json"),
    "caa": (DIRECTIONS, "caa-direction-selection.json"),
}


def validation_split(
    study: Study, config: StudyConfig
) -> tuple[tuple[list[str], list[str]], tuple[list[str], list[str]]]:
    """(train, validation) discovery prompts, each (harmful, harmless): the first ``validation`` prompts
    of each side are held out for choosing directions and matching CAA's strength."""
    sets, v = study.sets, config.validation
    if min(len(sets.positive), len(sets.negative)) < 2 * v:
        raise ConfigError(
            f"choosing the baselines' directions and matching CAA's strength hold out {v} discovery "
            f"prompts per side (validation = {v}); give at least {2 * v}"
        )
    pos, neg = list(sets.positive.prompts), list(sets.negative.prompts)
    return (pos[v:], neg[v:]), (pos[:v], neg[:v])


def baselines(study: Study, config: StudyConfig) -> Baselines:
    """Compute (or read back) the directions the configured residual methods need. With
    ``select_direction``, ablation and CAA are each chosen by effect among the same candidates (computed
    once, from the training split, and shared)."""
    kinds = {k for k in config.methods if get_kind(k).source == "directions"}
    if not kinds:
        return Baselines(None, None, None)
    sets, files = study.sets, study.files
    opts = config.discovery.capture(progress=False)

    def caa() -> ResidualDirections:
        study.emit("stage", name="residual directions")
        return compute_directions(study.lm, sets.positive.prompts, sets.negative.prompts, options=opts)

    by_effect = [m for m in METHODS if m in kinds] if config.select_direction else []
    directions = None
    if kinds - set(by_effect):  # a method that uses the best-separating layer's difference of means
        directions = files.load_or_compute(DIRECTIONS, caa, ResidualDirections.load, ResidualDirections.save)
    if not by_effect:
        return Baselines(directions, None, None)
    train, val = validation_split(study, config)
    chosen: dict[str, tuple[ResidualDirections | None, DirectionSelection | None]] = {}
    diffs = None
    for method in by_effect:
        direction_file, record_file = (study.dir / name for name in SELECTION_FILES[method])
        stored = _stored(record_file, lambda p: DirectionSelection.from_dict(json.loads(p.read_text())))
        stored_direction = _stored(direction_file, ResidualDirections.load) if stored is not None else None
        if stored is not None and stored_direction is not None:
            chosen[method] = (stored_direction, stored)
            continue
        study.emit("stage", name=f"{method} direction (by effect)")
        if diffs is None:
            diffs = candidate_directions(study.lm, train[0], train[1], opts)
        vector, selection = select_direction(study.lm, train, val, options=opts, method=method, diffs=diffs)
        vector.save(direction_file)
        write_json_atomic(record_file, selection.to_dict(), allow_nan=True)
        chosen[method] = (vector, selection)
    caa_dirs, caa_selection = chosen.get("caa", (directions, None))
    ablation, ablation_selection = chosen.get("ablation", (None, None))
    return Baselines(caa_dirs, ablation, ablation_selection, caa_selection)


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
    """Find CAA's strength at CNA's refusal rate, evaluate CAA there in full, and add it to ``results``.

    Both rates are read on the validation prompts (the held-out harmful discovery prompts), with the same
    short replies and the headline judge: the evaluation prompts never choose the strength they then
    measure. A record stored by an earlier version, matched on the evaluation prompts, is matched again."""
    if not study.config.match_caa or "caa" not in study.config.methods or main_key not in results:
        return None
    main = next((c for c in sweep if c.key == main_key), None)
    if main is None:
        return None
    path = study.dir / "caa-match.json"
    match = _stored(path, lambda p: Match.from_dict(json.loads(p.read_text())))
    if match is not None and match.prompts != "validation":
        match = None
    if match is None:
        study.emit("stage", name="CAA at matched refusal (bisection on the validation prompts)")
        _, (val, _) = validation_split(study, study.config)
        target = refusal_on(evaluator, main, val)
        match = match_strength(evaluator, "caa", target, prompts=val, on="validation", reference=main.label)
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
