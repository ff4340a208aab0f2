"""Evaluation settings, declared and validated once: how replies are generated and judged."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from neurogate import settings
from neurogate.errors import ConfigError
from neurogate.models.inputs import BatchSize, check_batch_size


@dataclass(frozen=True)
class EvalSettings:
    """Shared by every condition of a run. ``max_new_tokens``: greedy reply length; ``kl_tokens``: reply
    positions the mean KL averages over; ``judge``: the refusal judge's registry name, with
    ``judge_model``/``judge_url`` for judges that call a model (an OpenAI-compatible endpoint)."""

    max_new_tokens: int = 64
    batch_size: BatchSize = "auto"
    system_prompt: str | None = None
    chat: bool = True
    kl_tokens: int = 16
    metric_batch_size: int = 8
    judge: str = "keyword"
    judge_model: str | None = None
    judge_url: str | None = None

    def __post_init__(self) -> None:
        settings.whole("max_new_tokens", self.max_new_tokens)
        settings.whole("kl_tokens", self.kl_tokens)
        settings.whole("metric_batch_size", self.metric_batch_size)
        check_batch_size(self.batch_size)
        if not isinstance(self.judge, str) or not self.judge:
            raise ConfigError(f"judge must be a judge name such as 'keyword', got {self.judge!r}")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, base: EvalSettings | None = None) -> EvalSettings:
        return settings.build(cls, data, base=base, where="evaluation")

    def to_dict(self) -> dict[str, Any]:
        return settings.to_dict(self)

    def judge_options(self) -> dict[str, Any]:
        """Keyword options for :func:`neurogate.evaluation.judges.get_judge`."""
        opts = {"model": self.judge_model, "base_url": self.judge_url}
        return {k: v for k, v in opts.items() if v is not None}
