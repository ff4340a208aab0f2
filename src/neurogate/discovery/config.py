"""Discovery settings, declared and validated once: what the CLI, the study and ``discover()`` share."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from neurogate import settings
from neurogate.defaults import DEFAULT_SCORE
from neurogate.discovery.capture import THINKING, CaptureOptions, Positions, ThinkingPosition
from neurogate.discovery.circuit import WEIGHTINGS
from neurogate.discovery.scoring import SIGNS, Sign, get_scorer
from neurogate.discovery.selection import DEFAULT_FRACTION, top_count
from neurogate.errors import ConfigError
from neurogate.models.inputs import BatchSize, check_batch_size

# The paper's selection: |mean difference| at the last prompt token, every neuron ablated alike.
PAPER_RULE: dict[str, Any] = {"score": "mean-diff", "sign": "both", "positions": "last", "weights": "uniform"}


@dataclass(frozen=True)
class DiscoverConfig:
    """How a circuit is found.

    ``fraction``: share of ALL MLP neurons to keep (default 0.001 = 0.1%), or ``top_k`` neurons exactly
    (give at most one). ``score``: a scorer name from :data:`neurogate.discovery.scoring.SCORERS`
    (default ``direction``; the paper's rule is :meth:`paper_rule`, see docs/results.md for the choice).
    ``sign``: rank by the scorer's signed value's size (``both``), or keep only neurons that are higher on
    the positive prompts (``positive``) or on the negative ones (``negative``). ``positions``: which prompt
    tokens are read (``last``, the paper; ``post-mean``/``post-max``: the template's post-instruction
    tokens, averaged or maxed). ``thinking``: for a reasoning template, read the prompt ``before`` the
    thinking block (the default: as the template ends it) or ``after`` a closed, empty block, where the
    answer starts (:mod:`neurogate.discovery.capture`; other models accept only ``before``).
    ``exclude_layers``: layers never selected (negative indices count from the
    end).
    ``universal_filter``/``universal_threshold``: skip neurons in the top ``fraction`` of at least that share
    of the battery's unrelated contrasts. ``chat``/``system_prompt``: how prompts are formatted.
    ``weights``: how much of the intervention each neuron takes (``uniform``, the paper; ``proportional``
    to the size of its score, see :meth:`Circuit.weighted`).
    """

    fraction: float | None = None
    top_k: int | None = None
    score: str = DEFAULT_SCORE
    sign: Sign = "both"
    positions: Positions = "last"
    exclude_layers: tuple[int, ...] = ()
    universal_filter: bool = True
    universal_threshold: float = 0.8
    batch_size: BatchSize = "auto"
    system_prompt: str | None = None
    chat: bool = True
    weights: str = "uniform"
    thinking: ThinkingPosition = "before"

    def __post_init__(self) -> None:
        if self.fraction is not None and self.top_k is not None:
            raise ConfigError("give either a fraction or top_k, not both")
        if self.fraction is not None:
            settings.number("fraction", self.fraction, low=0.0, high=1.0, low_open=True)
        settings.whole("top_k", self.top_k, optional=True)
        get_scorer(self.score)
        if self.sign not in SIGNS:
            raise ConfigError(f"sign must be one of {', '.join(SIGNS)}, got {self.sign!r}")
        if self.positions not in ("last", "post-mean", "post-max"):
            raise ConfigError(f"positions must be last, post-mean or post-max, got {self.positions!r}")
        layers = settings.as_tuple("exclude_layers", self.exclude_layers)
        for layer in layers:
            if isinstance(layer, bool) or not isinstance(layer, int):
                raise ConfigError(f"exclude_layers must hold layer numbers, got {layer!r}")
        object.__setattr__(self, "exclude_layers", layers)
        settings.number("universal_threshold", self.universal_threshold, low=0.0, high=1.0, low_open=True)
        check_batch_size(self.batch_size)
        if self.thinking not in THINKING:
            raise ConfigError(f"thinking must be one of {', '.join(THINKING)}, got {self.thinking!r}")
        if self.weights not in WEIGHTINGS:
            raise ConfigError(f"weights must be one of {', '.join(WEIGHTINGS)}, got {self.weights!r}")

    def paper_rule(self) -> DiscoverConfig:
        """This config with the paper's selection rule: mean difference at the last prompt token, both signs,
        every neuron taking the same multiplier."""
        return replace(self, **PAPER_RULE)

    def is_paper_rule(self) -> bool:
        """Whether this config selects neurons exactly as the paper does."""
        return self.paper_rule() == self

    @property
    def universal_fraction(self) -> float:
        """The share used for the universal-neuron battery's own top sets."""
        return self.fraction if self.fraction is not None else DEFAULT_FRACTION

    def k(self, n_neurons: int) -> int:
        """How many neurons this config keeps on a model with ``n_neurons`` MLP neurons."""
        return top_count(n_neurons, self.fraction, self.top_k)

    def capture(self, progress: bool = True) -> CaptureOptions:
        return CaptureOptions(
            batch_size=self.batch_size,
            system_prompt=self.system_prompt,
            chat=self.chat,
            progress=progress,
            positions=self.positions,
            thinking=self.thinking,
        )

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, base: DiscoverConfig | None = None) -> DiscoverConfig:
        return settings.build(cls, data, base=base, where="discovery")

    def to_dict(self) -> dict[str, Any]:
        return settings.to_dict(self)
