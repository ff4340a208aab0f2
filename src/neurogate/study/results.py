"""The study's output, typed and versioned: :class:`StudyResults` is what ``results.json`` holds and what
the report reads, so the contract between them is checked by the type checker and a round-trip test."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from neurogate.errors import NeurogateError
from neurogate.evaluation.matching import Match
from neurogate.evaluation.paired import PairedRates
from neurogate.evaluation.results import ConditionResult
from neurogate.study.direction_selection import DirectionSelection
from neurogate.study.experiments import LayerProfile
from neurogate.study.front_analysis import FrontsRecord

KIND = "neurogate.study"
SCHEMA_VERSION = 3


# The name of the paper's circuit among the given ones (a study whose selection differs adds it).
PAPER = "paper"


@dataclass
class CircuitSummary:
    """The study's main circuit: size, share of all neurons, where it sits and how it was found."""

    n_neurons: int
    fraction: float
    per_layer: dict[int, int]
    late_share: float
    method: dict[str, Any]
    summary: str

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "per_layer": {str(k): v for k, v in self.per_layer.items()}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CircuitSummary:
        return cls(**{**data, "per_layer": {int(k): int(v) for k, v in data["per_layer"].items()}})


@dataclass
class SparsityPoint:
    """One circuit size of the sparsity curve and the condition that measured it."""

    size: int
    key: str


@dataclass
class Control:
    """A specificity control: an equal-size circuit of an unrelated contrast (``"contrast"``) or one
    matched to the main circuit in per-layer counts and activation size (``"magnitude-matched"``), ablated.
    ``vs_circuit`` compares its refusal with the main circuit's on the same prompts (``diff`` =
    control - circuit), ``vs_baseline`` with the unsteered model's."""

    key: str
    type: str
    name: str
    vs_circuit: PairedRates
    vs_baseline: PairedRates

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Control:
        return cls(
            data["key"],
            data["type"],
            data["name"],
            PairedRates(**data["vs_circuit"]),
            PairedRates(**data["vs_baseline"]),
        )


@dataclass
class GivenCircuit:
    """A circuit given to the study (e.g. ``tuned-circuit.json`` from ``neurogate tune``), evaluated at its
    recorded intervention beside the discovered one. ``vs_circuit`` compares its refusal with the
    discovered circuit's on the same prompts (``diff`` = given - discovered)."""

    name: str
    path: str
    sha256: str
    key: str
    intervention: dict[str, Any]
    summary: CircuitSummary
    vs_circuit: PairedRates

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "summary": self.summary.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GivenCircuit:
        return cls(
            **{
                **data,
                "summary": CircuitSummary.from_dict(data["summary"]),
                "vs_circuit": PairedRates(**data["vs_circuit"]),
            }
        )


@dataclass
class StudyResults:
    """Everything a study measured, with the settings, versions and prompt provenance behind it.

    ``paired[key][judge]``: each condition's replies not served (refusal or redirect) against the
    baseline's on the same prompts.
    ``agreement[judge_a + " / " + judge_b]``: how often two judges give the same class, and Cohen's kappa,
    on the distinct replies that reach the judges and differ from the baseline's (``analysis.agreement``;
    results stored by earlier versions pooled every reply and lack its ``scope`` key).
    ``caa_selection``: how CAA's vector was chosen by effect (``None`` where it was not, and in results
    stored before CAA was chosen this way); ``direction_selection`` is the ablation direction's.
    """

    run_id: str
    created: str
    config: dict[str, Any]
    versions: dict[str, str]
    model: dict[str, Any]
    prompts: dict[str, dict[str, Any]]
    leakage: dict[str, Any]
    prompt_format: str
    circuit: CircuitSummary
    directions: dict[str, Any] | None
    judges: list[str]
    sweep: list[str]
    sparsity: list[SparsityPoint]
    controls: list[Control]
    caa_match: Match | None
    direction_selection: DirectionSelection | None
    paired: dict[str, dict[str, PairedRates]]
    agreement: dict[str, dict[str, float | None]]
    layers: list[LayerProfile]
    capability: dict[str, Any] | None
    conditions: dict[str, ConditionResult]
    seconds: float
    given_circuits: list[GivenCircuit] = field(default_factory=list)
    caa_selection: DirectionSelection | None = None
    schema_version: int = SCHEMA_VERSION
    kind: str = KIND
    extra: dict[str, Any] = field(default_factory=dict)
    fronts: FrontsRecord | None = None

    @property
    def baseline(self) -> ConditionResult:
        return self.conditions["baseline"]

    @property
    def n_neurons(self) -> int:
        """All MLP neurons of the model."""
        return int(self.model["n_neurons"])

    def to_dict(self) -> dict[str, Any]:
        data = {
            "kind": self.kind,
            "schema_version": self.schema_version,
            **{k: v for k, v in asdict(self).items() if k not in ("kind", "schema_version")},
        }
        data["circuit"] = self.circuit.to_dict()
        data["layers"] = [p.to_dict() for p in self.layers]
        data["conditions"] = {k: r.to_dict() for k, r in self.conditions.items()}
        data["given_circuits"] = [g.to_dict() for g in self.given_circuits]
        data["fronts"] = self.fronts.to_dict() if self.fronts is not None else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<dict>") -> StudyResults:
        """Validate the kind and schema version, then rebuild every typed part."""
        if not isinstance(data, dict) or data.get("kind") != KIND:
            raise NeurogateError(f"{source} is not a neurogate study result (kind {KIND!r} missing)")
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise NeurogateError(
                f"{source} has study schema version {version!r}; this neurogate reads version "
                f"{SCHEMA_VERSION}. Rerun the study (finished conditions are reused when the settings match)"
            )
        try:
            return cls(**{k: v for k, v in data.items() if k not in _TYPED}, **_typed(data))
        except (KeyError, TypeError, ValueError) as exc:
            raise NeurogateError(f"{source} is a damaged study result ({type(exc).__name__}: {exc})") from exc

    @classmethod
    def load(cls, path: str | Path) -> StudyResults:
        p = Path(path)
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise NeurogateError(f"cannot read study results {p} ({exc})") from exc
        return cls.from_dict(data, source=str(p))


_TYPED = (
    "circuit",
    "sparsity",
    "controls",
    "caa_match",
    "direction_selection",
    "paired",
    "layers",
    "conditions",
    "given_circuits",
    "caa_selection",
    "fronts",
)


def _typed(data: dict[str, Any]) -> dict[str, Any]:
    match, selection = data["caa_match"], data["direction_selection"]
    return {
        "circuit": CircuitSummary.from_dict(data["circuit"]),
        "sparsity": [SparsityPoint(**p) for p in data["sparsity"]],
        "controls": [Control.from_dict(c) for c in data["controls"]],
        "caa_match": Match.from_dict(match) if match else None,
        "direction_selection": DirectionSelection.from_dict(selection) if selection else None,
        "paired": {k: {j: PairedRates(**p) for j, p in v.items()} for k, v in data["paired"].items()},
        "layers": [LayerProfile.from_dict(p) for p in data["layers"]],
        "conditions": {k: ConditionResult.from_dict(r) for k, r in data["conditions"].items()},
        "given_circuits": [GivenCircuit.from_dict(g) for g in data.get("given_circuits", [])],
        "caa_selection": DirectionSelection.from_dict(caa) if (caa := data.get("caa_selection")) else None,
        "fronts": FrontsRecord.from_dict(fronts) if (fronts := data.get("fronts")) else None,
    }
