"""Generation for reasoning models: a token budget for the thinking block and another for the answer.

:func:`generate_thinking` runs in two passes of :func:`~neurogate.models.generation.generate_tokens`:

1. every prompt gets up to ``max_thinking_tokens`` new tokens. A reply that closes its block within them
   keeps what it wrote after the close marker as the start of its answer; a reply that ends its turn
   while still thinking has no answer; a reply still thinking when the budget runs out has its block
   closed for it (the close marker and a blank line are appended, as the Qwen3 template writes an empty
   block);
2. every reply whose answer is not finished continues, from its prompt and everything so far as token
   ids (no round trip through text), until its answer holds ``max_new_tokens`` tokens or it ends its turn.

A reply that never opens a block (a template where the model writes ``<think>`` itself, and did not)
is all answer, under the answer budget. The returned :class:`Generation` keeps every generated token
(thinking, close marker, answer) in ``token_ids``, and its ``text`` is ``<open>thinking<close>answer``
(``<open>thinking`` while unfinished, the answer alone without a block), which
:func:`neurogate.models.thinking.split_reply` splits again. Greedy decoding gives each reply the tokens a
single pass with a forced close would give.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from neurogate.errors import ConfigError
from neurogate.models.generation import Generation, generate_tokens
from neurogate.models.hooks import Attachable
from neurogate.models.inputs import encode, template_prefix
from neurogate.models.loading import LoadedModel
from neurogate.models.row_gains import RowMaps
from neurogate.models.thinking import ThinkingFormat

#: What a forced close appends after the thinking so far (the close marker, then the blank line the
#: templates put before the answer).
FORCED_CLOSE = "\n{close}\n\n"


@dataclass
class _Row:
    """One reply in the making: thinking ids (``None``: no block), the ids that close it (the model's own
    close marker or a forced one), the answer so far and whether it is done."""

    thinking: list[int] | None
    close: list[int] = field(default_factory=list)
    answer: list[int] = field(default_factory=list)
    finished: bool = False
    done: bool = False


def _find(ids: Sequence[int], part: Sequence[int], start: int = 0) -> int:
    """Where ``part`` first occurs in ``ids`` at or after ``start`` (-1: nowhere)."""
    n = len(part)
    for i in range(start, len(ids) - n + 1):
        if list(ids[i : i + n]) == list(part):
            return i
    return -1


def _cut(ids: Sequence[int], finished: bool, budget: int) -> tuple[list[int], bool]:
    """``ids`` within ``budget`` tokens: a reply finishes within its budget only when its end-of-turn
    token fits too (as :func:`generate` counts it)."""
    return list(ids[:budget]), finished and len(ids) < budget


def _marker_ids(lm: LoadedModel, text: str) -> list[int]:
    ids: list[int] = lm.tokenizer(text, add_special_tokens=False)["input_ids"]
    if not ids:
        raise ConfigError(f"the thinking marker {text!r} tokenizes to nothing")
    return ids


def _first_pass(lm: LoadedModel, fmt: ThinkingFormat, gen: Generation, answer_budget: int) -> _Row:
    """A reply's row after the thinking pass."""
    ids, opened = list(gen.token_ids), 0
    open_ids, close_ids = _marker_ids(lm, fmt.open), _marker_ids(lm, fmt.close)
    if fmt.start != "open":
        if ids[: len(open_ids)] != open_ids:  # no block: all answer
            answer, finished = _cut(ids, gen.finished, answer_budget)
            return _Row(None, answer=answer, finished=finished, done=finished or len(ids) >= answer_budget)
        opened = len(open_ids)
    at = _find(ids, close_ids, opened)
    if at >= 0:
        answer, finished = _cut(ids[at + len(close_ids) :], gen.finished, answer_budget)
        rest = ids[at + len(close_ids) :]
        row = _Row(ids[opened:at], close_ids, answer, finished)
        row.done = finished or len(rest) >= answer_budget
        return row
    if gen.finished:  # ended its turn while thinking: no answer
        return _Row(ids[opened:], finished=True, done=True)
    forced = _marker_ids(lm, FORCED_CLOSE.format(close=fmt.close))
    return _Row(ids[opened:], forced)


def _text(lm: LoadedModel, fmt: ThinkingFormat, row: _Row) -> str:
    def decode(ids: Sequence[int]) -> str:
        return str(lm.tokenizer.decode(list(ids), skip_special_tokens=True)).strip()

    answer = decode(row.answer)
    if row.thinking is None:
        return answer
    thinking = f"{fmt.open}\n{decode(row.thinking)}\n"
    return f"{thinking}{fmt.close}\n\n{answer}" if row.close else thinking


def generate_thinking(
    lm: LoadedModel,
    prompts: Sequence[str],
    fmt: ThinkingFormat,
    *,
    max_thinking_tokens: int = 512,
    max_new_tokens: int = 64,
    intervention: Attachable | None = None,
    batch_size: int | Literal["auto"] = "auto",
    system_prompt: str | None = None,
    chat: bool = True,
    row_steering: Sequence[RowMaps] | None = None,
    **options: Any,
) -> list[Generation]:
    """Replies of a reasoning model with separate budgets: at most ``max_thinking_tokens`` tokens of
    thinking (the open marker included), then at most ``max_new_tokens`` tokens of answer (the module
    docstring says how a block that outruns its budget is closed). ``options``: the sampling keywords of
    :func:`~neurogate.models.generation.generate_tokens` (``greedy``, ``temperature``, ``top_p``,
    ``seed``, ``progress``)."""
    if isinstance(prompts, str):
        raise ConfigError("generate_thinking takes a sequence of prompts; wrap a single prompt in a list")
    for name, value in (("max_thinking_tokens", max_thinking_tokens), ("max_new_tokens", max_new_tokens)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be a whole number >= 1, got {value!r}")
    prompts = list(prompts)
    if not prompts:
        return []
    seqs = encode(lm, prompts, system_prompt=system_prompt, chat=chat)
    common: dict[str, Any] = {
        "prefix": template_prefix(lm, system_prompt=system_prompt, chat=chat),
        "intervention": intervention,
        "batch_size": batch_size,
        **options,
    }
    first = generate_tokens(
        lm, prompts, seqs, max_new_tokens=max_thinking_tokens, row_steering=row_steering, **common
    )
    rows = [_first_pass(lm, fmt, g, max_new_tokens) for g in first]
    todo = [i for i, r in enumerate(rows) if not r.done]
    if todo:
        left = {i: max_new_tokens - len(rows[i].answer) for i in todo}
        more = generate_tokens(
            lm,
            [prompts[i] for i in todo],
            [_so_far(seqs[i], rows[i], fmt, lm) for i in todo],
            max_new_tokens=max(left.values()),
            row_steering=None if row_steering is None else [row_steering[i] for i in todo],
            **common,
        )
        for i, gen in zip(todo, more, strict=True):
            ids, rows[i].finished = _cut(gen.token_ids, gen.finished, left[i])
            rows[i].answer += ids
    out = []
    for prompt, row in zip(prompts, rows, strict=True):
        ids = (row.thinking or []) + row.close + row.answer
        if row.thinking is not None and fmt.start != "open":
            ids = _marker_ids(lm, fmt.open) + ids
        out.append(Generation(prompt, _text(lm, fmt, row), ids, row.finished))
    return out


def _so_far(seq: Sequence[int], row: _Row, fmt: ThinkingFormat, lm: LoadedModel) -> list[int]:
    """A continuing reply's prompt and everything generated so far (with its close), as token ids."""
    opened = _marker_ids(lm, fmt.open) if row.thinking is not None and fmt.start != "open" else []
    return [*seq, *opened, *(row.thinking or []), *row.close, *row.answer]
