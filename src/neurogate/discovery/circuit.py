"""The circuit artifact: the neurons that carry a behaviour, where they were found and how.

Saved as JSON with a schema version. Loading validates every field, and :meth:`Circuit.check_model` refuses
a model whose shape (family, layer count, width, hidden size) differs from the one it was found on.
:meth:`Circuit.apply` multiplies the circuit's neurons by ``m`` at every position until the returned
handle is removed (``m = 1`` no change, ``0`` ablates, ``> 1`` amplifies, negative flips the sign).
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import torch

from neurogate.atomic import write_json_atomic
from neurogate.discovery.profiles import DiscoveryRecord, NeuronProfile
from neurogate.errors import CircuitError, ConfigError
from neurogate.models.hooks import Handle, scale_neurons
from neurogate.models.loading import LoadedModel
from neurogate.models.moe import neuron_label
from neurogate.version import __version__

SCHEMA_VERSION = 2
SITE = "mlp.post"
_OLD_SITE = "mlp.down_proj.input"  # schema 1's name for the same site

Multiplier = float | Mapping[tuple[int, int], float] | torch.Tensor
"""One ``m`` for every neuron, a ``{(layer, index): m}`` mapping (others keep 1), or a tensor of
``len(circuit)`` factors in ``circuit.neurons`` order."""


@dataclass(frozen=True)
class LayerScale:
    """Neurons of one layer, the factor for each, and an optional offset: each neuron becomes
    ``factor * a + offset`` (``index``, ``factor`` and ``offset`` have the same length)."""

    index: torch.Tensor  # long [k]
    factor: torch.Tensor  # float32 [k]
    offset: torch.Tensor | None = None  # float32 [k]


Toward = Literal["zero", "mean"]
"""What ``m = 0`` sets a neuron to: zero (ablation), or its mean on the negative prompts (mean-ablation)."""


WEIGHTINGS = ("uniform", "proportional")
"""How much of the intervention each neuron takes: all alike, or in proportion to its score's size."""


@dataclass(frozen=True)
class Neuron:
    """One selected neuron: its place, its score, the signed difference and each side's mean.
    ``weight``: the share of the intervention it takes (its factor is ``1 + weight * (m - 1)``; 1 for
    every neuron unless the circuit was weighted, see :meth:`Circuit.weighted`). ``profile``: what
    discovery saw of it (:class:`NeuronProfile`; ``None`` in files from older versions)."""

    layer: int
    index: int
    score: float
    diff: float
    mean_pos: float
    mean_neg: float
    weight: float = 1.0
    profile: NeuronProfile | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {k: getattr(self, k) for k in (*_NEURON_TYPES, "weight")}
        if self.profile is not None:
            data["profile"] = self.profile.to_dict()
        return data


_NEURON_TYPES: dict[str, tuple[type, ...]] = {
    "layer": (int,),
    "index": (int,),
    "score": (int, float),
    "diff": (int, float),
    "mean_pos": (int, float),
    "mean_neg": (int, float),
}


@dataclass
class Circuit:
    """A set of MLP neurons with the provenance needed to reproduce and safely apply it.

    ``model``: ``{"spec": ..., "shape": {...}}``; ``method``: the scoring rule and its parameters;
    ``prompts``: ``{"positive": {"name", "count", "sha256"}, "negative": {...}}``. ``record``: the prompt
    texts and skipped universal neurons behind the neurons' profiles (``None`` in older files).
    """

    neurons: list[Neuron]
    model: dict[str, Any]
    method: dict[str, Any] = field(default_factory=dict)
    prompts: dict[str, Any] = field(default_factory=dict)
    site: str = SITE
    neurogate_version: str = __version__
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    record: DiscoveryRecord | None = None

    def __len__(self) -> int:
        return len(self.neurons)

    @property
    def shape(self) -> dict[str, Any]:
        """The shape of the model it was found on (family, n_layers, d_mlp, d_model)."""
        return dict(self.model.get("shape", {}))

    @property
    def n_layers(self) -> int:
        return int(self.shape.get("n_layers", 0))

    @property
    def is_moe(self) -> bool:
        """True when found on a mixture-of-experts model (neurons are numbered flat over the experts)."""
        return bool(self.shape.get("moe"))

    def label(self, neuron: Neuron) -> str:
        """``L3 #12``, or in a mixture-of-experts circuit ``L3 E5 #12`` (expert 5's neuron 12) / ``L3
        shared #4`` (see :mod:`neurogate.models.moe`)."""
        return neuron_label(neuron.layer, neuron.index, self.shape.get("moe"))

    def per_layer(self) -> dict[int, int]:
        """Number of neurons in each layer that has any, by layer."""
        return dict(sorted(Counter(n.layer for n in self.neurons).items()))

    def late_share(self) -> float:
        """Share of the neurons in the last quarter of the layers."""
        if not self.neurons or not self.n_layers:
            return 0.0
        start = self.n_layers - max(1, self.n_layers // 4)
        return sum(1 for n in self.neurons if n.layer >= start) / len(self.neurons)

    def top(self, size: int) -> Circuit:
        """The ``size`` highest-scoring neurons, as a circuit from the same ranking (sparsity curves)."""
        if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= len(self):
            raise ConfigError(f"asked for the top {size} neurons of a circuit of {len(self)}")
        ranked = sorted(self.neurons, key=lambda n: -n.score)[:size]
        return replace(self, neurons=ranked, method={**self.method, "prefix_of": len(self)})

    def indices(self, device: torch.device | str = "cpu") -> dict[int, torch.Tensor]:
        """Neuron indices grouped by layer, as sorted long tensors."""
        grouped: dict[int, list[int]] = {}
        for n in self.neurons:
            grouped.setdefault(n.layer, []).append(n.index)
        return {
            layer: torch.tensor(sorted(idx), dtype=torch.long, device=device)
            for layer, idx in grouped.items()
        }

    def summary(self) -> str:
        """A short human-readable account: size, source, and neurons per layer."""
        total = self.shape.get("n_layers", 0) * self.shape.get("d_mlp", 0)
        share = f" ({100 * len(self) / total:.3f}% of {total:,} MLP neurons)" if total else ""
        # a circuit saved by an older `neurogate tune` names its scorer "scorer", not "score"
        scorer = self.method.get("score") or self.method.get("scorer") or "?"
        lines = [
            f"circuit: {len(self)} neurons{share} on {self.model.get('spec', '?')}",
            f"method: {scorer}; universal neurons removed: {self.method.get('universal_removed', 0)}",
            f"share in the last quarter of layers: {100 * self.late_share():.1f}%",
            "neurons per layer: "
            + ", ".join(f"L{layer}:{count}" for layer, count in self.per_layer().items()),
        ]
        return "\n".join(lines)

    def check_model(self, lm: LoadedModel) -> None:
        """Raise :class:`CircuitError` unless ``lm`` has the shape this circuit was found on."""
        mine = self.shape
        theirs = lm.shape
        keys = ("n_layers", "d_mlp", "d_model", "family", "moe")
        diffs = [
            f"{k}: circuit {mine.get(k)!r} vs model {theirs.get(k)!r}"
            for k in keys
            if mine.get(k) != theirs.get(k)
        ]
        if diffs:
            raise CircuitError(
                f"this circuit was found on {self.model.get('spec', '?')} and does not fit {lm.spec} ("
                + "; ".join(diffs)
                + "). Run `neurogate discover` on this model to find its own circuit."
            )
        for n in self.neurons:
            if not (0 <= n.layer < theirs["n_layers"] and 0 <= n.index < theirs["d_mlp"]):
                raise CircuitError(f"neuron (layer {n.layer}, index {n.index}) is outside the model")

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "kind": "neurogate.circuit",
            "neurogate_version": self.neurogate_version,
            "created": self.created,
            "site": self.site,
            "model": self.model,
            "method": self.method,
            "prompts": self.prompts,
            "neurons": [n.to_dict() for n in self.neurons],
            **({"record": self.record.to_dict()} if self.record is not None else {}),
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the circuit as JSON, atomically (a crash never leaves a half-written file)."""
        return write_json_atomic(path, self.to_dict(), allow_nan=True)

    @classmethod
    def from_dict(cls, data: Any, source: str = "<dict>") -> Circuit:
        """Validate and build a circuit from its JSON form."""

        def bad(msg: str) -> CircuitError:
            return CircuitError(f"{source} is not a valid neurogate circuit: {msg}")

        if not isinstance(data, dict):
            raise bad("the top level must be a JSON object")
        if data.get("kind", "neurogate.circuit") != "neurogate.circuit":
            raise bad(f"kind is {data.get('kind')!r}")
        version = data.get("schema_version")
        if not isinstance(version, int):
            raise bad("schema_version is missing")
        if version > SCHEMA_VERSION:
            raise bad(
                f"schema_version {version} is newer than this neurogate supports ({SCHEMA_VERSION}); upgrade"
            )
        for key, typ in (("model", dict), ("method", dict), ("prompts", dict), ("neurons", list)):
            if not isinstance(data.get(key), typ):
                raise bad(f"field {key!r} must be a {typ.__name__}")
        if not data["neurons"]:
            raise bad(
                "it lists no neurons, so steering with it would change nothing; "
                "find one with `neurogate discover` or `neurogate tune`"
            )
        model = dict(data["model"])
        if version == 1 and "fingerprint" in model:  # schema 1 called the shape "fingerprint"
            model["shape"] = model.pop("fingerprint")
        fp = model.get("shape")
        if not isinstance(fp, dict) or not all(isinstance(fp.get(k), int) for k in ("n_layers", "d_mlp")):
            raise bad("model.shape must hold integer n_layers and d_mlp")
        neurons: list[Neuron] = []
        seen: set[tuple[int, int]] = set()
        for i, raw in enumerate(data["neurons"]):
            if not isinstance(raw, dict):
                raise bad(f"neuron {i} is not an object")
            for name, types in _NEURON_TYPES.items():
                value = raw.get(name)
                if isinstance(value, bool) or not isinstance(value, types):
                    raise bad(f"neuron {i} field {name!r} must be {' or '.join(t.__name__ for t in types)}")
            weight = raw.get("weight", 1.0)
            if isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(weight):
                raise bad(f"neuron {i} field 'weight' must be a finite number")
            n = Neuron(
                **{k: raw[k] for k in _NEURON_TYPES},
                weight=float(weight),
                profile=_optional(raw, "profile", i, bad),
            )
            if not (0 <= n.layer < fp["n_layers"] and 0 <= n.index < fp["d_mlp"]):
                raise bad(f"neuron {i} (layer {n.layer}, index {n.index}) is outside the model's shape")
            if (n.layer, n.index) in seen:
                raise bad(f"neuron (layer {n.layer}, index {n.index}) appears twice")
            seen.add((n.layer, n.index))
            neurons.append(n)
        return cls(
            neurons=neurons,
            model=model,
            method=data["method"],
            prompts=data["prompts"],
            site=SITE if data.get("site", SITE) == _OLD_SITE else str(data.get("site", SITE)),
            neurogate_version=str(data.get("neurogate_version", "?")),
            created=str(data.get("created", "")),
            record=_optional(data, "record", None, bad),
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Circuit:
        """Read and validate a circuit JSON file."""
        p = Path(path)
        if p.is_dir():
            raise CircuitError(f"{p} is a directory; give the circuit JSON file (from `neurogate discover`)")
        if not p.is_file():
            raise CircuitError(
                f"circuit file {str(p)!r} does not exist; create one with `neurogate discover`"
            )
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise CircuitError(f"{p} is not valid JSON ({exc})") from exc
        except UnicodeDecodeError as exc:
            raise CircuitError(f"{p} is not UTF-8 text, so not a circuit file ({exc.reason})") from exc
        except OSError as exc:
            raise CircuitError(f"cannot read {p} ({exc.strerror or exc})") from exc
        return cls.from_dict(data, source=str(p))

    # -- steering ---------------------------------------------------------------------------------------

    def factors(self, multiplier: Multiplier) -> list[float]:
        """One finite factor per neuron, in ``neurons`` order, from any :data:`Multiplier` form, with each
        neuron's weight applied (``1 + weight * (m - 1)``)."""
        n = len(self)
        if isinstance(multiplier, torch.Tensor):
            if multiplier.dim() != 1 or multiplier.numel() != n:
                raise ConfigError(
                    f"a multiplier tensor must have one factor per circuit neuron (shape [{n}]), "
                    f"got shape {list(multiplier.shape)}"
                )
            values = [float(v) for v in multiplier.detach().float().cpu().tolist()]
        elif isinstance(multiplier, Mapping):
            known = {(nr.layer, nr.index) for nr in self.neurons}
            unknown = [key for key in multiplier if tuple(key) not in known]
            if unknown:
                raise ConfigError(
                    f"multiplier names neurons that are not in the circuit: {unknown[:5]}; keys must be "
                    "(layer, index) pairs of circuit neurons"
                )
            values = [float(multiplier.get((nr.layer, nr.index), 1.0)) for nr in self.neurons]
        elif isinstance(multiplier, int | float) and not isinstance(multiplier, bool):
            values = [float(multiplier)] * n
        else:
            raise ConfigError(
                "multiplier must be a number, a {(layer, index): m} mapping or a tensor, not "
                f"{type(multiplier).__name__}"
            )
        bad = [v for v in values if not math.isfinite(v)]
        if bad:
            raise ConfigError(f"multipliers must be finite numbers, got {bad[0]}")
        return [1.0 + nr.weight * (m - 1.0) for nr, m in zip(self.neurons, values, strict=True)]

    def recorded_intervention(self) -> tuple[str, float] | None:
        """The intervention kind and multiplier the circuit was chosen with (``neurogate tune`` records
        them as ``method.intervention``), or ``None`` when it records none."""
        record = self.method.get("intervention")
        if not isinstance(record, dict):
            return None
        kind, m = record.get("kind"), record.get("multiplier")
        if not isinstance(kind, str) or isinstance(m, bool) or not isinstance(m, int | float):
            return None
        return kind, float(m)

    def weighted(self, rule: str) -> Circuit:
        """The same neurons with each one's share of the intervention set by ``rule``: ``uniform`` (all
        take ``m``) or ``proportional`` (``|score| / max |score|``, so the top neuron takes ``m`` and a
        neuron with half its score moves half as far). Folding and export use the same factors."""
        if rule not in WEIGHTINGS:
            raise ConfigError(f"weights must be one of {', '.join(WEIGHTINGS)}, got {rule!r}")
        top = max((abs(n.score) for n in self.neurons), default=0.0)
        if rule == "uniform" or top == 0.0:
            neurons = [replace(n, weight=1.0) for n in self.neurons]
        else:
            neurons = [replace(n, weight=abs(n.score) / top) for n in self.neurons]
        return replace(self, neurons=neurons, method={**self.method, "weights": rule})

    def scales(self, multiplier: Multiplier, toward: Toward = "zero") -> dict[int, LayerScale]:
        """The multiplier resolved into one :class:`LayerScale` per layer of the circuit. With
        ``toward="mean"`` each neuron ``a`` becomes ``m * a + (1 - m) * mean_neg`` (so ``m = 0`` sets it to
        its mean on the negative prompts) instead of ``m * a``."""
        if toward not in ("zero", "mean"):
            raise ConfigError(f"toward must be 'zero' or 'mean', got {toward!r}")
        grouped: dict[int, tuple[list[int], list[float], list[float]]] = {}
        for neuron, m in zip(self.neurons, self.factors(multiplier), strict=True):
            idx, fac, off = grouped.setdefault(neuron.layer, ([], [], []))
            idx.append(neuron.index)
            fac.append(m)
            off.append((1.0 - m) * neuron.mean_neg)
        return {
            layer: LayerScale(
                torch.tensor(idx, dtype=torch.long),
                torch.tensor(fac, dtype=torch.float32),
                torch.tensor(off, dtype=torch.float32) if toward == "mean" else None,
            )
            for layer, (idx, fac, off) in sorted(grouped.items())
        }

    def apply(self, lm: LoadedModel, multiplier: Multiplier = 0.0, toward: Toward = "zero") -> Handle:
        """Multiply each neuron's activation by ``multiplier`` at every position (``toward="mean"``: move it
        toward its negative-prompt mean instead of toward zero), through hooks, until the returned
        :class:`Handle` (also a context manager) is removed. ``m = 1`` changes nothing, ``0`` ablates.
        Raises :class:`CircuitError` when the circuit was found on a model of another shape."""
        self.check_model(lm)
        scales = {
            layer: (s.index, s.factor, s.offset) for layer, s in self.scales(multiplier, toward).items()
        }
        return scale_neurons(lm, scales, label=f"steer {len(self)} neurons")


def _optional(raw: dict[str, Any], key: str, neuron: int | None, bad: Any) -> Any:
    """The optional ``profile`` of a neuron or ``record`` of a circuit, validated; ``None`` when absent."""
    if raw.get(key) is None:
        return None
    build = NeuronProfile.from_dict if key == "profile" else DiscoveryRecord.from_dict
    try:
        return build(raw[key])
    except (TypeError, KeyError, ValueError, AttributeError) as exc:
        where = f"neuron {neuron} field {key!r}" if neuron is not None else f"field {key!r}"
        raise bad(f"{where} is malformed ({exc})") from exc
