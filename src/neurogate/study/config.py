"""Study settings, declared once: the model, the prompt sets, a nested :class:`DiscoverConfig` and
:class:`EvalSettings`, and what the study evaluates. Built from defaults, a TOML file and CLI flags."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from neurogate import settings
from neurogate.discovery.circuit import Circuit
from neurogate.discovery.config import DiscoverConfig
from neurogate.errors import ConfigError
from neurogate.evaluation.conditions import check_kinds
from neurogate.evaluation.settings import EvalSettings
from neurogate.models.zoo import DEFAULT_MODEL
from neurogate.prompts.sources import PromptSources
from neurogate.study.front_plan import check_fronts
from neurogate.version import __version__

#: Settings that moved into a nested table, with their new place (old flat TOML keys are refused by name).
MOVED: dict[str, str] = {
    "fraction": "discovery.fraction",
    "universal_filter": "discovery.universal_filter",
    "max_new_tokens": "evaluation.max_new_tokens",
    "kl_tokens": "evaluation.kl_tokens",
    "batch_size": "evaluation.batch_size (and discovery.batch_size)",
    "judge": "evaluation.judges (a list; the first is the headline judge)",
    "system_prompt": "evaluation.system_prompt (and discovery.system_prompt)",
    "chat": "evaluation.chat (and discovery.chat)",
    "layer_contrasts": "controls (the battery contrasts whose circuits are profiled and ablated)",
    **{
        k: f"prompts.{k}"
        for k in ("positive", "negative", "eval", "benign", "n_discovery", "n_eval", "n_benign")
    },
}


@dataclass(frozen=True)
class StudyConfig:
    """Everything that decides a study's numbers (and so its run id).

    What is evaluated: ``methods`` at ``multipliers`` (neuron kinds) and ``strengths`` (residual kinds),
    except that with ``match_caa`` CAA is evaluated only at the strength whose refusal matches CNA's (found
    by bisection on the ``validation`` prompts, both methods read there; set ``match_caa = false`` to
    sweep it over ``strengths`` instead); the
    specificity controls (equal-size circuits of the battery ``controls`` contrasts, and circuits matched
    to the main one in per-layer counts and activation size, one per ``random_seeds``), all at ``m = 0``;
    the ``sparsity`` curve (off by default, as each size is one more condition: ``neurogate tune``
    reports the curve of a tuned rule, and e.g. ``sparsity = [0.0001, 0.001, 0.01]`` adds it here); and
    each of ``circuits`` (circuit files, e.g. from ``neurogate tune``) at the intervention it records
    (``cna m=0`` when it records none), beside the discovered circuit; and the methods' ``fronts``
    (:mod:`neurogate.study.fronts`: each method over its own scale, on the first ``front_prompts`` harmful
    prompts, a front stopping once its compliance reaches ``front_saturation``; ``"full"`` traces more
    points, ``"off"`` none). With
    ``select_direction`` the ablation direction and CAA's vector are each chosen by their effect on
    ``validation`` held-out discovery prompts per side (as Arditi et al. do), among the same candidates;
    otherwise CAA's layer is the best-separating one and ablation uses it too. "No effect"
    claims use ``equivalence_margin``, fixed before the run. ``corpus``: the benign text whose perplexity
    is the capability proxy (``builtin`` or a text file, one passage a line).

    Defaults: 100 harmful + 40 benign evaluation prompts with near-duplicates of discovery prompts dropped,
    128-token greedy replies, judged by every offline judge (``local`` for the headline: it tells
    redirects apart and scored best on blind steered replies, docs/judges.md; then ``keyword``;
    :meth:`quick` keeps ``keyword`` alone). ``discovery`` and ``evaluation`` must agree on how
    prompts are formatted (``chat``, ``system_prompt``).
    """

    model: str = f"zoo:{DEFAULT_MODEL}"
    dtype: str = "auto"
    device: str = "auto"
    prompts: PromptSources = field(default_factory=PromptSources)
    discovery: DiscoverConfig = field(default_factory=DiscoverConfig)
    evaluation: EvalSettings = field(
        default_factory=lambda: EvalSettings(max_new_tokens=128, judges=("local", "keyword"))
    )
    methods: tuple[str, ...] = ("cna", "caa", "ablation")
    multipliers: tuple[float, ...] = (0.0,)
    strengths: tuple[float, ...] = (1.0,)
    match_caa: bool = True
    select_direction: bool = True
    validation: int = 16
    controls: tuple[str, ...] = ("cooking-vs-gardening", "french-vs-english")
    random_seeds: tuple[int, ...] = (0, 1, 2)
    sparsity: tuple[float, ...] = ()
    equivalence_margin: float = 0.10
    corpus: str | None = "builtin"
    examples: int = 4
    capability: tuple[str, ...] = ()
    capability_limit: int = 20
    circuits: tuple[str, ...] = ()
    fronts: str = "default"
    front_prompts: int | None = 50
    front_saturation: float = 0.95

    def __post_init__(self) -> None:
        object.__setattr__(self, "methods", check_kinds(settings.as_tuple("methods", self.methods)))
        for name in ("multipliers", "strengths", "sparsity"):
            values = tuple(settings.number(name, v) for v in settings.as_tuple(name, getattr(self, name)))
            object.__setattr__(self, name, values)
        for f in self.sparsity:
            settings.number("sparsity", f, low=0.0, high=1.0, low_open=True)
        object.__setattr__(self, "random_seeds", settings.as_tuple("random_seeds", self.random_seeds))
        object.__setattr__(self, "controls", settings.as_tuple("controls", self.controls))
        settings.whole("validation", self.validation, minimum=2)
        settings.number("equivalence_margin", self.equivalence_margin, low=0.0, high=1.0, low_open=True)
        object.__setattr__(self, "capability", settings.as_tuple("capability", self.capability))
        settings.whole("examples", self.examples, minimum=0)
        settings.whole("capability_limit", self.capability_limit)
        object.__setattr__(self, "circuits", settings.as_tuple("circuits", self.circuits))
        check_fronts(self.fronts)
        if self.front_prompts is not None:
            settings.whole("front_prompts", self.front_prompts, minimum=2)
        settings.number("front_saturation", self.front_saturation, low=0.0, high=1.0, low_open=True)
        missing = [c for c in self.circuits if not Path(c).is_file()]
        if missing:
            raise ConfigError(
                f"circuit file(s) not found: {', '.join(missing)}; give the path of a circuit JSON (from "
                "`neurogate discover` or `neurogate tune`)"
            )
        for c in self.circuits:  # a file that is not a circuit fails here, not after discovery
            Circuit.load(c)
        for name in ("chat", "system_prompt"):
            if getattr(self.discovery, name) != getattr(self.evaluation, name):
                raise ConfigError(
                    f"discovery.{name} and evaluation.{name} differ ({getattr(self.discovery, name)!r} vs "
                    f"{getattr(self.evaluation, name)!r}); a circuit must be used on prompts formatted as it "
                    "was found, so set both to the same value"
                )

    @property
    def fraction(self) -> float:
        """The main circuit's share of all MLP neurons."""
        return self.discovery.universal_fraction

    @classmethod
    def quick(cls, **overrides: Any) -> StudyConfig:
        """A reduced study for demos: 25.7 minutes on the default model on a 2-core Intel Xeon (bf16) with
        one other busy process, since CAA's direction is chosen by effect like the ablation direction's
        (about 21 minutes before that, on an idle AMD EPYC)."""
        base = cls(
            prompts=PromptSources(n_eval=48, n_benign=24),
            evaluation=EvalSettings(max_new_tokens=64, kl_tokens=8),
            sparsity=(0.0001, 0.001),
            random_seeds=(0,),
            controls=("cooking-vs-gardening",),
        )
        return cls.from_mapping(overrides, base=base)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, base: StudyConfig | None = None) -> StudyConfig:
        """Build from a mapping (e.g. a TOML table), rejecting unknown keys with a "did you mean"."""
        for key in data:
            if key in MOVED:
                raise ConfigError(f"the study setting {key!r} moved: set {MOVED[key]} instead")
        return settings.build(cls, data, base=base, where="study")

    @classmethod
    def from_toml(cls, path: str | Path, *, base: StudyConfig | None = None) -> StudyConfig:
        """Read settings from a TOML file (top level or a ``[study]`` table, with ``[discovery]`` and
        ``[evaluation]`` sub-tables)."""
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {str(p)!r} does not exist")
        try:
            data = tomllib.loads(p.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{p} is not valid TOML ({exc})") from exc
        return cls.from_mapping(data.get("study", data), base=base)

    def to_dict(self) -> dict[str, Any]:
        return settings.to_dict(self)

    def run_id(self, prompt_digests: Mapping[str, str]) -> str:
        """``<model slug>-<hash>``: the hash covers the settings, the content of every prompt set and the
        package version, so the same inputs map to the same run and anything else to a new one."""
        key = settings.digest(
            {"config": self.to_dict(), "prompts": dict(prompt_digests), "version": __version__}, 10
        )
        slug = re.sub(r"[^a-zA-Z0-9.]+", "-", self.model.split("/")[-1].removeprefix("zoo:")).strip("-")
        return f"{slug[:40]}-{key}"
