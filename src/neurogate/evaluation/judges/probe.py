"""A linear readout for the local judge: logistic regression on the judge model's final hidden state at
the answer position, in place of the two answer letters' probabilities.

The judge model reads the same rubric prompt either way. Its next-token choice between "A" and "B" is a
fixed linear map of that hidden state, chosen by the model's training rather than by the task; a probe
fitted on hand-labelled replies (``tests/data/judge_set.jsonl``) reads the same state with a map fitted to
the task. A probe belongs to one judge model (its weights digest) and one prompt layout (rubric version,
worked examples, truncation lengths): anywhere else its inputs mean something else, so
:meth:`JudgeProbe.matches` refuses it.

Probes that ship with neurogate live in ``probes/*.json`` beside this module; ``bench/judge_probe.py``
rebuilds them from the labelled set.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from neurogate.atomic import write_json_atomic
from neurogate.errors import ConfigError
from neurogate.prompts.leakage import normalize

FORMAT = "neurogate-judge-probe-1"
SHIPPED = Path(__file__).resolve().parent / "probes"
#: The fields of a local judge's scoring configuration that a probe must share to apply.
LAYOUT = ("weights", "rubric", "shots", "max_prompt_tokens", "max_reply_tokens")


@dataclass(frozen=True)
class JudgeProbe:
    """P(refusal) = sigmoid(((h - mean) / scale) . weight + bias) for a final hidden state ``h``.

    ``model``, ``weights``, ``rubric``, ``shots``, ``max_prompt_tokens``, ``max_reply_tokens``: the local
    judge it was fitted for (``weights`` is :func:`neurogate.models.loading.weights_digest`); ``dtype``:
    the judge model's dtype when the features were read; ``l2``: the ridge penalty it was fitted with;
    ``trained_on``: where its labels came from (set, digest, splits, counts); ``fitted_prompts``: a
    digest (:func:`prompt_key`) of every request among its fitting rows, so that a judge never scores a
    pair its probe was fitted on without saying so (:meth:`fitted_on`).
    """

    model: str
    weights: str
    rubric: str
    shots: int
    max_prompt_tokens: int
    max_reply_tokens: int
    dtype: str
    l2: float
    mean: list[float]
    scale: list[float]
    weight: list[float]
    bias: float
    trained_on: dict[str, Any] = field(default_factory=dict)
    fitted_prompts: list[str] = field(default_factory=list)

    def fitted_on(self, prompts: Sequence[str]) -> list[bool]:
        """For each request, whether the probe was fitted on a reply to it (the same normalised text)."""
        fitted = set(self.fitted_prompts)
        return [prompt_key(p) in fitted for p in prompts]

    def __post_init__(self) -> None:
        n = len(self.weight)
        if n == 0 or len(self.mean) != n or len(self.scale) != n:
            raise ConfigError(
                f"a judge probe needs mean, scale and weight of one length, got "
                f"{len(self.mean)}, {len(self.scale)} and {n}"
            )
        if any(not s > 0 for s in self.scale):
            raise ConfigError("a judge probe's scale values must all be positive")

    @property
    def id(self) -> str:
        """A short digest of the fitted numbers (part of the verdict cache key)."""
        numbers = json.dumps([self.mean, self.scale, self.weight, self.bias])
        return hashlib.sha256(numbers.encode()).hexdigest()[:12]

    def matches(self, scoring: Mapping[str, Any]) -> bool:
        """Whether this probe was fitted for the judge whose scoring configuration is ``scoring``."""
        return all(scoring.get(key) == getattr(self, key) for key in LAYOUT)

    def mismatch(self, scoring: Mapping[str, Any]) -> str:
        """What differs between this probe's judge and ``scoring`` (empty when it matches)."""
        return ", ".join(
            f"{key} {getattr(self, key)!r} vs {scoring.get(key)!r}"
            for key in LAYOUT
            if scoring.get(key) != getattr(self, key)
        )

    def refusal(self, hidden: torch.Tensor) -> list[float]:
        """P(refusal) for final hidden states ``[rows, d_model]`` (computed in float64)."""
        if hidden.ndim != 2 or hidden.shape[1] != len(self.weight):
            raise ConfigError(
                f"this judge probe reads hidden states of width {len(self.weight)}, "
                f"got shape {tuple(hidden.shape)}"
            )
        return ProbeFit(self.mean, self.scale, self.weight, self.bias).refusal(hidden)

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, **asdict(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "judge probe") -> JudgeProbe:
        if data.get("format") != FORMAT:
            raise ConfigError(f"{where} is not a {FORMAT} file (format {data.get('format')!r})")
        try:
            fields = {k: v for k, v in data.items() if k != "format"}
            probe = cls(**fields)
            # the numbers must be numbers (JSON written by hand or by another tool may not be)
            [float(x) for x in (*probe.mean, *probe.scale, *probe.weight, probe.bias)]
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{where} is not a valid judge probe: {exc}") from exc
        return probe

    def save(self, path: str | os.PathLike[str]) -> None:
        write_json_atomic(Path(path), self.to_dict(), indent=None)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> JudgeProbe:
        source = Path(path)
        try:
            data = json.loads(source.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read judge probe {source}: {exc.strerror or exc}") from exc
        except ValueError as exc:
            raise ConfigError(f"judge probe {source} is not JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"judge probe {source} must hold a JSON object")
        return cls.from_dict(data, where=f"judge probe {source}")


def prompt_key(prompt: str) -> str:
    """A short digest of a request's normalised text (case, spacing and punctuation ignored)."""
    return hashlib.sha256(normalize(prompt).encode("utf-8")).hexdigest()[:16]


@functools.cache
def shipped_probes() -> tuple[JudgeProbe, ...]:
    """The probes that ship with neurogate (``probes/*.json`` beside this module), in name order."""
    if not SHIPPED.is_dir():
        return ()
    return tuple(JudgeProbe.load(path) for path in sorted(SHIPPED.glob("*.json")))


def find_probe(scoring: Mapping[str, Any]) -> JudgeProbe | None:
    """The first shipped probe fitted for the judge whose scoring configuration is ``scoring``."""
    return next((p for p in shipped_probes() if p.matches(scoring)), None)


@dataclass(frozen=True)
class ProbeFit:
    """The fitted numbers of :func:`fit_probe` (feature standardisation, then the linear map)."""

    mean: list[float]
    scale: list[float]
    weight: list[float]
    bias: float

    def refusal(self, hidden: torch.Tensor) -> list[float]:
        """P(refusal) for hidden states ``[rows, d]`` (computed in float64)."""
        h = hidden.detach().to("cpu", torch.float64)
        z = (h - torch.tensor(self.mean, dtype=torch.float64)) / torch.tensor(self.scale, dtype=torch.float64)
        logit = z @ torch.tensor(self.weight, dtype=torch.float64) + self.bias
        return [float(p) for p in torch.sigmoid(logit)]


def fit_probe(hidden: torch.Tensor, refusal: Sequence[bool], l2: float = 0.01) -> ProbeFit:
    """Logistic regression of ``refusal`` on standardised ``hidden`` ``[rows, d]``: mean cross-entropy plus
    ``l2`` times the squared norm of the weights, minimised by L-BFGS in float64 from zero (deterministic
    for given inputs). Features are standardised by their mean and standard deviation (floored at 1e-6) so
    that one penalty suits every feature whatever its scale."""
    if hidden.ndim != 2 or hidden.shape[0] != len(refusal):
        raise ConfigError(f"fit_probe needs one label per row, got {len(refusal)} for {tuple(hidden.shape)}")
    if l2 < 0:
        raise ConfigError(f"the probe's l2 penalty must be at least 0, got {l2}")
    y = torch.tensor([1.0 if r else 0.0 for r in refusal], dtype=torch.float64)
    if len(y) < 2 or y.min() == y.max():
        raise ConfigError("fit_probe needs at least one refusal and one compliance to learn from")
    x = hidden.detach().to("cpu", torch.float64)
    mean = x.mean(0)
    scale = x.std(0).clamp_min(1e-6) if len(x) > 1 else torch.ones_like(mean)
    z = (x - mean) / scale
    w = torch.zeros(z.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=500, tolerance_grad=1e-9, line_search_fn="strong_wolfe")

    def loss() -> torch.Tensor:
        opt.zero_grad()
        value = torch.nn.functional.binary_cross_entropy_with_logits(z @ w + b, y) + l2 * (w * w).sum()
        value.backward()  # type: ignore[no-untyped-call]
        return value

    with torch.enable_grad():
        opt.step(loss)  # type: ignore[no-untyped-call]
    return ProbeFit(
        mean=[float(v) for v in mean],
        scale=[float(v) for v in scale],
        weight=[float(v) for v in w.detach()],
        bias=float(b.detach()),
    )
