"""An optional capability check through lm-eval (``pip install 'neurogate[eval]'``), steered or not."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from neurogate.models.loading import LoadedModel

logger = logging.getLogger(__name__)

Steering = contextlib.AbstractContextManager[Any]

LM_EVAL_MISSING = (
    "capability check skipped: lm-eval is not installed. Install it with `pip install 'neurogate[eval]'` "
    "(or `pip install lm-eval`) to score the steered model on e.g. an MMLU subset"
)


@dataclass
class CapabilityResult:
    """lm-eval scores by task (``None`` values and ``skipped`` set when the check could not run)."""

    scores: dict[str, float]
    skipped: str | None = None


def capability(
    lm: LoadedModel,
    steering: Steering | None = None,
    *,
    tasks: Sequence[str] = ("mmlu_abstract_algebra",),
    limit: int | None = 20,
    batch_size: int = 8,
) -> CapabilityResult:
    """Run lm-eval tasks on ``lm`` (steered while ``steering`` is open, via the same hooks).

    When ``lm_eval`` is not importable, returns a result with ``skipped`` set to a message saying how to
    install it, and logs that message, instead of failing the whole run.
    """
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
    except ImportError:
        logger.warning(LM_EVAL_MISSING)
        return CapabilityResult({}, skipped=LM_EVAL_MISSING)
    wrapped = HFLM(pretrained=lm.model, tokenizer=lm.tokenizer, batch_size=batch_size)
    with steering if steering is not None else contextlib.nullcontext():
        out = lm_eval.simple_evaluate(model=wrapped, tasks=list(tasks), limit=limit)
    scores: dict[str, float] = {}
    for task, values in (out or {}).get("results", {}).items():
        for key in ("acc,none", "acc_norm,none", "exact_match,none"):
            if key in values:
                scores[task] = float(values[key])
                break
    return CapabilityResult(scores)
