"""Evaluation settings, declared and validated once: how replies are generated and judged."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from neurogate import settings
from neurogate.errors import ConfigError
from neurogate.evaluation.judges import check_judge_name
from neurogate.evaluation.judges.local import DEFAULT_MODEL as DEFAULT_JUDGE_MODEL
from neurogate.evaluation.judges.rubrics import RUBRICS
from neurogate.models.inputs import BatchSize, check_batch_size

#: Who may generate the replies (:mod:`neurogate.evaluation.generators`).
#: Who generates replies (each has a generator in :data:`neurogate.evaluation.generators.GENERATORS`).
ENGINES = ("local", "openai")


@dataclass(frozen=True)
class EvalSettings:
    """Shared by every condition of a run. ``max_new_tokens``: greedy reply length; ``kl_tokens``: reply
    positions the mean KL averages over; ``judges``: registry names of the judges that classify every
    reply, the primary (headline) judge first. ``local_judge_model``: the model the ``local`` judge runs
    (default: the one chosen on the labelled judge set, see docs/judges.md; ``None``: the evaluated model
    itself, unsteered; the evaluated model is reused whenever it is the judge model);
    ``local_judge_rubric``: the question it reads (``attempt``: was the task attempted; ``serves``: does the
    content serve the request, which also tells redirects apart; :mod:`neurogate.evaluation.judges.rubrics`);
    ``endpoint_url``/``endpoint_model``: the server the ``endpoint`` judge asks. ``engine``: who generates
    the replies: ``local`` (neurogate, with hooks) or ``openai`` (an OpenAI-compatible server at
    ``engine_url``, e.g. vLLM started by ``neurogate serve``, that serves the unsteered model as ``base``
    and each condition under its key, such as ``cna-m0``). KL, perplexity and the judges always run on the
    local model. ``reply_perplexity``: also score each harmful reply's tokens under the unsteered model
    (off by default: it measures how far the text moved from what the model would write, content change
    as much as damage, and it costs a teacher-forced pass over every reply; the corpus perplexity and KL
    are the damage measures). ``max_thinking_tokens``: for a reasoning model (a chat template with a
    thinking block, :mod:`neurogate.models.thinking`), the thinking budget; ``max_new_tokens`` is then the
    answer's budget after the block, and a block that outruns its budget is closed for the model
    (:mod:`neurogate.models.thinking_generation`); other models never read it. The openai engine cannot
    close a block, so it asks for both budgets together."""

    max_new_tokens: int = 64
    batch_size: BatchSize = "auto"
    system_prompt: str | None = None
    chat: bool = True
    kl_tokens: int = 16
    metric_batch_size: int = 8
    judges: tuple[str, ...] = ("keyword",)
    local_judge_model: str | None = DEFAULT_JUDGE_MODEL
    local_judge_rubric: str = "attempt"
    endpoint_url: str | None = None
    endpoint_model: str | None = None
    engine: str = "local"
    engine_url: str | None = None
    reply_perplexity: bool = False
    max_thinking_tokens: int = 512

    def __post_init__(self) -> None:
        settings.whole("max_new_tokens", self.max_new_tokens)
        settings.whole("max_thinking_tokens", self.max_thinking_tokens)
        settings.whole("kl_tokens", self.kl_tokens)
        settings.whole("metric_batch_size", self.metric_batch_size)
        check_batch_size(self.batch_size)
        judges = settings.as_tuple("judges", self.judges)
        if not judges or not all(isinstance(j, str) and j for j in judges):
            raise ConfigError(
                f"judges must be a list of judge names such as ['keyword'], got {self.judges!r}"
            )
        for name in judges:
            check_judge_name(name)  # an unknown judge fails here, not after generation
        object.__setattr__(self, "judges", tuple(dict.fromkeys(judges)))
        if self.local_judge_rubric not in RUBRICS:
            raise ConfigError(
                f"local_judge_rubric must be one of {', '.join(RUBRICS)}, got {self.local_judge_rubric!r}"
            )
        if self.engine not in ENGINES:
            raise ConfigError(f"engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        if self.engine == "openai" and not self.engine_url:
            raise ConfigError(
                "the openai engine needs the server's URL (engine_url / --engine-url), e.g. "
                "http://127.0.0.1:8000/v1 as printed by `neurogate serve`"
            )

    @property
    def judge(self) -> str:
        """The primary judge (its verdicts are the headline numbers)."""
        return self.judges[0]

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, base: EvalSettings | None = None) -> EvalSettings:
        return settings.build(cls, data, base=base, where="evaluation")

    def to_dict(self) -> dict[str, Any]:
        return settings.to_dict(self)
