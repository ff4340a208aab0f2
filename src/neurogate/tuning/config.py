"""Tuning settings, declared once: what the search may choose, what it optimises, and its budget."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from neurogate import settings
from neurogate.discovery.circuit import WEIGHTINGS
from neurogate.discovery.scoring import SCORERS
from neurogate.errors import ConfigError
from neurogate.evaluation.settings import EvalSettings
from neurogate.models.zoo import DEFAULT_MODEL
from neurogate.version import __version__

INTERVENTIONS = ("cna", "mean")
EXPORTABLE = ("cna",)
"""Interventions a plain weight edit can serve (a LoRA adapter, a GGUF ``ffn_down`` fold), on every engine:
``cna`` only scales neurons. ``mean`` also writes a constant, ``(1 - m) * mean_neg``, into the
down-projection's output, which the plain formats do not carry (a LoRA bias serves it in PEFT, a control
vector beside the GGUF in llama.cpp: fewer engines, so it stays out of this list)."""
POSITION_MODES = ("last", "post-mean", "post-max")


def parse_duration(text: str | int | float) -> float:
    """``"30m"``, ``"1h30m"``, ``"90s"`` or a number of seconds -> seconds."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        return float(text)
    match = re.fullmatch(
        r"\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s?)?\s*", str(text)
    )
    if not match or not any(match.groups()):
        raise ConfigError(f"a duration looks like 30m, 1h30m or 90s; got {text!r}")
    h, m, s = (float(g) if g else 0.0 for g in match.groups())
    return 3600 * h + 60 * m + s


@dataclass(frozen=True)
class TuneConfig:
    """A search over neuron circuits and how they are steered.

    Search space: ``scorers`` x ``signs`` x ``positions`` x circuit size (a share of all MLP neurons between
    ``min_fraction`` and ``cap``, default 1%; the paper's rule and the seeded points stay at 0.1%) x
    ``interventions`` (``cna``: multiply by m; ``mean``: move toward the benign mean by m; ``exportable``
    keeps only those a LoRA adapter or GGUF fold can serve, :data:`EXPORTABLE`) x m in ``multipliers`` (a
    range) x a profile of m over the window, ``slope`` in ``slopes`` (m runs from ``m - slope/2`` at the
    window's first layer to ``m + slope/2`` at its last; ``(0, 0)`` keeps one m everywhere) x ``weights``
    (every neuron takes m, or each in proportion to its score) x a window of layers. The
    ``ablation-direction`` scorer ranks along ``ablation_direction`` (a directions file such as the study's
    ``ablation-direction.safetensors``, its chosen row) when given, else along the difference of means at
    the best-separating layer of the tuning statistics. Objectives on the tuning
    prompts (``harmful``, ``benign``; use a ``#tune`` half and keep its ``#test`` half for ``final_*``):
    compliance (up), mean benign KL (down) and benign refusal (down), subject to at most ``max_degenerate``
    degenerate replies. The chosen point is the most compliant trial that also keeps the mean benign KL
    under ``max_kl``, the first-token benign KL under ``max_first_kl`` and benign refusal within
    ``max_benign_increase`` of the baseline's (when no trial meets them all: the one that breaks the
    fewest). Choosing the best of many trials on a few dozen prompts favours the luckiest, so the
    ``confirm_top`` most compliant trials inside every constraint are measured again on ``n_confirm`` further
    tuning prompts (those after the first ``n_tune`` of ``harmful``), and the one most compliant over both
    sets is chosen. Trials use ``search_tokens``-token replies judged by ``evaluation.judges`` (``keyword``
    and ``local`` by default; the objective reads the first judge that tells redirects apart, so a redirect
    is a failure); the chosen point is then checked once on the test prompts with
    ``final_tokens``-token replies under every judge in ``final_judges`` (the first gives the headline).
    The final judges are not part of the run id: adding one to a finished search judges its stored replies,
    nothing is generated; neither are the confirmation settings, which change the choice, not the trials.

    Screening (successive halving) makes room for more trials in a budget: each trial is first measured on
    the first ``screen_prompts`` tuning prompts with ``screen_tokens``-token replies (and the benign KL on
    the first ``screen_benign`` benign prompts), and a trial whose screened compliance falls more than
    ``screen_margin`` below the ``ceil(n / screen_eta)``-th best screened compliance of the ``n`` trials
    measured in full so far is screened out (pruned) there; the rest, and the seeded points always, are
    measured in full. ``screen_prompts`` 0 (or at least ``n_tune``) turns screening off; the screening
    settings are part of the run id only while it is on, so a search without it keeps its run id.
    ``screen_batch`` trials are asked of the sampler at once and screened in one batched generation (each
    trial's circuit steering its own rows); 1 screens one trial at a time.

    Before that screen comes a quick one with no generation (:mod:`neurogate.tuning.quick`): one
    teacher-forced pass over the first ``quick_prompts`` tuning prompts whose unsteered reply is a refusal,
    each followed by that reply's first ``quick_tokens`` tokens, and over the first ``quick_benign`` benign
    prompts with theirs. A trial goes on only when it ranks in the first ``1 / quick_eta`` of every trial so
    far on two objectives, the probability that it opens its replies as the refusal did and the benign KL
    (non-dominated sorting: asynchronous successive halving on a front), and its first-token benign KL there
    is at most twice ``max_first_kl``; seeded points always go on. ``quick_prompts`` 0 turns it off (its
    settings then leave the run id).
    """

    model: str = f"zoo:{DEFAULT_MODEL}"
    dtype: str = "auto"
    device: str = "auto"
    positive: str = "builtin:harmful"
    negative: str = "builtin:benign"
    harmful: str = "builtin:harmful-eval#tune"
    benign: str = "builtin:benign-eval#tune"
    final_harmful: str = "builtin:harmful-eval#test"
    final_benign: str = "builtin:benign-eval#test"
    n_tune: int = 48
    n_benign: int = 24
    n_confirm: int = 48
    confirm_top: int = 3
    n_final: int | None = 100
    n_final_benign: int | None = 40
    scorers: tuple[str, ...] = (
        "mean-diff",
        "effect-size",
        "layer-normalised",
        "direction",
        "ablation-direction",
    )
    signs: tuple[str, ...] = ("both", "positive")
    positions: tuple[str, ...] = POSITION_MODES
    interventions: tuple[str, ...] = INTERVENTIONS
    weights: tuple[str, ...] = WEIGHTINGS
    cap: float = 0.01
    min_fraction: float = 0.00002
    multipliers: tuple[float, float] = (-2.0, 0.5)
    slopes: tuple[float, float] = (-1.0, 1.0)
    exportable: bool = False
    ablation_direction: str | None = None
    max_degenerate: float = 0.05
    max_kl: float = 0.1
    max_first_kl: float = 0.3
    max_benign_increase: float = 0.02
    search_tokens: int = 48
    final_tokens: int = 128
    screen_prompts: int = 8
    screen_tokens: int = 24
    screen_benign: int = 4
    screen_eta: int = 3
    screen_margin: float = 0.0
    screen_batch: int = 4
    quick_prompts: int = 8
    quick_tokens: int = 2
    quick_benign: int = 4
    quick_eta: int = 8
    budget: float = 1800.0
    max_trials: int = 200
    seed: int = 0
    universal_filter: bool = True
    evaluation: EvalSettings = field(default_factory=lambda: EvalSettings(judges=("keyword", "local")))
    final_judges: tuple[str, ...] = ("local", "keyword")

    def __post_init__(self) -> None:
        for name, allowed in (
            ("scorers", tuple(SCORERS)),
            ("signs", ("both", "positive", "negative")),
            ("positions", POSITION_MODES),
            ("interventions", INTERVENTIONS),
            ("weights", WEIGHTINGS),
        ):
            values = settings.as_tuple(name, getattr(self, name))
            bad = [v for v in values if v not in allowed]
            if bad or not values:
                raise ConfigError(
                    f"{name} must be a non-empty list from {', '.join(allowed)}; got {list(values)}"
                )
            object.__setattr__(self, name, values)
        settings.number("cap", self.cap, low=0.0, high=1.0, low_open=True)
        settings.number("min_fraction", self.min_fraction, low=0.0, low_open=True)
        if self.min_fraction > self.cap:
            raise ConfigError(
                f"cap ({self.cap:g}) must be at least min_fraction ({self.min_fraction:g}), the smallest "
                "size the search tries"
            )
        if self.exportable:
            kept = tuple(i for i in self.interventions if i in EXPORTABLE)
            if not kept:
                raise ConfigError(
                    f"exportable searches only {', '.join(EXPORTABLE)}; interventions lists none of them "
                    f"({', '.join(self.interventions)})"
                )
            object.__setattr__(self, "interventions", kept)
        slo, shi = (settings.number("slopes", v) for v in settings.as_tuple("slopes", self.slopes))
        if slo > shi:
            raise ConfigError(f"slopes is a range (low, high) with low <= high, got {self.slopes}")
        object.__setattr__(self, "slopes", (slo, shi))
        if self.ablation_direction is not None and not isinstance(self.ablation_direction, str):
            raise ConfigError(
                f"ablation_direction is a directions file path, got {self.ablation_direction!r}"
            )
        lo, hi = (
            settings.number("multipliers", v) for v in settings.as_tuple("multipliers", self.multipliers)
        )
        if not lo < hi:
            raise ConfigError(f"multipliers is a range (low, high) with low < high, got {self.multipliers}")
        object.__setattr__(self, "multipliers", (lo, hi))
        for name in ("max_degenerate", "max_kl", "max_first_kl", "max_benign_increase"):
            settings.number(name, getattr(self, name), low=0.0)
        for name in ("n_tune", "n_benign", "search_tokens", "final_tokens", "max_trials", "confirm_top"):
            settings.whole(name, getattr(self, name))
        settings.whole("n_confirm", self.n_confirm, minimum=0)
        for name in ("screen_prompts", "screen_benign"):
            settings.whole(name, getattr(self, name), minimum=0)
        settings.whole("screen_tokens", self.screen_tokens)
        settings.whole("screen_eta", self.screen_eta)
        settings.whole("screen_batch", self.screen_batch)
        for name in ("quick_prompts", "quick_benign"):
            settings.whole(name, getattr(self, name), minimum=0)
        settings.whole("quick_tokens", self.quick_tokens)
        settings.whole("quick_eta", self.quick_eta)
        settings.number("screen_margin", self.screen_margin, low=0.0, high=1.0)
        for name in ("n_final", "n_final_benign"):
            settings.whole(name, getattr(self, name), optional=True)
        object.__setattr__(self, "budget", parse_duration(self.budget))
        if not settings.as_tuple("final_judges", self.final_judges):
            raise ConfigError("final_judges must name at least one judge (--final-judge keyword,local)")
        final = replace(self.evaluation, judges=tuple(self.final_judges))
        object.__setattr__(self, "final_judges", final.judges)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, base: TuneConfig | None = None) -> TuneConfig:
        return settings.build(cls, data, base=base, where="tune")

    def to_dict(self) -> dict[str, Any]:
        return settings.to_dict(self)

    @property
    def screening(self) -> bool:
        """Whether trials are screened first: a screen of some but not all of the tuning prompts."""
        return 0 < self.screen_prompts < self.n_tune

    @property
    def quick(self) -> bool:
        """Whether trials take the quick screen (no generation) first."""
        return self.quick_prompts > 0

    def run_id(self, prompt_digests: Mapping[str, str]) -> str:
        """``tune-<model slug>-<hash of the search settings, prompt contents and version>``; the budget and
        the trial cap are left out, so a longer search resumes the same study, and so are the final judges and
        the confirmation settings (and the screening settings while screening is off)."""
        # screen_batch is left out too: a batched screen writes each trial the replies it gets alone (the
        # row-steered generation equals one generation per circuit), so it changes which points the
        # sampler proposes together, never what a trial measures; a search resumes under another batch
        skip: tuple[str, ...] = (
            "budget",
            "max_trials",
            "final_judges",
            "n_confirm",
            "confirm_top",
            "screen_batch",
        )
        if not self.screening:
            skip += tuple(k for k in self.to_dict() if k.startswith("screen_"))
        if not self.quick:
            skip += tuple(k for k in self.to_dict() if k.startswith("quick_"))
        data = {k: v for k, v in self.to_dict().items() if k not in skip}
        key = settings.digest({"config": data, "prompts": dict(prompt_digests), "version": __version__}, 10)
        slug = re.sub(r"[^a-zA-Z0-9.]+", "-", self.model.split("/")[-1].removeprefix("zoo:")).strip("-")
        return f"tune-{slug[:40]}-{key}"
